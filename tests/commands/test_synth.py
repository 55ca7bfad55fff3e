"""`detector synth`: synthetic COCO channels, with masks on request."""

import json

from detector.cli import main
from detector.data.coco import has_masks, load_coco


def test_synth_masks_writes_valid_segmentations(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "data"), "--images", "6", "--test-images", "2", "--size", "64", "--masks"]) == 0
    printed = capsys.readouterr().out
    assert "training: " in printed and "testing: " in printed
    for channel in ("training", "testing"):
        dataset = load_coco(tmp_path / "data" / channel / "annotations.json")
        assert all("segmentation" in ann for ann in dataset.annotations) and has_masks(dataset)


def test_synth_without_masks_has_none(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "one"), "--images", "2", "--size", "64"]) == 0
    data = json.loads((tmp_path / "one" / "annotations.json").read_text())
    assert data["annotations"] and all("segmentation" not in ann for ann in data["annotations"])
