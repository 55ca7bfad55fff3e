"""What `detector transform` reads and resumes from, without a model."""

import json

import pytest

import sample_images as samples
from detector.data.synthetic import generate_channels
from detector.errors import DetectorError, InputDataError
from detector.serving.transform_job import answered_keys, transform_items, write_coco_results


def test_a_folder_lists_its_images_below_it_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.PNG").write_bytes(samples.png())
    (tmp_path / "1.jpg").write_bytes(samples.jpeg())
    (tmp_path / "readme.txt").write_text("no")
    assert [(i.key, i.path.name, i.image_id) for i in transform_items(tmp_path)] == [("1.jpg", "1.jpg", None), ("b/2.PNG", "2.PNG", None)]


def test_a_coco_channel_lists_its_images_with_their_ids(tmp_path):
    generate_channels(tmp_path, train_images=1, test_images=3, image_size=32, seed=0)
    testing = json.loads((tmp_path / "testing" / "annotations.json").read_text())
    items = transform_items(tmp_path / "testing")
    assert [(i.key, i.image_id) for i in items] == [(image["file_name"], image["id"]) for image in testing["images"]]
    assert all(i.path.is_file() for i in items)


def test_a_json_lines_file_lists_its_records_by_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"image": "aGk="}\n\n[1]\n')
    items = transform_items(path)
    assert [i.key for i in items] == ["line 1", "line 3"]
    assert items[1].record.error == 'line 3: expected {"image": "<base64>"}'


def test_answered_keys_skip_errors_and_drop_a_cut_off_last_line(tmp_path):
    output = tmp_path / "out.jsonl"
    assert answered_keys(output) == set()
    output.write_text('{"file": "a.png", "detections": []}\n{"file": "b.png", "error": "x"}\n{"file": "c.pn')
    assert answered_keys(output) == {"a.png"}
    assert output.read_text().endswith('"error": "x"}\n')
    output.write_text("not json\n")
    with pytest.raises(DetectorError, match="out.jsonl: line 1 is not JSON"):
        answered_keys(output)


def test_coco_results_from_every_answered_line(tmp_path):
    output = tmp_path / "out.jsonl"
    line = {"file": "a.png", "image_id": 7, "detections": [{"bbox": [1, 2, 11, 22], "score": 0.5, "category_id": 3, "label": "x"}],
            "image": {"width": 30, "height": 30}}
    output.write_text(json.dumps(line) + "\n" + json.dumps({**line, "file": "b.png", "image_id": 9, "detections": []}) + "\n")
    assert write_coco_results(output, tmp_path / "r.json") == 1
    assert json.loads((tmp_path / "r.json").read_text()) == [{"image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20], "score": 0.5}]


@pytest.mark.parametrize("name", ["nothing-here", "file.txt"])
def test_unusable_inputs_are_named(tmp_path, name):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputDataError, match=name):
        transform_items(tmp_path / name)
