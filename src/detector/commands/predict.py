"""``detector predict``: the serving handler on local files, without a server."""

from __future__ import annotations

from pathlib import Path

HELP = "run the serving handler on local files and print what POST /invocations would answer"

CONTENT_TYPES = {".json": "application/json", ".npy": "application/x-npy"}


def add_arguments(parser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="images (any format Pillow reads), .npy arrays or .json request bodies")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model directory (default: /opt/ml/model, relocated by SAGEMAKER_BASE_DIR)")
    parser.add_argument("--custom-attributes", default=None, metavar="ATTRS",
                        help="options as in the X-Amzn-SageMaker-Custom-Attributes header, e.g. score_threshold=0.3,max_detections=20")
    parser.add_argument("--accept", default=None, help="response type: application/json (default) or application/x-coco")
    parser.add_argument("--output", type=Path, default=None, metavar="FILE",
                        help="write the responses to this file (its folder is created) instead of printing them")
    parser.add_argument("--visualize", type=Path, default=None, metavar="DIR",
                        help="also write DIR/<file>.png per image (DIR/<file>_<i>.png for a batch): boxes, labels and masks drawn on it")
    parser.epilog = "Prints one line of JSON per file, in order: the body /invocations answers for that file."


def content_type_of(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/x-image")


def predict_files(handler, model, files: list[Path], custom_attributes: str | None, accept: str | None, visualize: Path | None = None):
    """Yields (file, response body or None, error message or None) in order; with ``visualize``, writes
    each image's overlay PNG into that folder."""
    from ..serving.request_errors import RequestError

    response_type = handler.response_type(accept)
    for path in files:
        try:
            body = path.read_bytes()
        except OSError as e:
            expected = "; expected an image, a .npy array or a .json request body" if path.is_dir() else ""
            yield path, None, f"cannot read the file ({e.strerror}){expected}"
            continue
        try:
            request = handler.decode(body, content_type_of(path), custom_attributes)
            result = handler.predict_fn(request, model)
            response, _ = handler.output_fn(result, response_type)
            if visualize is not None:
                write_overlays(visualize, path, request.decoded.images, result.detections, result.batch)
            yield path, response, None
        except RequestError as e:
            yield path, None, e.message


def write_overlays(folder: Path, path: Path, images, detections, batch: bool) -> None:
    from ..serving.encoding import overlay_image

    folder.mkdir(parents=True, exist_ok=True)
    for index, (image, found) in enumerate(zip(images, detections)):
        name = f"{path.stem}_{index}.png" if batch else f"{path.stem}.png"
        overlay_image(image, found).save(folder / name)


def run(args) -> int:
    import os
    import sys
    from dataclasses import replace

    from ..environment import ServingEnvironment
    from ..errors import DetectorError
    from ..serving.inference_handler import InferenceHandler
    from ..serving.options import parse_custom_attributes
    from ..serving.request_errors import RequestError
    from . import paths

    settings = ServingEnvironment.from_env()
    handler = InferenceHandler(settings)
    # Local files are not HTTP requests: no payload limit.
    handler.limits = replace(handler.limits, max_payload_bytes=None)
    try:
        handler.response_type(args.accept)
        parse_custom_attributes(args.custom_attributes, handler.defaults)
    except RequestError as e:
        raise DetectorError(e.message) from None
    model_dir = paths.input_folder(args.model_dir or settings.model_dir, paths.option_name("--model-dir", args.model_dir), paths.MODEL_DIR)
    if args.output is not None:
        paths.output_file(args.output, "--output", "a file for the responses, one line per FILE")
    elif sys.stdout is None:
        raise DetectorError("standard output is closed; expected it open for the responses, or --output FILE")
    if args.visualize is not None:
        paths.output_folder(args.visualize, "--visualize", "a folder for the overlay PNGs (created when missing)")
    model = handler.model_fn(model_dir)
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    failed = 0
    try:
        for path, response, error in predict_files(handler, model, args.files, args.custom_attributes, args.accept, args.visualize):
            if error is not None:
                failed += 1
                print(f"ERROR: {path}: {error}", file=sys.stderr, flush=True)
            else:
                out.write(response + b"\n")
                out.flush()
    except BrokenPipeError:
        # The reader went away (`detector predict ... | head -1`): stop quietly, as other command-line tools do.
        if not args.output:  # nothing more reaches the pipe, not even the interpreter's flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the status a shell reports for a tool ended by a closed pipe
    finally:
        if args.output:
            out.close()
    return 1 if failed else 0
