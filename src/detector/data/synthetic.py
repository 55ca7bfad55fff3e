"""A deterministic synthetic detection dataset: coloured shapes on noisy backgrounds, in COCO format.

Category ids are deliberately not contiguous (3, 7, 12) so every consumer must keep the dataset's
own ids. Objects are sized relative to the image so they survive resizing.

With ``masks``, every annotation also gets the drawn shape as its ``segmentation``: polygons for the
squares and triangles, RLE for the circles (compressed for even annotation ids, uncompressed for odd
ones), so all three COCO encodings are exercised. The images are the same with or without masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = ({"id": 3, "name": "circle"}, {"id": 7, "name": "square"}, {"id": 12, "name": "triangle"})
ANNOTATION_FILE = "annotations.json"


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], color) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=color)


def _polygon(shape: str, box: tuple[float, float, float, float]) -> list[float]:
    x1, y1, x2, y2 = box
    points = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)] if shape == "square" else [((x1 + x2) / 2, y1), (x2, y2), (x1, y2)]
    return [round(v, 2) for point in points for v in point]


def _rle(shape: str, box, width: int, height: int, compressed: bool) -> dict:
    """The shape as drawn, as COCO RLE (``counts`` run lengths in column-major order, starting with 0s)."""
    canvas = Image.new("L", (width, height), 0)
    _draw(ImageDraw.Draw(canvas), shape, box, 1)
    mask = np.asarray(canvas, dtype=np.uint8)
    if compressed:
        from pycocotools import mask as mask_util

        rle = mask_util.encode(np.asfortranarray(mask))
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [height, width], "counts": counts}


def _overlaps(box, boxes, limit: float = 0.3) -> bool:
    x1, y1, x2, y2 = box
    for a1, b1, a2, b2 in boxes:
        iw, ih = min(x2, a2) - max(x1, a1), min(y2, b2) - max(y1, b1)
        if iw > 0 and ih > 0 and iw * ih > limit * min((x2 - x1) * (y2 - y1), (a2 - a1) * (b2 - b1)):
            return True
    return False


def generate(
    output: Path,
    num_images: int = 64,
    image_size: int = 256,
    seed: int = 0,
    max_objects: int = 4,
    image_format: str = "png",
    masks: bool = False,
) -> Path:
    """Write ``num_images`` images and ``annotations.json`` into ``output``; returns the json path."""
    rng = np.random.default_rng(seed)
    image_dir = output / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        width = height = image_size
        base = rng.integers(40, 200, size=3)
        noise = rng.normal(0, 18, size=(height, width, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        boxes: list[tuple[float, float, float, float]] = []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            for _attempt in range(20):
                side = float(rng.uniform(0.15, 0.4) * image_size)
                x1 = float(rng.uniform(0, width - side))
                y1 = float(rng.uniform(0, height - side))
                box = (x1, y1, x1 + side, y1 + side)
                if not _overlaps(box, boxes):
                    break
            else:
                continue
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            color = tuple(int(c) for c in (255 - base + rng.integers(-30, 30, size=3)) % 256)
            _draw(draw, category["name"], box, color)
            boxes.append(box)
            annotation = {
                "id": len(annotations) + 1,
                "image_id": index + 1,
                "category_id": category["id"],
                "bbox": [round(box[0], 2), round(box[1], 2), round(side, 2), round(side, 2)],
                "area": round(side * side, 2),
                "iscrowd": 0,
            }
            if masks:
                if category["name"] == "circle":
                    rle = _rle("circle", box, width, height, compressed=annotation["id"] % 2 == 0)
                    annotation["segmentation"] = rle
                else:
                    annotation["segmentation"] = [_polygon(category["name"], box)]
                annotation["area"] = _mask_area(annotation["segmentation"], height, width)
            annotations.append(annotation)
        file_name = f"images/{index:05d}.{image_format}"
        # PNG without compression: noise barely compresses (197 KB a 256 px image instead of 166), and
        # zlib cost 14 ms to write and 2.2 ms to read each image (5.8 and 0.5 ms stored), which the
        # training loader pays on every step. The pixels are the same.
        image.save(output / file_name, **({"compress_level": 0} if image_format == "png" else {}))
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
    path = output / ANNOTATION_FILE
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(CATEGORIES)}))
    return path


def _mask_area(segmentation, height: int, width: int) -> float:
    from pycocotools import mask as mask_util

    rle = segmentation if isinstance(segmentation, dict) else mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(rle.get("counts"), list):
        rle = mask_util.frPyObjects(rle, height, width)
    return float(mask_util.area(rle))


def generate_channels(
    data_dir: Path, train_images: int, test_images: int, image_size: int, seed: int, masks: bool = False
) -> dict[str, Path]:
    """``training`` and ``testing`` channels under ``data_dir`` (SageMaker's ``input/data``)."""
    return {
        "training": generate(data_dir / "training", train_images, image_size, seed, masks=masks).parent,
        "testing": generate(data_dir / "testing", test_images, image_size, seed + 1_000_003, masks=masks).parent,
    }
