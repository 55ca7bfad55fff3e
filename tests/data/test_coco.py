import json
import re
from pathlib import Path

import pytest

from detector.data.coco import find_annotation_file, has_masks, has_rle_masks, load_coco, require_masks
from detector.errors import InputDataError
from detector.data.synthetic import generate


@pytest.fixture
def channel(tmp_path) -> Path:
    generate(tmp_path, num_images=3, image_size=64, seed=1)
    return tmp_path


def edit(channel: Path, change) -> Path:
    path = channel / "annotations.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_synthetic_channel_is_valid_with_non_contiguous_ids(channel):
    dataset = load_coco(find_annotation_file(channel, "training"))
    assert [c.id for c in dataset.categories] == [3, 7, 12]
    assert len(dataset.images) == 3 and dataset.annotations


def test_synthetic_data_is_deterministic(tmp_path):
    a = generate(tmp_path / "a", num_images=2, image_size=64, seed=5)
    b = generate(tmp_path / "b", num_images=2, image_size=64, seed=5)
    assert a.read_text() == b.read_text()
    assert (a.parent / "images/00001.png").read_bytes() == (b.parent / "images/00001.png").read_bytes()


def test_unreadable_json(channel):
    (channel / "annotations.json").write_text('{"images": [')
    with pytest.raises(InputDataError, match=r"annotations.json: not valid JSON \(.* line 1"):
        load_coco(channel / "annotations.json")


def test_missing_image_files(channel):
    (channel / "images/00001.png").unlink()
    with pytest.raises(InputDataError, match=r"1 of 3 image files are missing .*images/00001.png"):
        load_coco(channel / "annotations.json")


def test_box_outside_the_image(channel):
    def move(data):
        data["annotations"][0]["bbox"] = [50, 50, 30, 30]

    with pytest.raises(InputDataError, match=r"annotations\[0\] \(id 1\) has box \[50, 50, 30, 30\] outside its image .*64x64"):
        load_coco(edit(channel, move))


@pytest.mark.parametrize("bbox", [[1, 1, 0, 5], [1, 1, 5, -2]])
def test_box_of_non_positive_size(channel, bbox):
    def shrink(data):
        data["annotations"][0]["bbox"] = bbox

    with pytest.raises(InputDataError, match="non-positive size"):
        load_coco(edit(channel, shrink))


def test_undeclared_category(channel):
    def relabel(data):
        data["annotations"][0]["category_id"] = 99

    with pytest.raises(InputDataError, match=r"category_id 99, which is not declared in 'categories' \(declared: \[3, 7, 12\]\)"):
        load_coco(edit(channel, relabel))


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d.update(images=[], annotations=[]), "the dataset is empty"),
        (lambda d: d.update(annotations=[]), "has no annotations"),
        (lambda d: d.update(categories=[]), "'categories' is empty"),
        (lambda d: d.pop("images"), "field 'images' is missing"),
        (lambda d: d["images"][0].update(width="64"), r"needs a positive integer 'width'"),
        (lambda d: d["annotations"][0].update(image_id=999), "image_id 999, which is not in 'images'"),
    ],
)
def test_structural_errors(channel, change, fragment):
    with pytest.raises(InputDataError, match=fragment):
        load_coco(edit(channel, change))


def test_channel_json_discovery(tmp_path):
    with pytest.raises(InputDataError, match="channel 'training': directory .* does not exist"):
        find_annotation_file(tmp_path / "nope", "training")
    tmp_path.joinpath("a.json").write_text("{}")
    tmp_path.joinpath("b.json").write_text("{}")
    with pytest.raises(InputDataError, match="several json files .*name one with the hyperparameter 'training_annotations'"):
        find_annotation_file(tmp_path, "training")
    assert find_annotation_file(tmp_path, "training", "b.json") == tmp_path / "b.json"


def test_a_sample_is_fixed_by_its_seed_and_keeps_its_images_annotations(tmp_path):
    from detector.data.synthetic import generate

    dataset = load_coco(generate(tmp_path / "channel", 20, 64, seed=3))
    sample = dataset.sample(5, seed=1)
    assert len(sample.images) == 5 and sample.images == dataset.sample(5, seed=1).images
    assert sample.images != dataset.sample(5, seed=2).images
    ids = {image["id"] for image in sample.images}
    assert sample.annotations == [a for a in dataset.annotations if a["image_id"] in ids]
    assert dataset.sample(0, seed=1) is dataset and dataset.sample(50, seed=1) is dataset


# -- masks ------------------------------------------------------------------------------------------


@pytest.fixture
def mask_channel(tmp_path) -> Path:
    generate(tmp_path, num_images=4, image_size=64, seed=1, masks=True)
    return tmp_path


def first_of(data, kind):
    """The index of the first annotation whose segmentation is polygons ("polygon") or RLE ("rle")."""
    for i, ann in enumerate(data["annotations"]):
        if isinstance(ann["segmentation"], list if kind == "polygon" else dict):
            return i
    raise AssertionError(f"no {kind} annotation in the synthetic data")


def test_synthetic_masks_use_polygons_compressed_and_uncompressed_rle(tmp_path):
    dataset = load_coco(generate(tmp_path, num_images=12, image_size=64, seed=1, masks=True))
    kinds = {
        "polygon" if isinstance(s, list) else "compressed" if isinstance(s["counts"], str) else "uncompressed"
        for s in (ann["segmentation"] for ann in dataset.annotations)
    }
    assert kinds == {"polygon", "compressed", "uncompressed"}
    assert has_masks(dataset) and has_rle_masks(dataset)
    require_masks(dataset, "a mask model")


def test_masks_do_not_change_the_images_or_boxes(tmp_path):
    plain = json.loads(generate(tmp_path / "a", num_images=3, image_size=64, seed=2).read_text())
    masked = json.loads(generate(tmp_path / "b", num_images=3, image_size=64, seed=2, masks=True).read_text())
    assert [a["bbox"] for a in plain["annotations"]] == [a["bbox"] for a in masked["annotations"]]
    assert (tmp_path / "a/images/00002.png").read_bytes() == (tmp_path / "b/images/00002.png").read_bytes()
    assert not has_masks(load_coco(tmp_path / "a/annotations.json"))


def _set(kind, value):
    def change(data):
        data["annotations"][first_of(data, kind)]["segmentation"] = value

    return change


def _update(kind, **fields):
    def change(data):
        data["annotations"][first_of(data, kind)].update(fields)

    return change


@pytest.mark.parametrize(
    "change, fragment",
    [
        (_set("polygon", []), r"annotations\[\d+\] \(id \d+\) has an empty 'segmentation' \(no polygons\)"),
        (_set("polygon", [[1, 1, 5, 5]]), r"segmentation polygon 0 has 2 points; a polygon needs at least 3"),
        (_set("polygon", [[1, 1, 5, 5, 9]]), r"segmentation polygon 0 must be a flat list of x, y numbers"),
        (_set("polygon", [[1, 1, 5, 5, 9, "9"]]), r"segmentation polygon 0 must be a flat list of x, y numbers"),
        (_set("polygon", [[1, 1, 5, 5, 9, 9], []]), r"segmentation polygon 1 has 0 points"),
        (_set("polygon", [[1, 1, 80, 5, 9, 9]]), r"segmentation polygon 0 has points outside its image images/\d+.png \(64x64\): x in \[1, 80\]"),
        (_set("polygon", [[1, -5, 5, 5, 9, 9]]), r"points outside its image .* y in \[-5, 9\]"),
        (_set("polygon", "1 2 3"), r"'segmentation' must be polygons \(a list of lists\) or RLE"),
        (_set("rle", {"size": [32, 64], "counts": "abc"}), r"RLE segmentation has size \[32, 64\] \(\[height, width\]\) but its image .* is \[64, 64\]"),
        (_set("rle", {"size": [64], "counts": "abc"}), r"RLE segmentation needs 'size' as \[height, width\]"),
        (_set("rle", {"size": [64, 64], "counts": ""}), r"compressed RLE segmentation has empty 'counts'"),
        (_set("rle", {"size": [64, 64], "counts": [10, -1]}), r"'counts' as a string \(compressed\) or a list of non-negative integers"),
        (_set("rle", {"size": [64, 64], "counts": [10, 20]}), r"uncompressed RLE counts add up to 30 pixels, but size \[64, 64\] has 4096"),
        (_update("polygon", iscrowd=1), r"is a crowd region \(iscrowd 1\) with polygons; COCO gives crowd regions as RLE"),
        (_update("rle", iscrowd=2), r"has iscrowd 2; COCO allows 0 \(one object\) or 1 \(a crowd region\)"),
    ],
)
def test_bad_masks_name_the_file_the_annotation_and_the_problem(mask_channel, change, fragment):
    with pytest.raises(InputDataError, match=r"annotations.json: annotations\[\d+\] \(id \d+\)") as error:
        load_coco(edit(mask_channel, change))
    assert re.search(fragment, str(error.value)), str(error.value)


def test_a_crowd_region_as_rle_is_valid(mask_channel):
    dataset = load_coco(edit(mask_channel, _update("rle", iscrowd=1)))
    assert any(ann["iscrowd"] == 1 for ann in dataset.annotations)


def test_a_mask_model_on_a_dataset_without_masks_names_the_annotations(mask_channel):
    def strip(data):
        for ann in data["annotations"][:2]:
            del ann["segmentation"]

    dataset = load_coco(edit(mask_channel, strip))
    with pytest.raises(InputDataError, match=r"annotations.json: a mask model needs a 'segmentation' \(polygons or RLE\) on every "
                       r"annotation; 2 of \d+ have none: annotations\[0\] \(id 1\), annotations\[1\] \(id 2\)"):
        require_masks(dataset, "a mask model")
