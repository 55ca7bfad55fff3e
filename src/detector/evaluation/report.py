"""The evaluation step's outputs: ``evaluation.json`` (SageMaker model-quality metrics shape) and a PNG.

``evaluation.json``::

    {"metrics": {"testing_ap": {"value": 0.62}, "testing_ap50": {...}, ...},   fractions in [0, 1]
     "per_class_ap": [{"category_id": 3, "name": "circle", "ap": 0.7}, ...],   null: no test boxes of that class
     "num_images": 64, "num_detections": 410}

A mask model's document also has ``testing_mask_ap`` (``_ap50``, ``_ap75``, ...) in ``metrics`` and
``per_class_mask_ap`` next to ``per_class_ap``.

The pipeline's gate reads ``metrics.testing_ap.value`` (or the metric its ``GateMetric`` parameter
names, such as ``testing_mask_ap``); buckets without ground truth (for example no large objects) are
left out of ``metrics`` rather than reported as NaN or -1.
"""

from __future__ import annotations

from pathlib import Path

from .metrics import SUMMARY_NAMES, CocoMetrics
from ..model_dir import LabelMap, write_json_atomic


def _per_class(metrics: CocoMetrics, labels: LabelMap) -> list[dict]:
    return [
        {
            "category_id": category.id,
            "name": category.name,
            "ap": None if metrics.per_class_ap.get(category.id) is None else round(metrics.per_class_ap[category.id], 6),
        }
        for category in labels.categories
    ]


def evaluation_document(
    metrics: CocoMetrics, labels: LabelMap, prefix: str = "testing", mask_metrics: CocoMetrics | None = None
) -> dict:
    summary = {f"{prefix}_{name}": value for name, value in metrics.summary().items() if value is not None}
    if mask_metrics is not None:
        summary.update({f"{prefix}_mask_{name}": value for name, value in mask_metrics.summary().items() if value is not None})
    document = {
        "metrics": {name: {"value": round(value, 6)} for name, value in summary.items()},
        "per_class_ap": _per_class(metrics, labels),
        "num_images": metrics.num_images,
        "num_detections": metrics.num_detections,
    }
    if mask_metrics is not None:
        document["per_class_mask_ap"] = _per_class(mask_metrics, labels)
    return document


def write_evaluation_json(
    path: Path, metrics: CocoMetrics, labels: LabelMap, mask_metrics: CocoMetrics | None = None, precision: dict | None = None
) -> dict:
    document = evaluation_document(metrics, labels, mask_metrics=mask_metrics)
    if precision is not None:
        document["precision"] = precision
    write_json_atomic(path, document)
    return document


def write_evaluation_plot(path: Path, metrics: CocoMetrics, labels: LabelMap, mask_metrics: CocoMetrics | None = None) -> None:
    """Per-class AP bars (box, and mask for a mask model) and box precision-recall curves at IoU 0.5, one PNG."""
    from matplotlib.figure import Figure  # Agg canvas; no display or pyplot state needed

    figure = Figure(figsize=(12, max(4.0, 0.35 * labels.num_classes + 2)), layout="constrained")
    bars, curves = figure.subplots(1, 2)

    names = [f"{c.name} ({c.id})" for c in labels.categories]
    series = [("box", metrics, "tab:blue")] + ([("mask", mask_metrics, "tab:orange")] if mask_metrics is not None else [])
    height = 0.8 / len(series)
    for k, (kind, these, color) in enumerate(series):
        values = [these.per_class_ap.get(c.id) for c in labels.categories]
        positions = [i - 0.4 + height * (k + 0.5) for i in range(len(names))]
        bars.barh(positions, [v or 0.0 for v in values], height=height, label=f"{kind} AP",
                  color=[color if v is not None else "lightgrey" for v in values])
        for y, value in zip(positions, values):
            bars.text(min(value or 0.0, 0.85) + 0.01, y, "no test boxes" if value is None else f"{value:.3f}", va="center")
    if mask_metrics is not None:
        bars.legend(loc="lower right")
    positions = range(len(names))
    bars.set_yticks(list(positions), names)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("AP (IoU 0.50:0.95)")
    bars.set_title("Per-class AP")

    for category in labels.categories:
        curve = metrics.pr_curves.get(category.id)
        if curve is not None:
            recall, precision = curve
            curves.plot(recall, precision, label=f"{category.name} ({category.id})")
    curves.set_xlim(0, 1)
    curves.set_ylim(0, 1.02)
    curves.set_xlabel("recall")
    curves.set_ylabel("precision")
    curves.set_title("Precision-recall at IoU 0.50")
    if metrics.pr_curves:
        curves.legend(loc="lower left")
    else:
        curves.text(0.5, 0.5, "no detections", ha="center", va="center")
    title = " ".join(f"{name.upper()} {value:.3f}" for name, value in metrics.summary().items() if name in SUMMARY_NAMES[:3])
    if mask_metrics is not None:
        title += "   MASK " + " ".join(
            f"{name.upper()} {value:.3f}" for name, value in mask_metrics.summary().items() if name in SUMMARY_NAMES[:3]
        )
    figure.suptitle(title + f"  on {metrics.num_images} images, {metrics.num_detections} detections")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
