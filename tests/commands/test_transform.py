"""`detector transform`: a folder, a COCO channel and a JSON Lines file scored offline, and the resume."""

import base64
import json
import shutil
import subprocess

import pytest

from helpers import detector_command, detector_env

pytestmark = pytest.mark.slow  # uses the tiny model trained once per session


def transform(base_dir, cwd, *args):
    result = subprocess.run(detector_command("transform", *args, "--progress", "none"), env=detector_env(base_dir, DETECTOR_SCORE_THRESHOLD="0"),
                            cwd=cwd, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stderr


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_is_scored_in_batches_and_a_rerun_skips_what_is_done(tiny_model, tmp_path):
    images = sorted((tiny_model / "input" / "data" / "testing" / "images").iterdir())[:5]
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for image in images[:3]:
        shutil.copy(image, folder / image.name)
    for image in images[3:]:
        shutil.copy(image, folder / "more" / image.name)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("not an image, not scored")

    code, stderr = transform(tiny_model, tmp_path, "photos", "--output", "out/predictions.jsonl", "--batch-size", "2")
    assert code == 1, stderr
    assert "ERROR: broken.png: image is not an image Pillow can decode (9 bytes)" in stderr
    assert "5 images scored" in stderr and "1 failed; 6 in photos" in stderr
    lines = read_lines(tmp_path / "out" / "predictions.jsonl")
    expected = sorted([i.name for i in images[:3]] + [f"more/{i.name}" for i in images[3:]])
    assert [line["file"] for line in lines] == expected
    assert all(line["image"] == {"width": 128, "height": 128} and line["detections"] for line in lines)

    # A run killed while writing leaves half a line: the rerun drops it, scores that image again and keeps the rest.
    output = tmp_path / "out" / "predictions.jsonl"
    text = output.read_text()
    output.write_text(text[: text.rfind("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:20])
    (folder / "broken.png").unlink()
    code, stderr = transform(tiny_model, tmp_path, "photos", "--output", "out/predictions.jsonl")
    assert code == 0, stderr
    assert "1 images scored" in stderr and "4 already in out/predictions.jsonl, 0 failed" in stderr
    assert read_lines(output) == lines


def test_a_coco_channel_writes_coco_results_and_a_json_lines_file_is_answered_by_line(tiny_model, tmp_path):
    channel = tiny_model / "input" / "data" / "testing"
    code, stderr = transform(tiny_model, tmp_path, str(channel), "--output", "testing.jsonl", "--coco-results")
    assert code == 0, stderr
    dataset = json.loads((channel / "annotations.json").read_text())
    lines = read_lines(tmp_path / "testing.jsonl")
    assert [(line["file"], line["image_id"]) for line in lines] == [(i["file_name"], i["id"]) for i in dataset["images"]]

    from pycocotools.coco import COCO

    ground_truth = COCO(str(channel / "annotations.json"))
    results = ground_truth.loadRes(str(tmp_path / "testing.coco.json"))  # COCO's own reader accepts the file
    assert len(results.getAnnIds()) == sum(len(line["detections"]) for line in lines) > 0

    image = (channel / dataset["images"][0]["file_name"]).read_bytes()
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join([json.dumps({"image": base64.b64encode(image).decode()}), '{"image": "%%"}', ""]))
    code, stderr = transform(tiny_model, tmp_path, "records.jsonl", "--output", "records.out.jsonl")
    assert code == 1 and "ERROR: line 2: line 2: not valid base64" not in stderr and "ERROR: line 2: not valid base64" in stderr
    [answer] = read_lines(tmp_path / "records.out.jsonl")
    assert answer["file"] == "line 1" and answer["detections"] == lines[0]["detections"]


def test_a_folder_as_output_gets_predictions_jsonl_and_a_rerun_resumes_there(tiny_model_dir, tmp_path):
    """As Batch Transform names its output (a prefix): a folder, new (a final /) or existing, holds predictions.jsonl."""
    channel = tiny_model_dir.parent / "input" / "data" / "testing"
    model = ["--model-dir", str(tiny_model_dir)]
    code, stderr = transform(tmp_path, tmp_path, str(channel), *model, "--output", "out/", "--coco-results")
    assert code == 0, stderr
    output = tmp_path / "out" / "predictions.jsonl"
    lines = read_lines(output)
    assert len(lines) == 8 and all("image_id" in line for line in lines)
    assert "8 images scored" in stderr and "0 already in out/predictions.jsonl" in stderr
    assert (tmp_path / "out" / "predictions.coco.json").is_file() and "in out/predictions.coco.json" in stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predictions.coco.json", "predictions.jsonl"]

    # Killed after three images and half of the fourth: the rerun into the existing folder scores the rest.
    text = output.read_text().splitlines(keepends=True)
    output.write_text("".join(text[:3]) + text[3][:20])
    code, stderr = transform(tmp_path, tmp_path, str(channel), *model, "--output", "out")
    assert code == 0, stderr
    assert "5 images scored" in stderr and "3 already in out/predictions.jsonl, 0 failed" in stderr
    assert read_lines(output) == lines


@pytest.mark.parametrize(
    "args, message",
    [
        (["nowhere", "--output", "o.jsonl"], "nowhere: no such file or folder"),
        (["a.txt", "--output", "o.jsonl"], "a.txt: expected a folder of images, a COCO channel or a JSON Lines file"),
        (["empty", "--output", "o.jsonl"], "empty: no image files"),
        (["empty", "--output", "o.jsonl", "--batch-size", "0"], "--batch-size 0: expected at least 1"),
    ],
)
def test_bad_input_is_named(tmp_path, monkeypatch, capsys, args, message):
    """In-process, through the command's error boundary (no model is loaded before the input is checked)."""
    from detector.cli import main

    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    code = main(["transform", *args, "--progress", "none"])
    stderr = capsys.readouterr().err
    assert code in (1, 2) and message in stderr and "Traceback" not in stderr
