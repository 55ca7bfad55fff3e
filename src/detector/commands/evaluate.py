"""``detector evaluate``: the pipeline's evaluation processing step (COCO metrics of a trained model)."""

from __future__ import annotations

from pathlib import Path

HELP = "compute COCO box metrics of a trained model on a COCO test channel; write evaluation.json and a PNG"


def add_arguments(parser) -> None:
    parser.epilog = (
        "Defaults are the processing job's locations under /opt/ml/processing (relocated by SAGEMAKER_BASE_DIR). "
        "On failure the reason goes to /opt/ml/output/message and the exit status is 1."
    )
    parser.add_argument("--model", type=Path, default=None,
                        help="model.tar.gz, a directory holding one, or an extracted model directory (default: processing/model)")
    parser.add_argument("--test", type=Path, default=None, help="COCO test channel directory (default: processing/test)")
    parser.add_argument("--output", type=Path, default=None, help="where evaluation.json and evaluation.png go (default: processing/evaluation)")
    parser.add_argument("--annotations", default=None, help="annotation json in the test channel, when it holds several")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")


def run(args) -> int:
    import logging

    from ..environment import ProcessingEnvironment, base_dir
    from ..failure import report_failure

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    failure_file = base_dir() / "output" / "message"
    try:
        env = ProcessingEnvironment.from_env()
        failure_file = env.failure_file
        failure_file.unlink(missing_ok=True)
        evaluate_model(
            model=args.model or env.model_input,
            test_channel=args.test or env.test_input,
            output_dir=args.output or env.evaluation_output,
            annotation_file=args.annotations,
            device=args.device,
        )
        return 0
    except Exception as error:
        return report_failure(failure_file, error)


def resolve_model_dir(model: Path, scratch: Path) -> Path:
    """The model directory named by ``model``: extracted into ``scratch`` when it is (or holds) an archive."""
    import tarfile

    from ..errors import ModelDirectoryError
    from ..model_dir import WEIGHTS_FILE, extract_model_archive

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


def evaluate_model(model: Path, test_channel: Path, output_dir: Path, annotation_file: str | None = None, device: str | None = None) -> dict:
    """COCO metrics of ``model`` on ``test_channel``, computed exactly as training computes testing_ap."""
    import logging
    import tempfile

    from ..data.coco import find_annotation_file, load_coco, require_categories_within
    from ..data.loaders import build_test_loader, to_detectron2_dicts
    from ..evaluation.metrics import coco_box_metrics, predict_dataset, print_metric_lines
    from ..evaluation.report import write_evaluation_json, write_evaluation_plot
    from ..pipeline_spec import EVALUATION_FILE, EVALUATION_PLOT
    from ..predictor import Predictor

    logger = logging.getLogger("detector.evaluate")
    dataset = load_coco(find_annotation_file(test_channel, "test", annotation_file))
    with tempfile.TemporaryDirectory(prefix="model-") as scratch:
        model_dir = resolve_model_dir(model, Path(scratch))
        predictor = Predictor.from_model_dir(model_dir, device)
        labels = predictor.labels
        require_categories_within(dataset, labels.dataset_ids, "the model's", model_dir / "labels.json")
        logger.info("Evaluating %s on %d images of %s", model, len(dataset.images), dataset.json_path)
        records = to_detectron2_dicts(dataset, labels)
        detections = predict_dataset(predictor.model, build_test_loader(predictor.cfg, records), labels)
    metrics = coco_box_metrics(dataset, detections, labels)
    print_metric_lines("testing", metrics)
    document = write_evaluation_json(output_dir / EVALUATION_FILE, metrics, labels)
    write_evaluation_plot(output_dir / EVALUATION_PLOT, metrics, labels)
    logger.info("Wrote %s and %s", output_dir / EVALUATION_FILE, output_dir / EVALUATION_PLOT)
    return document
