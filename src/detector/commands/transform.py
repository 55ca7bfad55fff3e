"""``detector transform``: score a folder, a COCO channel or a JSON Lines file offline with the serving handler."""

from __future__ import annotations

from pathlib import Path

HELP = "score a folder of images, a COCO channel or a JSON Lines file with the endpoint's handler; write JSON Lines"


def add_arguments(parser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="a folder of images (searched recursively), a COCO channel (a folder with one annotation json) "
                             "or a JSON Lines file of {\"image\": \"<base64>\"} lines")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="JSON Lines output, one line per image: a file, or a folder (an existing one, or a path ending "
                             "in /) to write predictions.jsonl into, as Batch Transform names its output by a prefix; "
                             "a rerun skips the images already in it")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model directory (default: /opt/ml/model, relocated by SAGEMAKER_BASE_DIR)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per model call (default 8)")
    parser.add_argument("--annotations", default=None, metavar="NAME",
                        help="the annotation json of a COCO channel, when its folder holds several")
    parser.add_argument("--coco-results", nargs="?", const=True, default=None, metavar="PATH",
                        help="also write COCO's results format for a COCO channel, to a file or into a folder (default: "
                             "next to the JSON Lines output, <output>.coco.json, e.g. predictions.coco.json)")
    parser.add_argument("--custom-attributes", default=None, metavar="ATTRS",
                        help="options as in the X-Amzn-SageMaker-Custom-Attributes header, e.g. score_threshold=0.3")
    parser.add_argument("--progress", choices=("bar", "none"), default="bar", help="a progress bar on stderr (default)")
    parser.epilog = ("Uses the settings of a Batch Transform job (SAGEMAKER_BATCH limits: images up to DETECTOR_MAX_IMAGE_PIXELS, "
                     "150 Mpx by default). Exit status 1 when an image could not be scored; a rerun retries it.")


def run(args) -> int:
    import sys

    from ..environment import ServingEnvironment
    from ..errors import UsageError
    from ..serving.inference_handler import InferenceHandler
    from ..serving.options import parse_custom_attributes
    from ..serving.request_errors import RequestError
    from ..serving.transform_job import (
        OUTPUT_NAME,
        check_output,
        coco_results_name,
        run_transform,
        transform_items,
        write_coco_results,
    )
    from . import paths

    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: expected at least 1")
    settings = ServingEnvironment.from_env(default_mode="batch")
    handler = InferenceHandler(settings)
    try:
        parse_custom_attributes(args.custom_attributes, handler.defaults)
    except RequestError as e:
        raise UsageError(f"--custom-attributes: {e.message}") from None
    source = paths.input_path(args.input, "INPUT", "a folder of images, a COCO channel or a JSON Lines file (.jsonl)")
    items = transform_items(source, args.annotations)
    coco = any(item.image_id is not None for item in items)
    if args.coco_results is not None and not coco:
        raise UsageError(f"--coco-results: {args.input} is not a COCO channel (COCO results need its image ids)")
    model_dir = paths.input_folder(args.model_dir or settings.model_dir, paths.option_name("--model-dir", args.model_dir), paths.MODEL_DIR)
    output = paths.output_file(args.output, "--output", f"a JSON Lines file, or a folder to write {OUTPUT_NAME} into", OUTPUT_NAME)
    coco_results = None
    if args.coco_results is not None:
        name = coco_results_name(output)
        given = output.parent if args.coco_results is True else args.coco_results
        coco_results = paths.output_file(given, "--coco-results", f"a file, or a folder to write {name} into", name)
    check_output(source, output, coco_results)

    bar = None
    if args.progress == "bar":
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", desc="transform", file=sys.stderr, dynamic_ncols=True)

    def failure(key: str, reason: str) -> None:
        message = f"ERROR: {reason}" if reason.startswith(f"{key}:") else f"ERROR: {key}: {reason}"
        (bar.write(message, file=sys.stderr) if bar is not None else print(message, file=sys.stderr, flush=True))

    def progress(count: int) -> None:
        if bar is not None:
            bar.update(count)

    summary = run_transform(handler, lambda: handler.model_fn(model_dir), items, output, batch_size=args.batch_size,
                            custom_attributes=args.custom_attributes, progress=progress, on_failure=failure)
    if bar is not None:
        bar.close()
    rate = summary.scored / summary.seconds if summary.seconds > 0 else 0.0
    print(f"{summary.scored} images scored ({rate:.1f}/s), {summary.skipped} already in {output}, "
          f"{len(summary.failures)} failed; {summary.total} in {args.input}", file=sys.stderr, flush=True)
    if coco_results is not None:
        count = write_coco_results(output, coco_results)
        print(f"COCO results ({count} detections) in {coco_results}", file=sys.stderr, flush=True)
    return 1 if summary.failures else 0
