"""Detections to response bodies.

``application/json`` (default): one image answers
``{"detections": [{"bbox": [x1, y1, x2, y2], "score": s, "category_id": id, "label": name}], "image": {"width": w, "height": h}}``;
a batch answers ``{"predictions": [<that object per image, in request order>]}``.

``application/x-coco``: COCO's results format, a list of
``{"image_id": i, "category_id": id, "bbox": [x, y, width, height], "score": s}`` where ``i`` is the
image's index in the request (0 for a single image).

``application/jsonlines``: one line per image, each the one-image JSON object above (or
``{"error": message}`` for a JSON Lines record that could not be answered), in request order: what a
Batch Transform job with ``AssembleWith: Line`` joins into its output file.
"""

from __future__ import annotations

import json
from typing import Sequence

from ..predictor import Detection
from .request_errors import NotAcceptable

JSON_TYPE = "application/json"
COCO_TYPE = "application/x-coco"
JSONLINES_TYPE = "application/jsonlines"
SUPPORTED_ACCEPT = (JSON_TYPE, COCO_TYPE, JSONLINES_TYPE)


def negotiate(accept: str | None, default: str = JSON_TYPE) -> str:
    """The response type for an ``Accept`` header (media ranges and q-values honoured)."""
    if accept is None or not accept.strip():
        return default
    candidates = []
    for position, item in enumerate(accept.split(",")):
        kind, *params = [part.strip() for part in item.split(";")]
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        candidates.append((-quality, position, kind.lower()))
    for negative_quality, _, kind in sorted(candidates):
        if negative_quality >= 0:
            continue
        if kind in SUPPORTED_ACCEPT:
            return kind
        if kind in ("*/*", "application/*"):
            return default
    raise NotAcceptable(f"accept type {accept!r} is not supported; use one of {', '.join(SUPPORTED_ACCEPT)}")


def image_result(detections: Sequence[Detection], width: int, height: int) -> dict:
    return {
        "detections": [
            {
                "bbox": [round(v, 2) for v in d.bbox],
                "score": round(d.score, 5),
                "category_id": d.category_id,
                "label": d.label,
            }
            for d in detections
        ],
        "image": {"width": width, "height": height},
    }


def coco_results(results: Sequence[Sequence[Detection]]) -> list[dict]:
    return [
        {
            "image_id": index,
            "category_id": d.category_id,
            "bbox": [round(d.bbox[0], 2), round(d.bbox[1], 2), round(d.bbox[2] - d.bbox[0], 2), round(d.bbox[3] - d.bbox[1], 2)],
            "score": round(d.score, 5),
        }
        for index, detections in enumerate(results)
        for d in detections
    ]


def encode_predictions(
    results: Sequence[Sequence[Detection]], sizes: Sequence[tuple[int, int]], batch: bool, response_type: str
) -> bytes:
    """``results[i]`` are the detections of the image of ``sizes[i]`` = (width, height)."""
    if response_type == COCO_TYPE:
        document: object = coco_results(results)
    elif response_type == JSONLINES_TYPE:
        return b"".join(encode_predictions([d], [size], False, JSON_TYPE) + b"\n" for d, size in zip(results, sizes))
    else:
        per_image = [image_result(d, w, h) for d, (w, h) in zip(results, sizes)]
        document = {"predictions": per_image} if batch else per_image[0]
    return json.dumps(document, separators=(",", ":")).encode()


def encode_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def encode_json_lines(answers: Sequence[tuple[Sequence[Detection], tuple[int, int]] | str]) -> bytes:
    """One line per record, in order: its one-image JSON answer, or ``{"error": message}`` for a string."""
    return b"".join(
        (encode_error(answer) if isinstance(answer, str) else encode_predictions([answer[0]], [answer[1]], False, JSON_TYPE)) + b"\n"
        for answer in answers
    )
