import json
from pathlib import Path

import pytest

from detector.data.coco import find_annotation_file, load_coco
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
