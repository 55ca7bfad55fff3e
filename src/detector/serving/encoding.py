"""Detections to response bodies.

``application/json`` (default): one image answers
``{"detections": [{"bbox": [x1, y1, x2, y2], "score": s, "category_id": id, "label": name}], "image": {"width": w, "height": h}}``;
a batch answers ``{"predictions": [<that object per image, in request order>]}``.

``application/x-coco``: COCO's results format, a list of
``{"image_id": i, "category_id": id, "bbox": [x, y, width, height], "score": s}`` where ``i`` is the
image's index in the request (0 for a single image).

A mask model's detections (in both formats) also carry ``"segmentation"``, chosen by the ``masks``
option: ``rle`` (default) COCO compressed RLE ``{"size": [height, width], "counts": "<string>"}`` over
the original image, which ``pycocotools.mask.decode`` turns back into the HxW array; ``polygon`` the
outer contours as COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` in pixel coordinates, simplified to
within :data:`POLYGON_TOLERANCE_PX` (holes are filled); ``none`` leaves the field out.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ..predictor import Detection
from .request_errors import NotAcceptable

JSON_TYPE = "application/json"
COCO_TYPE = "application/x-coco"
SUPPORTED_ACCEPT = (JSON_TYPE, COCO_TYPE)


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


# Polygon vertices stay within this distance of the traced contour.
POLYGON_TOLERANCE_PX = 1.0


def mask_to_rle(mask: np.ndarray) -> dict:
    """An HxW mask as COCO compressed RLE with text ``counts``."""
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Ramer-Douglas-Peucker on an open polyline (N x 2): the vertices that keep it within ``tolerance``."""
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        start, end = points[first], points[last]
        segment = end - start
        inner = points[first + 1:last] - start
        length = float(np.hypot(*segment))
        if length == 0.0:
            distances = np.hypot(inner[:, 0], inner[:, 1])
        else:
            distances = np.abs(segment[0] * inner[:, 1] - segment[1] * inner[:, 0]) / length
        k = int(np.argmax(distances))
        if distances[k] > tolerance:
            keep[first + 1 + k] = True
            stack += [(first, first + 1 + k), (first + 1 + k, last)]
    return points[keep]


def mask_to_polygons(mask: np.ndarray, tolerance: float = POLYGON_TOLERANCE_PX) -> list[list[float]]:
    """The outer contours of an HxW mask as COCO polygons (pixel edges: pixel (0, 0) spans 0..1),
    traced by contourpy at the 0.5 level and simplified; pieces under 3 vertices are left out."""
    import contourpy

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return []
    top, left = int(rows[0]), int(cols[0])
    # The mask's extent plus a margin of background, so every contour closes.
    crop = np.pad(np.asarray(mask[top:rows[-1] + 1, left:cols[-1] + 1], dtype=np.float32), 1)
    generator = contourpy.contour_generator(z=crop, fill_type=contourpy.FillType.OuterOffset)
    points_list, offsets_list = generator.filled(0.5, 1.5)
    polygons = []
    for points, offsets in zip(points_list, offsets_list):
        outer = points[offsets[0]:offsets[1]]  # then the holes, which COCO polygons cannot express
        if len(outer) > 1 and np.array_equal(outer[0], outer[-1]):
            outer = outer[:-1]
        simplified = _simplify(np.vstack([outer, outer[:1]]), tolerance)[:-1] if len(outer) >= 3 else outer
        if len(simplified) < 3:
            continue
        # contourpy's x, y are column and row indices of pixel centres in the padded crop.
        xy = simplified + np.array([left - 1 + 0.5, top - 1 + 0.5])
        polygons.append([round(float(v), 1) for v in xy.reshape(-1)])
    return polygons


def segmentation(mask: np.ndarray | None, mask_format: str):
    """The ``segmentation`` value of one detection, or None when it gets none."""
    if mask is None or mask_format == "none":
        return None
    return mask_to_polygons(mask) if mask_format == "polygon" else mask_to_rle(mask)


def _with_segmentation(entry: dict, detection: Detection, mask_format: str) -> dict:
    value = segmentation(detection.mask, mask_format)
    if value is not None:
        entry["segmentation"] = value
    return entry


def image_result(detections: Sequence[Detection], width: int, height: int, mask_format: str = "rle") -> dict:
    return {
        "detections": [
            _with_segmentation(
                {
                    "bbox": [round(v, 2) for v in d.bbox],
                    "score": round(d.score, 5),
                    "category_id": d.category_id,
                    "label": d.label,
                },
                d,
                mask_format,
            )
            for d in detections
        ],
        "image": {"width": width, "height": height},
    }


def coco_results(results: Sequence[Sequence[Detection]], mask_format: str = "rle") -> list[dict]:
    return [
        _with_segmentation(
            {
                "image_id": index,
                "category_id": d.category_id,
                "bbox": [round(d.bbox[0], 2), round(d.bbox[1], 2), round(d.bbox[2] - d.bbox[0], 2), round(d.bbox[3] - d.bbox[1], 2)],
                "score": round(d.score, 5),
            },
            d,
            mask_format,
        )
        for index, detections in enumerate(results)
        for d in detections
    ]


def encode_predictions(
    results: Sequence[Sequence[Detection]],
    sizes: Sequence[tuple[int, int]],
    batch: bool,
    response_type: str,
    mask_format: str = "rle",
) -> bytes:
    """``results[i]`` are the detections of the image of ``sizes[i]`` = (width, height); ``mask_format``
    (rle, polygon, none) says how a mask model's masks are written."""
    if response_type == COCO_TYPE:
        document: object = coco_results(results, mask_format)
    else:
        per_image = [image_result(d, w, h, mask_format) for d, (w, h) in zip(results, sizes)]
        document = {"predictions": per_image} if batch else per_image[0]
    return json.dumps(document, separators=(",", ":")).encode()


def encode_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()
