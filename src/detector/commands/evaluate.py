"""``detector evaluate``: the pipeline's evaluation processing step (COCO metrics of a trained model)."""

from __future__ import annotations

from pathlib import Path

HELP = "compute COCO box metrics of a trained model on a COCO test channel; write evaluation.json and a PNG"

MODEL = "model.tar.gz, a folder holding one, or a model directory (model_final.pth, config.yaml, labels.json)"
TEST = "a COCO channel: a folder with one annotation json at its root (or --annotations) and the images it names"
OUTPUT = "a folder for evaluation.json and evaluation.png (created when missing)"


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
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None,
                        help="arithmetic precision (default: DETECTOR_PRECISION, else auto: bf16 on CPUs with AMX, fp16 on GPUs)")
    parser.add_argument("--champion", type=Path, default=None,
                        help="the champion model (the one in service), scored on the same channel: model.tar.gz, a directory holding one, or a model directory")
    parser.add_argument("--champion-arn", default="none",
                        help="the champion's model package ARN, written into evaluation.json; none: no champion (--champion is ignored)")
    parser.add_argument("--max-regression", type=float, default=0.0,
                        help="how far below the champion's AP the model may be (the bar in evaluation.json's champion section); default 0")


def failure_file():
    from ..environment import ProcessingEnvironment

    return ProcessingEnvironment.from_env().failure_file


def run(args) -> int:
    import logging

    from ..environment import ProcessingEnvironment
    from ..evaluation.evaluator import evaluate_model
    from . import paths

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    env = ProcessingEnvironment.from_env()
    # The champion's input of the processing job, when a champion is named without a path.
    champion = args.champion or (env.processing_dir / "champion" if args.champion_arn != "none" else None)
    if champion is not None and args.champion_arn not in ("", "none"):  # else no champion: the path is not read
        champion = paths.input_path(champion, paths.option_name("--champion", args.champion), f"the champion: {MODEL}")
    test = paths.input_folder(args.test or env.test_input, paths.option_name("--test", args.test), TEST)
    model = paths.input_path(args.model or env.model_input, paths.option_name("--model", args.model), MODEL)
    output = paths.output_folder(args.output or env.evaluation_output, paths.option_name("--output", args.output), OUTPUT)
    evaluate_model(
        model=model,
        test_channel=test,
        output_dir=output,
        annotation_file=args.annotations,
        device=args.device,
        precision=args.precision or env.precision,
        champion=champion,
        champion_arn=args.champion_arn,
        max_regression=args.max_regression,
    )
    return 0
