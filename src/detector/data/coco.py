"""COCO-format detection channels: find, validate and describe them.

A channel is a directory holding one COCO json at its root (or a file named by a hyperparameter);
``file_name`` of each image is resolved relative to that json. Validation runs before any training
and reports the file, the record and the field that is wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputDataError
from ..model_dir import Category

# Boxes may exceed the image by rounding; anything further is an error.
BOX_TOLERANCE_PX = 1.0
_MAX_LISTED = 5


@dataclass(frozen=True)
class CocoDataset:
    json_path: Path
    images: list[dict]
    annotations: list[dict]
    categories: list[Category]

    @property
    def image_dir(self) -> Path:
        return self.json_path.parent

    def image_path(self, image: dict) -> Path:
        return self.image_dir / image["file_name"]

    def sample(self, count: int, seed: int) -> "CocoDataset":
        """``count`` images chosen by ``seed`` (the same every run), with their annotations; all when fewer."""
        if count <= 0 or count >= len(self.images):
            return self
        import random

        chosen = sorted(random.Random(seed).sample(range(len(self.images)), count))
        images = [self.images[i] for i in chosen]
        ids = {image["id"] for image in images}
        return CocoDataset(self.json_path, images, [a for a in self.annotations if a["image_id"] in ids], self.categories)

    def annotations_by_image(self) -> dict[int, list[dict]]:
        grouped: dict[int, list[dict]] = {image["id"]: [] for image in self.images}
        for ann in self.annotations:
            grouped[ann["image_id"]].append(ann)
        return grouped


def find_annotation_file(channel_dir: Path, channel: str, file_name: str | None = None) -> Path:
    """The COCO json of a channel: ``file_name`` if given, else the only ``*.json`` at its root."""
    if not channel_dir.is_dir():
        raise InputDataError(f"channel {channel!r}: directory {channel_dir} does not exist")
    if file_name:
        path = channel_dir / file_name
        if not path.is_file():
            raise InputDataError(f"channel {channel!r}: annotation file {path} does not exist")
        return path
    candidates = sorted(p for p in channel_dir.glob("*.json") if p.is_file())
    if not candidates:
        raise InputDataError(f"channel {channel!r}: no COCO annotation json at the root of {channel_dir}")
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise InputDataError(
            f"channel {channel!r}: several json files at the root of {channel_dir} ({names}); "
            f"name one with the hyperparameter '{channel}_annotations'"
        )
    return candidates[0]


def require_categories_within(dataset: CocoDataset, known_ids: list[int], whose: str, source: Path | None = None) -> None:
    """Fail naming the categories of ``dataset`` that ``known_ids`` (a model's or a channel's) lacks."""
    unknown = sorted({c.id for c in dataset.categories} - set(known_ids))
    if unknown:
        origin = f" (from {source})" if source is not None else ""
        raise InputDataError(
            f"{dataset.json_path}: categories {unknown} are not among {whose} categories {sorted(known_ids)}{origin}"
        )


def load_coco(path: Path, check_files: bool = True) -> CocoDataset:
    """Read and validate a COCO detection json, raising InputDataError naming what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputDataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InputDataError(f"{path}: cannot read the annotation file ({e})") from e
    if not isinstance(data, dict):
        raise InputDataError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputDataError(f"{path}: field '{key}' is missing or not a list")

    categories = _validate_categories(path, data["categories"])
    images = _validate_images(path, data["images"])
    annotations = _validate_annotations(path, data["annotations"], images, {c.id for c in categories})
    dataset = CocoDataset(path, list(images.values()), annotations, categories)
    if check_files:
        _check_image_files(dataset)
    return dataset


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _validate_categories(path: Path, raw: list) -> list[Category]:
    if not raw:
        raise InputDataError(f"{path}: 'categories' is empty; declare at least one category")
    categories, seen = [], set()
    for i, cat in enumerate(raw):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise InputDataError(f"{path}: categories[{i}] needs an integer 'id' and a string 'name', got {cat!r}")
        if cat["id"] in seen:
            raise InputDataError(f"{path}: categories[{i}] repeats category id {cat['id']}")
        seen.add(cat["id"])
        categories.append(Category(cat["id"], cat["name"]))
    return sorted(categories, key=lambda c: c.id)


def _validate_images(path: Path, raw: list) -> dict[int, dict]:
    if not raw:
        raise InputDataError(f"{path}: the dataset is empty ('images' has no entries)")
    images: dict[int, dict] = {}
    for i, image in enumerate(raw):
        if not isinstance(image, dict):
            raise InputDataError(f"{path}: images[{i}] is not an object")
        if not _is_int(image.get("id")):
            raise InputDataError(f"{path}: images[{i}] has no integer 'id'")
        if not isinstance(image.get("file_name"), str) or not image["file_name"]:
            raise InputDataError(f"{path}: images[{i}] (id {image['id']}) has no 'file_name'")
        for key in ("width", "height"):
            if not _is_int(image.get(key)) or image[key] <= 0:
                raise InputDataError(
                    f"{path}: images[{i}] ({image['file_name']}) needs a positive integer '{key}', got {image.get(key)!r}"
                )
        if image["id"] in images:
            raise InputDataError(f"{path}: images[{i}] repeats image id {image['id']}")
        images[image["id"]] = image
    return images


def _validate_annotations(path: Path, raw: list, images: dict[int, dict], category_ids: set[int]) -> list[dict]:
    if not raw:
        raise InputDataError(f"{path}: the dataset has no annotations; a detector needs labelled boxes")
    annotations = []
    for i, ann in enumerate(raw):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise InputDataError(f"{where} is not an object")
        where += f" (id {ann.get('id')})"
        image = images.get(ann.get("image_id"))
        if image is None:
            raise InputDataError(f"{where} refers to image_id {ann.get('image_id')!r}, which is not in 'images'")
        if ann.get("category_id") not in category_ids:
            raise InputDataError(
                f"{where} has category_id {ann.get('category_id')!r}, which is not declared in 'categories' "
                f"(declared: {sorted(category_ids)})"
            )
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise InputDataError(f"{where} needs 'bbox' as [x, y, width, height] numbers, got {bbox!r}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            raise InputDataError(f"{where} has a box of non-positive size: width {w}, height {h}")
        t = BOX_TOLERANCE_PX
        if x < -t or y < -t or x + w > image["width"] + t or y + h > image["height"] + t:
            raise InputDataError(
                f"{where} has box {bbox} outside its image {image['file_name']} "
                f"({image['width']}x{image['height']})"
            )
        annotations.append(ann)
    return annotations


def _check_image_files(dataset: CocoDataset) -> None:
    missing = [image["file_name"] for image in dataset.images if not dataset.image_path(image).is_file()]
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED]) + (" ..." if len(missing) > _MAX_LISTED else "")
        raise InputDataError(
            f"{dataset.json_path}: {len(missing)} of {len(dataset.images)} image files are missing "
            f"(resolved relative to {dataset.image_dir}): {listed}"
        )
