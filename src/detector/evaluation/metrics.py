"""COCO box and mask metrics with pycocotools, reported as fractions in [0, 1] and never NaN."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass, field

import numpy as np

from ..data.coco import CocoDataset
from ..model_dir import LabelMap

SUMMARY_NAMES = ("ap", "ap50", "ap75", "aps", "apm", "apl")


@dataclass
class CocoMetrics:
    ap: float
    ap50: float
    ap75: float
    aps: float | None
    apm: float | None
    apl: float | None
    per_class_ap: dict[int, float | None]
    num_images: int
    num_detections: int
    # category id -> (recall thresholds, precision at IoU 0.5); for plots
    pr_curves: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)

    def summary(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in SUMMARY_NAMES}


def _fraction(value: float) -> float | None:
    """pycocotools uses -1 for 'no ground truth in this bucket'; NaN never leaves this module."""
    if value is None or not np.isfinite(value) or value < 0:
        return None
    return float(min(max(value, 0.0), 1.0))


def _ground_truth(dataset: CocoDataset):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {
        "images": dataset.images,
        "annotations": [
            {**ann, "area": ann.get("area") or ann["bbox"][2] * ann["bbox"][3], "iscrowd": ann.get("iscrowd", 0)}
            for ann in dataset.annotations
        ],
        "categories": [{"id": c.id, "name": c.name} for c in dataset.categories],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_box_metrics(dataset: CocoDataset, results: list[dict], labels: LabelMap) -> CocoMetrics:
    """Box metrics of ``results`` (COCO results format, dataset category ids) against ``dataset``."""
    return coco_metrics(dataset, results, labels, "bbox")


def coco_mask_metrics(dataset: CocoDataset, results: list[dict], labels: LabelMap) -> CocoMetrics:
    """Mask metrics: ``results`` carry ``segmentation`` (RLE), ``dataset`` has masks on every annotation."""
    return coco_metrics(dataset, results, labels, "segm")


def coco_metrics(dataset: CocoDataset, results: list[dict], labels: LabelMap, iou_type: str) -> CocoMetrics:
    """COCOeval of ``iou_type`` ("bbox" or "segm"). ``results`` are copied: pycocotools edits what it is given."""
    from pycocotools.cocoeval import COCOeval

    if iou_type == "segm":
        # Without a box, pycocotools takes the area and box of a result from its mask.
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    else:
        results = [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    category_ids = labels.dataset_ids
    if not results:
        # Nothing found: AP 0 wherever there was something to find; None (as below) where there was not.
        boxes = [ann for ann in dataset.annotations if not ann.get("iscrowd", 0)]
        areas = [ann.get("area") or ann["bbox"][2] * ann["bbox"][3] for ann in boxes]
        found = {category for category in (ann["category_id"] for ann in boxes)}

        def bucket(low: float, high: float) -> float | None:
            return 0.0 if any(low <= a < high for a in areas) else None

        return CocoMetrics(
            0.0, 0.0, 0.0, bucket(0, 32**2), bucket(32**2, 96**2), bucket(96**2, float("inf")),
            {c: 0.0 if c in found else None for c in category_ids}, len(dataset.images), 0,
        )
    gt = _ground_truth(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [_fraction(v) for v in evaluator.stats[:6]]
    # precision: [iou thresholds, recall thresholds, categories, areas, max dets]
    precision = evaluator.eval["precision"]
    per_class: dict[int, float | None] = {}
    curves: dict[int, tuple[list[float], list[float]]] = {}
    recall_thresholds = [float(r) for r in evaluator.params.recThrs]
    for k, category_id in enumerate(int(c) for c in evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_class[category_id] = _fraction(float(np.mean(p[p > -1]))) if (p > -1).any() else None
        p50 = precision[0, :, k, 0, -1]
        curves[category_id] = (recall_thresholds, [float(max(v, 0.0)) for v in p50])
    return CocoMetrics(
        ap=stats[0] or 0.0,
        ap50=stats[1] or 0.0,
        ap75=stats[2] or 0.0,
        aps=stats[3],
        apm=stats[4],
        apl=stats[5],
        per_class_ap=per_class,
        num_images=len(dataset.images),
        num_detections=len(results),
        pr_curves=curves,
    )


def instances_to_coco_results(image_id: int, instances, labels: LabelMap) -> list[dict]:
    """detectron2 Instances (original image coordinates) as COCO results with dataset category ids;
    a mask model's results also carry ``segmentation`` as compressed RLE."""
    if len(instances) == 0:
        return []
    boxes = instances.pred_boxes.tensor.detach().cpu().float().numpy()
    scores = instances.scores.detach().cpu().float().numpy().tolist()
    classes = instances.pred_classes.detach().cpu().numpy().tolist()
    ids = labels.dataset_ids
    results = [
        {
            "image_id": image_id,
            "category_id": ids[c],
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(s),
        }
        for (x1, y1, x2, y2), s, c in zip(boxes, scores, classes)
    ]
    if instances.has("pred_masks"):
        for result, rle in zip(results, encode_masks(instances.pred_masks)):
            result["segmentation"] = rle
    return results


def encode_masks(masks) -> list[dict]:
    """Boolean masks (N x H x W, a tensor or an array) as COCO compressed RLE with text ``counts``."""
    from pycocotools import mask as mask_util

    if hasattr(masks, "detach"):
        masks = masks.detach().cpu().numpy()
    if len(masks) == 0:
        return []
    encoded = mask_util.encode(np.asfortranarray(np.moveaxis(np.asarray(masks, dtype=np.uint8), 0, -1)))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


class EvaluationInterrupted(Exception):
    """A stop request arrived while the model ran over a dataset; the results are incomplete."""


def predict_dataset(model, loader, labels: LabelMap, should_stop=None, precision=None) -> list[dict]:
    """Run ``model`` over this process's share of a test loader; gathered on rank 0 (others get []).
    ``precision`` (a :class:`detector.precision.Precision`) is the autocast the model runs under.

    ``should_stop`` is asked before each batch; once it answers True the loop ends, every rank
    still meets in the gather, and :class:`EvaluationInterrupted` is raised."""
    import torch
    from detectron2.utils import comm

    was_training = model.training
    model.eval()
    results: list[dict] = []
    interrupted = False
    try:
        with torch.no_grad(), (precision.autocast() if precision is not None else contextlib.nullcontext()):
            for inputs in loader:
                if should_stop is not None and should_stop():
                    interrupted = True
                    break
                outputs = model(inputs)
                for item, output in zip(inputs, outputs):
                    results.extend(instances_to_coco_results(item["image_id"], output["instances"], labels))
    finally:
        model.train(was_training)
    if comm.get_world_size() > 1:
        gathered = comm.gather(results, dst=0)
        results = [r for part in gathered for r in part] if comm.is_main_process() else []
    if interrupted:
        raise EvaluationInterrupted(f"stopped after {len(results)} detections")
    return results


def print_metric_lines(prefix: str, metrics: CocoMetrics, stream=None) -> None:
    """``<prefix>_ap 0.6123`` etc.: the lines the pipeline's metric regexes capture (mask metrics
    with the prefix ``training_mask`` / ``testing_mask``)."""
    stream = stream or sys.stdout
    for name in ("ap", "ap50", "ap75"):
        print(f"{prefix}_{name} {getattr(metrics, name):.6f}", file=stream, flush=True)
