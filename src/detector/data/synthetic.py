"""A deterministic synthetic detection dataset: coloured shapes on noisy backgrounds, in COCO format.

Category ids are deliberately not contiguous (3, 7, 12) so every consumer must keep the dataset's
own ids. Objects are sized relative to the image so they survive resizing.
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
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category["id"],
                    "bbox": [round(box[0], 2), round(box[1], 2), round(side, 2), round(side, 2)],
                    "area": round(side * side, 2),
                    "iscrowd": 0,
                }
            )
        file_name = f"images/{index:05d}.{image_format}"
        image.save(output / file_name)
        images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
    path = output / ANNOTATION_FILE
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(CATEGORIES)}))
    return path


def generate_channels(data_dir: Path, train_images: int, test_images: int, image_size: int, seed: int) -> dict[str, Path]:
    """``training`` and ``testing`` channels under ``data_dir`` (SageMaker's ``input/data``)."""
    return {
        "training": generate(data_dir / "training", train_images, image_size, seed).parent,
        "testing": generate(data_dir / "testing", test_images, image_size, seed + 1_000_003).parent,
    }
