"""The evaluation step: COCO metrics of a trained model on a test channel, computed as training computes them."""

from __future__ import annotations

import logging
import tarfile
import tempfile
from pathlib import Path

from ..data.coco import find_annotation_file, load_coco, require_categories_within, require_masks
from ..data.loaders import build_test_loader, to_detectron2_dicts
from ..errors import ModelDirectoryError
from ..model_dir import WEIGHTS_FILE, extract_model_archive
from ..pipeline_spec import EVALUATION_FILE, EVALUATION_PLOT
from ..predictor import Predictor
from .metrics import coco_box_metrics, coco_mask_metrics, predict_dataset, print_metric_lines
from .report import write_evaluation_json, write_evaluation_plot

logger = logging.getLogger("detector.evaluate")


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


def evaluate_model(
    model: Path,
    test_channel: Path,
    output_dir: Path,
    annotation_file: str | None = None,
    device: str | None = None,
    precision: str = "auto",
) -> dict:
    """COCO metrics of ``model`` on ``test_channel``; writes ``evaluation.json`` and its plot into ``output_dir``."""
    dataset = load_coco(find_annotation_file(test_channel, "test", annotation_file))
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
    metrics = coco_box_metrics(dataset, detections, labels)
    print_metric_lines("testing", metrics)
    mask_metrics = None
    if masks:
        mask_metrics = coco_mask_metrics(dataset, detections, labels)
        print_metric_lines("testing_mask", mask_metrics)
    document = write_evaluation_json(
        output_dir / EVALUATION_FILE, metrics, labels, mask_metrics, precision=predictor.precision.as_json()
    )
    write_evaluation_plot(output_dir / EVALUATION_PLOT, metrics, labels, mask_metrics)
    logger.info("Wrote %s and %s", output_dir / EVALUATION_FILE, output_dir / EVALUATION_PLOT)
    return document
