"""The evaluation step: COCO metrics of a trained model on a test channel, computed as training computes them."""

from __future__ import annotations

import logging
import tarfile
import tempfile
from pathlib import Path

from ..data.coco import find_annotation_file, load_coco, require_categories_within, require_masks
from ..data.loaders import build_test_loader, to_detectron2_dicts
from ..errors import DetectorError, ModelDirectoryError
from ..model_dir import WEIGHTS_FILE, extract_model_archive, write_json_atomic
from ..pipeline_spec import CHAMPION, CHAMPION_PREFIX, EVALUATION_FILE, EVALUATION_PLOT, NO_CHAMPION, champion_bar
from ..predictor import Predictor
from .metrics import coco_box_metrics, coco_mask_metrics, predict_dataset, print_metric_lines
from .report import evaluation_document, write_evaluation_plot

logger = logging.getLogger("detector.evaluate")


class EvaluationError(DetectorError):
    """The evaluation step's options do not fit together."""


def resolve_model_dir(model: Path, scratch: Path) -> Path:
    """The model directory named by ``model``: extracted into ``scratch`` when it is (or holds) an archive."""
    if model.is_file():
        if not tarfile.is_tarfile(model):
            raise ModelDirectoryError(f"{model}: expected a model.tar.gz archive or a model directory")
        return extract_model_archive(model, scratch)
    if not model.is_dir():
        raise ModelDirectoryError(f"model input {model} does not exist; expected a model.tar.gz or a model directory")
    if (model / WEIGHTS_FILE).is_file():
        return model
    archives = sorted(p for p in model.glob("*.tar.gz") if p.is_file())
    if len(archives) > 1:
        raise ModelDirectoryError(f"model input {model} holds several archives ({', '.join(p.name for p in archives)}); expected one")
    if archives:
        return extract_model_archive(archives[0], scratch)
    return model  # read_model_dir names the missing files


def _score(model: Path, dataset, device: str | None, precision: str = "auto"):
    """(box metrics, mask metrics or None, labels, precision) of one model on ``dataset``: the same code
    for the challenger and the champion."""
    with tempfile.TemporaryDirectory(prefix="model-") as scratch:
        model_dir = resolve_model_dir(model, Path(scratch))
        predictor = Predictor.from_model_dir(model_dir, device, precision)
        labels = predictor.labels
        require_categories_within(dataset, labels.dataset_ids, "the model's", model_dir / "labels.json")
        masks = bool(predictor.cfg.MODEL.MASK_ON)
        if masks:
            require_masks(dataset, f"the mask model {model}")
        logger.info(
            "Evaluating %s on %d images of %s; precision %s",
            model, len(dataset.images), dataset.json_path, predictor.precision.describe(),
        )
        records = to_detectron2_dicts(dataset, labels)
        detections = predict_dataset(
            predictor.model, build_test_loader(predictor.cfg, records), labels, precision=predictor.precision
        )
    mask_metrics = coco_mask_metrics(dataset, detections, labels) if masks else None
    return coco_box_metrics(dataset, detections, labels), mask_metrics, labels, predictor.precision


def champion_section(document: dict, champion_document: dict | None, champion_arn: str, max_regression: float) -> dict:
    """``document`` with the champion's metrics (``champion_<name>``) next to the challenger's and the
    ``champion`` section: its ARN and, for every challenger metric, the bar the gate compares it with."""
    metrics = dict(document["metrics"])
    champion_values = {}
    if champion_document is not None:
        for name, entry in champion_document["metrics"].items():
            metrics[CHAMPION_PREFIX + name] = entry
            champion_values[name] = entry["value"]
    bars = {name: champion_bar(champion_values.get(name), max_regression) for name in document["metrics"]}
    section = {
        "arn": champion_arn if champion_document is not None else NO_CHAMPION,
        "max_regression": max_regression,
        "metrics": champion_values,
        "bar": bars,
    }
    return {**document, "metrics": metrics, CHAMPION: section}


def evaluate_model(
    model: Path,
    test_channel: Path,
    output_dir: Path,
    annotation_file: str | None = None,
    device: str | None = None,
    precision: str = "auto",
    champion: Path | None = None,
    champion_arn: str = NO_CHAMPION,
    max_regression: float = 0.0,
) -> dict:
    """COCO metrics of ``model`` on ``test_channel``, and of the ``champion`` model when one is named
    (``champion_arn`` other than ``none``); writes ``evaluation.json`` and the plot into ``output_dir``."""
    if not 0.0 <= max_regression <= 1.0:
        raise EvaluationError(f"--max-regression {max_regression}: expected 0 to 1 (AP is a fraction)")
    with_champion = bool(champion_arn) and champion_arn != NO_CHAMPION
    if with_champion and champion is None:
        raise EvaluationError(f"--champion-arn {champion_arn} names a champion, but no --champion model was given")
    if with_champion and not champion.exists():
        raise EvaluationError(
            f"champion model {champion} does not exist (--champion-arn {champion_arn}); expected a model.tar.gz or a model directory"
        )
    dataset = load_coco(find_annotation_file(test_channel, "test", annotation_file))
    metrics, mask_metrics, labels, used = _score(model, dataset, device, precision)
    print_metric_lines("testing", metrics)
    if mask_metrics is not None:
        print_metric_lines("testing_mask", mask_metrics)
    document = {**evaluation_document(metrics, labels, mask_metrics=mask_metrics), "precision": used.as_json()}
    champion_document = None
    if with_champion:
        champion_metrics, champion_masks, champion_labels, _ = _score(champion, dataset, device, precision)
        print_metric_lines("champion_testing", champion_metrics)
        if champion_masks is not None:
            print_metric_lines("champion_testing_mask", champion_masks)
        champion_document = evaluation_document(champion_metrics, champion_labels, mask_metrics=champion_masks)
        logger.info("Champion %s: testing_ap %.4f", champion_arn, champion_metrics.ap)
    else:
        logger.info("No champion: the gate compares testing_ap with MinTestingAP only")
    document = champion_section(document, champion_document, champion_arn, max_regression)
    write_json_atomic(output_dir / EVALUATION_FILE, document)
    write_evaluation_plot(output_dir / EVALUATION_PLOT, metrics, labels, mask_metrics)
    logger.info("Wrote %s and %s", output_dir / EVALUATION_FILE, output_dir / EVALUATION_PLOT)
    return document
