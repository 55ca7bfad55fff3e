"""`detector predict`: the serving handler on local files."""

import json
import subprocess

import pytest

from helpers import detector_command, detector_env
from detector.data.synthetic import CATEGORIES

pytestmark = pytest.mark.slow  # uses the tiny model trained once per session


def predict(base_dir, *args):
    result = subprocess.run(detector_command("predict", *args), env=detector_env(base_dir), capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def images(tiny_model):
    return sorted((tiny_model / "input" / "data" / "testing" / "images").iterdir())[:2]


def test_prints_one_response_per_file_in_order(tiny_model, images, tmp_path):
    request = tmp_path / "request.json"
    import base64

    request.write_text(json.dumps({"instances": [{"image": base64.b64encode(images[0].read_bytes()).decode()}]}))
    code, stdout, stderr = predict(tiny_model, str(images[0]), str(images[1]), str(request),
                                   "--custom-attributes", "score_threshold=0,max_detections=5")
    assert code == 0, stderr
    single, other, batch = [json.loads(line) for line in stdout.splitlines()]
    assert single["image"] == {"width": 128, "height": 128}
    assert 0 < len(single["detections"]) <= 5
    names = {c["id"]: c["name"] for c in CATEGORIES}
    assert all(names[d["category_id"]] == d["label"] for d in single["detections"] + other["detections"])
    assert batch == {"predictions": [single]}


def test_saves_coco_results(tiny_model, images, tmp_path):
    output = tmp_path / "results.json"
    code, stdout, stderr = predict(tiny_model, str(images[0]), "--accept", "application/x-coco", "--output", str(output),
                                   "--custom-attributes", "score_threshold=0")
    assert code == 0, stderr
    assert stdout == ""
    results = json.loads(output.read_text())
    assert results and all(r["image_id"] == 0 and len(r["bbox"]) == 4 for r in results)


def test_bad_files_are_reported_and_the_rest_still_predicted(tiny_model, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    code, stdout, stderr = predict(tiny_model, str(broken), str(images[0]), str(tmp_path / "missing.png"))
    assert code == 1
    assert f"ERROR: {broken}: image is not an image Pillow can decode" in stderr
    assert "missing.png: cannot read the file (No such file or directory)" in stderr
    assert len(stdout.splitlines()) == 1 and "Traceback" not in stderr


def test_bad_options_and_model_directory(tiny_model, images, tmp_path):
    code, _, stderr = predict(tiny_model, str(images[0]), "--custom-attributes", "colour=red")
    assert code == 1 and "unknown attribute 'colour'" in stderr
    code, _, stderr = predict(tiny_model, str(images[0]), "--accept", "text/csv")
    assert code == 1 and "accept type 'text/csv' is not supported" in stderr
    code, _, stderr = predict(tiny_model, str(images[0]), "--model-dir", str(tmp_path))
    assert code == 1 and "is missing model_final.pth, config.yaml, labels.json" in stderr and "Traceback" not in stderr


def test_visualize_writes_overlays_with_boxes_and_masks(tiny_mask_model, tmp_path):
    import numpy as np
    from PIL import Image

    base, _ = tiny_mask_model
    image = sorted((base / "input" / "data" / "testing" / "images").iterdir())[0]
    code, stdout, stderr = predict(base, str(image), "--custom-attributes", "score_threshold=0,max_detections=3,masks=polygon",
                                   "--visualize", str(tmp_path / "overlays"))
    assert code == 0, stderr
    detections = json.loads(stdout)["detections"]
    assert len(detections) == 3 and all(isinstance(d["segmentation"], list) for d in detections)
    [written] = sorted((tmp_path / "overlays").iterdir())
    assert written.name == image.stem + ".png"
    with Image.open(written) as overlay, Image.open(image) as original:
        assert overlay.format == "PNG" and overlay.size == original.size
        changed = np.any(np.asarray(overlay.convert("RGB"), dtype=int) != np.asarray(original.convert("RGB"), dtype=int), axis=2)
    x1, y1, x2, y2 = (int(round(v)) for v in detections[0]["bbox"])
    assert changed[max(y1, 0), max(x1, 0):x2].any(), "the box outline is drawn"
    assert changed.mean() > 0.02
