"""Score many images offline with the endpoint's own handler: what ``detector transform`` runs.

Inputs (``transform_items``):

- a COCO channel (a folder with one annotation json at its root): its images, in the json's order,
  each with its COCO ``image_id``;
- any other folder: every image file under it (sorted by relative path);
- a JSON Lines file (``.jsonl``): one ``{"image": "<base64>"}`` per line, as a Batch Transform job
  with ``SplitType: Line`` sends them.

The output is JSON Lines (``predictions.jsonl`` when ``detector transform --output`` names a folder,
the way a Batch Transform job names its S3 output: a prefix): one line per image, ``{"file": <key>, ...}``
(plus ``"image_id"`` for a COCO channel) followed by exactly what ``POST /invocations`` answers for that
image. A rerun on the same output file skips every image already answered there and appends the
others, so an interrupted run loses at most the batch it was working on. Images that cannot be scored
are reported with their reason and are retried by the next run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import DetectorError, InputDataError, PathError
from ..predictor import Detection
from .decoding import DecodedImages, JsonLine, decode_json_line
from .encoding import JSONLINES_TYPE, coco_results
from .inference_handler import InferenceHandler, InferenceRequest
from .options import parse_custom_attributes
from .request_errors import RequestError

OUTPUT_NAME = "predictions.jsonl"  # the output file in an --output folder
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
JSONLINES_SUFFIXES = (".jsonl", ".jsonlines")


@dataclass(frozen=True)
class TransformItem:
    key: str  # names the image in the output: its path relative to the input, or "line N"
    path: Path | None = None  # an image file
    record: JsonLine | None = None  # or a JSON Lines record
    image_id: int | None = None  # a COCO channel's id of the image


@dataclass
class TransformSummary:
    total: int = 0
    skipped: int = 0  # answered by an earlier run
    scored: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    seconds: float = 0.0


def is_coco_channel(folder: Path) -> bool:
    return any(p.is_file() for p in folder.glob("*.json"))


def transform_items(source: Path, annotations: str | None = None) -> list[TransformItem]:
    """What ``source`` holds to score, in a stable order; raises ``InputDataError`` naming the problem."""
    from ..data.coco import find_annotation_file, load_coco

    if source.is_file():
        if source.suffix.lower() not in JSONLINES_SUFFIXES:
            raise InputDataError(f"{source}: expected a folder of images, a COCO channel or a JSON Lines file (.jsonl)")
        return [TransformItem(f"line {r.line}", record=r) for r in _json_lines(source)]
    if not source.is_dir():
        raise InputDataError(f"{source}: no such file or folder")
    if annotations or is_coco_channel(source):
        dataset = load_coco(find_annotation_file(source, source.name, annotations), check_files=False)
        return [TransformItem(image["file_name"], path=dataset.image_path(image), image_id=image["id"]) for image in dataset.images]
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputDataError(f"{source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder or below it")
    return [TransformItem(p.relative_to(source).as_posix(), path=p) for p in files]


def _json_lines(path: Path) -> list[JsonLine]:
    from .decoding import parse_json_lines

    try:
        return parse_json_lines(path.read_bytes())
    except RequestError as e:
        raise InputDataError(f"{path}: {e.message}") from None
    except OSError as e:
        raise InputDataError(f"{path}: cannot read the file ({e.strerror})") from None


def coco_results_name(output: Path) -> str:
    """The default name of the COCO results of ``output``: ``predictions.coco.json`` next to ``predictions.jsonl``."""
    return output.with_suffix(".coco.json").name


def check_output(source: Path, output: Path, coco_results: Path | None = None) -> None:
    """Refuse an output that is the input file (the answers would be appended to the records they answer),
    and COCO results at the root of the COCO channel they score (a second json there makes the channel's
    annotation file ambiguous, to this command's rerun as well as to training and evaluation)."""
    if source.is_file() and output.exists() and source.samefile(output):
        raise PathError("--output", output, "is INPUT, the file of records to score", f"another file, or a folder for {OUTPUT_NAME}")
    if coco_results is not None and source.is_dir() and coco_results.parent.resolve() == source.resolve():
        raise PathError("--coco-results", coco_results, "is at the root of the COCO channel INPUT, where a second json makes "
                        "its annotation file ambiguous", "a file or a folder outside the channel (give --coco-results PATH)")


def answered_keys(output: Path) -> set[str]:
    """Keys already answered in ``output``. A last line cut short (a killed run) is dropped from the file."""
    if not output.exists():
        return set()
    try:
        data = output.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            output.write_bytes(data)
    except OSError as e:
        raise DetectorError(
            f"{output}: cannot read the answers of an earlier run ({e.strerror}); expected a JSON Lines file this user can "
            "read and write, or another --output"
        ) from None
    keys = set()
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            document = json.loads(line)
        except ValueError:
            raise DetectorError(f"{output}: line {number} is not JSON; is this an output of detector transform?") from None
        if isinstance(document, dict) and "file" in document and "error" not in document:
            keys.add(str(document["file"]))
    return keys


def _decode(handler: InferenceHandler, item: TransformItem) -> np.ndarray:
    if item.record is not None:
        return decode_json_line(item.record, handler.limits)
    try:
        body = item.path.read_bytes()
    except OSError as e:
        raise RequestError(f"cannot read {item.path} ({e.strerror})") from None
    content_type = "application/x-npy" if item.path.suffix.lower() == ".npy" else "application/x-image"
    return handler.decode(body, content_type).decoded.images[0]


def _batches(handler: InferenceHandler, items: Iterable[TransformItem], batch_size: int, failed: Callable[[TransformItem, str], None]
             ) -> Iterator[list[tuple[TransformItem, np.ndarray]]]:
    """Decoded images a model batch at a time: at most ``batch_size`` images and the request pixel limit."""
    limit = handler.limits.max_request_pixels
    batch: list[tuple[TransformItem, np.ndarray]] = []
    pixels = 0
    for item in items:
        try:
            image = _decode(handler, item)
        except RequestError as e:
            failed(item, e.message)
            continue
        size = image.shape[0] * image.shape[1]
        if batch and (len(batch) >= batch_size or (limit is not None and pixels + size > limit)):
            yield batch
            batch, pixels = [], 0
        batch.append((item, image))
        pixels += size
    if batch:
        yield batch


def run_transform(handler: InferenceHandler, load_model: Callable[[], object], items: list[TransformItem], output: Path, *,
                  batch_size: int = 8,
                  custom_attributes: str | None = None, progress: Callable[[int], None] = lambda n: None,
                  on_failure: Callable[[str, str], None] = lambda key, reason: None) -> TransformSummary:
    """Score the ``items`` not yet answered in ``output``, appending a line per image; ``progress(n)`` counts
    the images skipped, then those of each batch and each failure. ``load_model()`` is called only when
    something is left to score (a rerun of a finished transform loads no model)."""
    started = time.monotonic()
    options = parse_custom_attributes(custom_attributes, handler.defaults)
    summary = TransformSummary(total=len(items))
    done = answered_keys(output)
    todo = [item for item in items if item.key not in done]
    summary.skipped = len(items) - len(todo)
    if summary.skipped:
        progress(summary.skipped)

    def failed(item: TransformItem, reason: str) -> None:
        summary.failures.append((item.key, reason))
        on_failure(item.key, reason)
        progress(1)

    output.parent.mkdir(parents=True, exist_ok=True)
    model = load_model() if todo else None
    with open(output, "ab") as out:
        for batch in _batches(handler, todo, batch_size, failed):
            request = InferenceRequest(DecodedImages([image for _, image in batch], batch=True), options)
            body, _ = handler.output_fn(handler.predict_fn(request, model), JSONLINES_TYPE)
            lines = body.splitlines()
            for (item, _), line in zip(batch, lines, strict=True):
                head = {"file": item.key} if item.image_id is None else {"file": item.key, "image_id": item.image_id}
                out.write(json.dumps({**head, **json.loads(line)}, separators=(",", ":")).encode() + b"\n")
            out.flush()
            summary.scored += len(batch)
            progress(len(batch))
    summary.seconds = time.monotonic() - started
    return summary


def write_coco_results(output: Path, results_file: Path) -> int:
    """COCO's results format (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``) for every
    image of ``output``, this run's and earlier ones'; returns the number of detections."""
    results = []
    for line in output.read_bytes().splitlines():
        document = json.loads(line)
        if "image_id" not in document or "detections" not in document:
            continue
        detections = [Detection(tuple(d["bbox"]), d["score"], d["category_id"], d["label"]) for d in document["detections"]]
        for result in coco_results([detections]):
            results.append({**result, "image_id": document["image_id"]})
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results) + "\n")
    return len(results)
