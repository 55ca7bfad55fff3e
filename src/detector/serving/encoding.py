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

``application/jsonlines``: one line per image, each the one-image JSON object above (or
``{"error": message}`` for a JSON Lines record that could not be answered), in request order: what a
Batch Transform job with ``AssembleWith: Line`` joins into its output file.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

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


# Polygon vertices stay within this distance of the traced contour.
POLYGON_TOLERANCE_PX = 1.0


def _extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), inclusive, of the mask's pixels; None when it has none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def mask_to_rle(mask: np.ndarray) -> dict:
    """An HxW mask as COCO compressed RLE with text ``counts``.

    The run lengths (column-major, starting with background) are counted over the columns the object
    spans only, the rest of the image being one background run on each side, and pycocotools
    compresses them: a detection costs its own extent, not the whole image's."""
    from pycocotools import mask as mask_util

    height, width = mask.shape
    extent = _extent(mask)
    if extent is None:
        counts = [height * width]
    else:
        _, _, left, right = extent
        strip = mask[:, left:right + 1].T.reshape(-1)  # column-major order of those columns
        changes = np.flatnonzero(strip[1:] != strip[:-1]) + 1
        runs = np.diff(np.concatenate(([0], changes, [strip.size])))
        counts = runs.tolist()
        if strip[0]:
            counts.insert(0, 0)
        counts[0] += left * height  # background columns before the object
        trailing = (width - right - 1) * height
        if len(counts) % 2:  # ends with background: it continues into the columns after
            counts[-1] += trailing
        elif trailing:
            counts.append(trailing)
    rle = mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def _simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    """A closed contour (N x 2) with the vertices matplotlib's path simplification keeps within ``tolerance``."""
    from matplotlib.path import Path as PlotPath

    path = PlotPath(np.vstack([points, points[:1]]))
    path.simplify_threshold = tolerance
    cleaned = path.cleaned(simplify=True)
    kept = cleaned.vertices[np.isin(cleaned.codes, (PlotPath.MOVETO, PlotPath.LINETO))]
    if len(kept) > 1 and np.array_equal(kept[0], kept[-1]):
        kept = kept[:-1]
    return kept


def mask_to_polygons(mask: np.ndarray, tolerance: float = POLYGON_TOLERANCE_PX) -> list[list[float]]:
    """The outer contours of an HxW mask as COCO polygons (pixel edges: pixel (0, 0) spans 0..1),
    traced by contourpy at the 0.5 level and simplified by matplotlib; pieces under 3 vertices are left out."""
    import contourpy

    extent = _extent(mask)
    if extent is None:
        return []
    top, bottom, left, right = extent
    # The mask's extent plus a margin of background, so every contour closes.
    crop = np.pad(np.asarray(mask[top:bottom + 1, left:right + 1], dtype=np.float32), 1)
    generator = contourpy.contour_generator(z=crop, fill_type=contourpy.FillType.OuterOffset)
    points_list, offsets_list = generator.filled(0.5, 1.5)
    polygons = []
    for points, offsets in zip(points_list, offsets_list):
        outer = points[offsets[0]:offsets[1]]  # then the holes, which COCO polygons cannot express
        if len(outer) > 1 and np.array_equal(outer[0], outer[-1]):
            outer = outer[:-1]
        simplified = _simplify(outer, tolerance) if len(outer) >= 3 else outer
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
    elif response_type == JSONLINES_TYPE:
        return b"".join(
            encode_predictions([d], [size], False, JSON_TYPE, mask_format) + b"\n" for d, size in zip(results, sizes)
        )
    else:
        per_image = [image_result(d, w, h, mask_format) for d, (w, h) in zip(results, sizes)]
        document = {"predictions": per_image} if batch else per_image[0]
    return json.dumps(document, separators=(",", ":")).encode()


_PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230))


def overlay_image(image: np.ndarray, detections: Sequence[Detection], mask_alpha: float = 0.45):
    """A PIL image of ``image`` (HxWx3 RGB) with each detection's mask tinted, its box drawn and
    ``label score`` written above it; one colour per category."""
    from PIL import Image, ImageDraw

    canvas = image.astype(np.float32)
    for d in detections:
        if d.mask is not None:
            color = np.array(_PALETTE[d.category_id % len(_PALETTE)], dtype=np.float32)
            canvas[d.mask] = canvas[d.mask] * (1 - mask_alpha) + color * mask_alpha
    picture = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for d in detections:
        color = _PALETTE[d.category_id % len(_PALETTE)]
        x1, y1, x2, y2 = d.bbox
        draw.rectangle((x1, y1, x2, y2), outline=color, width=2)
        text = f"{d.label} {d.score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        lift = bottom - top + 2
        draw.rectangle((x1, y1 - lift, x1 + right - left + 2, y1), fill=color)
        draw.text((x1 + 1, y1 - lift), text, fill=(0, 0, 0))
    return picture


def encode_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def encode_json_lines(answers: Sequence[tuple[Sequence[Detection], tuple[int, int]] | str], mask_format: str = "rle") -> bytes:
    """One line per record, in order: its one-image JSON answer, or ``{"error": message}`` for a string."""
    return b"".join(
        (
            encode_error(answer)
            if isinstance(answer, str)
            else encode_predictions([answer[0]], [answer[1]], False, JSON_TYPE, mask_format)
        )
        + b"\n"
        for answer in answers
    )
