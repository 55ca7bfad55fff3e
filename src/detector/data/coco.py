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
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1) or isinstance(iscrowd, bool):
            raise InputDataError(f"{where} has iscrowd {iscrowd!r}; COCO allows 0 (one object) or 1 (a crowd region)")
        if "segmentation" in ann:
            _validate_segmentation(where, ann["segmentation"], image, iscrowd)
        annotations.append(ann)
    return annotations


def _validate_segmentation(where: str, segmentation: object, image: dict, iscrowd: int) -> None:
    """COCO's three mask encodings: polygons (a list of [x1, y1, x2, y2, ...] lists), uncompressed RLE
    (``{"size": [h, w], "counts": [ints]}``) and compressed RLE (``counts`` a string). Crowd regions
    (``iscrowd`` 1) are RLE, as in COCO."""
    width, height = image["width"], image["height"]
    of_image = f"its image {image['file_name']} ({width}x{height})"
    if isinstance(segmentation, list):
        if iscrowd:
            raise InputDataError(f"{where} is a crowd region (iscrowd 1) with polygons; COCO gives crowd regions as RLE")
        if not segmentation:
            raise InputDataError(f"{where} has an empty 'segmentation' (no polygons)")
        t = BOX_TOLERANCE_PX
        for k, polygon in enumerate(segmentation):
            if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon) or len(polygon) % 2:
                raise InputDataError(
                    f"{where}: segmentation polygon {k} must be a flat list of x, y numbers [x1, y1, x2, y2, ...], "
                    f"got {_short(polygon)}"
                )
            if len(polygon) < 6:
                raise InputDataError(
                    f"{where}: segmentation polygon {k} has {len(polygon) // 2} points; a polygon needs at least 3"
                )
            xs, ys = polygon[0::2], polygon[1::2]
            if min(xs) < -t or min(ys) < -t or max(xs) > width + t or max(ys) > height + t:
                raise InputDataError(
                    f"{where}: segmentation polygon {k} has points outside {of_image}: "
                    f"x in [{min(xs):g}, {max(xs):g}], y in [{min(ys):g}, {max(ys):g}]"
                )
        return
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not isinstance(size, list) or len(size) != 2 or not all(_is_int(v) for v in size):
            raise InputDataError(f"{where}: RLE segmentation needs 'size' as [height, width], got {_short(size)}")
        if size != [height, width]:
            raise InputDataError(
                f"{where}: RLE segmentation has size {size} ([height, width]) but {of_image} is [{height}, {width}]"
            )
        if isinstance(counts, str):
            if not counts:
                raise InputDataError(f"{where}: compressed RLE segmentation has empty 'counts'")
            return
        if not isinstance(counts, list) or not all(_is_int(v) and v >= 0 for v in counts):
            raise InputDataError(
                f"{where}: RLE segmentation needs 'counts' as a string (compressed) or a list of non-negative "
                f"integers (uncompressed), got {_short(counts)}"
            )
        if sum(counts) != height * width:
            raise InputDataError(
                f"{where}: uncompressed RLE counts add up to {sum(counts)} pixels, but size {size} has {height * width}"
            )
        return
    raise InputDataError(
        f"{where}: 'segmentation' must be polygons (a list of lists) or RLE ({{'size', 'counts'}}), got {_short(segmentation)}"
    )


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def has_masks(dataset: CocoDataset) -> bool:
    return any("segmentation" in ann for ann in dataset.annotations)


def has_rle_masks(dataset: CocoDataset) -> bool:
    """Whether an object to train on (not a crowd region) has an RLE mask (detectron2 reads those as bitmasks)."""
    return any(isinstance(ann.get("segmentation"), dict) and not ann.get("iscrowd", 0) for ann in dataset.annotations)


def require_masks(dataset: CocoDataset, why: str) -> None:
    """Fail naming the annotations of ``dataset`` that have no ``segmentation`` (a mask model needs them all)."""
    missing = [i for i, ann in enumerate(dataset.annotations) if "segmentation" not in ann]
    if missing:
        listed = ", ".join(f"annotations[{i}] (id {dataset.annotations[i].get('id')})" for i in missing[:_MAX_LISTED])
        more = " ..." if len(missing) > _MAX_LISTED else ""
        raise InputDataError(
            f"{dataset.json_path}: {why} needs a 'segmentation' (polygons or RLE) on every annotation; "
            f"{len(missing)} of {len(dataset.annotations)} have none: {listed}{more}"
        )


def _check_image_files(dataset: CocoDataset) -> None:
    missing = [image["file_name"] for image in dataset.images if not dataset.image_path(image).is_file()]
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED]) + (" ..." if len(missing) > _MAX_LISTED else "")
        raise InputDataError(
            f"{dataset.json_path}: {len(missing)} of {len(dataset.images)} image files are missing "
            f"(resolved relative to {dataset.image_dir}): {listed}"
        )
