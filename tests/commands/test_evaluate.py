"""`detector evaluate`: the evaluation processing step, on a trained tiny model and on bad inputs."""

import io
import json
import shutil
import subprocess
import tarfile
from functools import reduce
from pathlib import Path

import pytest
from PIL import Image

from helpers import detector_command, detector_env
from detector.cli import main
from detector.environment import prepare_processing_job
from detector.pipeline_spec import EVALUATION_FILE, EVALUATION_PLOT, TESTING_AP_PATH
from detector.data.synthetic import generate
from detector.precision import resolve


def json_get(document: dict, path: str):
    """What the pipeline's condition reads: JsonGet(property_file, json_path=TESTING_AP_PATH)."""
    return reduce(lambda node, key: node[key], path.split("."), document)


def make_archive(model_dir: Path, archive: Path) -> Path:
    """model.tar.gz as SageMaker writes it: the model directory's files at the archive root."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def processing_layout(base: Path, model_dir: Path, test_channel: Path) -> Path:
    make_archive(model_dir, base / "model.tar.gz")
    prepare_processing_job(base, base / "model.tar.gz", test_channel)
    return base


@pytest.mark.slow
def test_evaluates_the_model_archive_like_training_did(tiny_model, tmp_path):
    base = processing_layout(tmp_path, tiny_model / "model", tiny_model / "input" / "data" / "testing")
    result = subprocess.run(detector_command("evaluate"), env=detector_env(base), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    output = base / "processing" / "evaluation"
    document = json.loads((output / EVALUATION_FILE).read_text())
    training_metrics = json.loads((tiny_model / "model" / "metrics.json").read_text())["testing"]
    testing_ap = json_get(document, TESTING_AP_PATH)
    # Same model, same data, same evaluation path: the AP training printed (6 decimals) and no other.
    assert testing_ap == round(training_metrics["ap"], 6)
    assert f"testing_ap {training_metrics['ap']:.6f}" in result.stdout
    for name, entry in document["metrics"].items():
        assert name.startswith("testing_") and 0.0 <= entry["value"] <= 1.0
    assert [c["category_id"] for c in document["per_class_ap"]] == [3, 7, 12]
    assert document["num_images"] == training_metrics["num_images"]
    assert document["num_detections"] == training_metrics["num_detections"] > 0
    # Both ran at the machine's auto precision, and say which.
    precision = json.loads((tiny_model / "model" / "metrics.json").read_text())["precision"]
    assert document["precision"] == {**precision, "setting": "auto"} and precision["precision"] == resolve("auto", "cpu").name
    with Image.open(output / EVALUATION_PLOT) as plot:
        assert plot.format == "PNG" and plot.width >= 800
    assert not (base / "output" / "message").exists()


@pytest.mark.slow
def test_evaluates_an_extracted_model_directory_with_explicit_paths(tiny_model_dir, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "ml"))
    test_channel = tiny_model / "input" / "data" / "testing"
    rc = main(["evaluate", "--model", str(tiny_model_dir), "--test", str(test_channel), "--output", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 0
    document = json.loads((tmp_path / "out" / EVALUATION_FILE).read_text())
    assert json_get(document, TESTING_AP_PATH) == round(json.loads((tiny_model_dir / "metrics.json").read_text())["testing"]["ap"], 6)


@pytest.mark.slow
def test_test_categories_unknown_to_the_model_are_rejected(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "ml"))
    channel = tmp_path / "test"
    annotations = json.loads(generate(channel, num_images=2, image_size=64).read_text())
    annotations["categories"].append({"id": 99, "name": "hexagon"})
    annotations["annotations"][0]["category_id"] = 99
    (channel / "annotations.json").write_text(json.dumps(annotations))
    assert main(["evaluate", "--model", str(tiny_model_dir), "--test", str(channel)]) == 1
    reason = (tmp_path / "ml" / "output" / "message").read_text()
    assert "categories [99] are not among the model's categories [3, 7, 12]" in reason


@pytest.fixture
def processing(tmp_path, monkeypatch):
    """A processing job's base dir with a valid two-image test channel and no model yet."""
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    generate(tmp_path / "processing" / "test", num_images=2, image_size=64)
    return tmp_path


def failure_reason(base: Path) -> str:
    return (base / "output" / "message").read_text()


def test_missing_model_input_is_reported(processing):
    assert main(["evaluate"]) == 1
    reason = failure_reason(processing)
    assert f"--model (default) {processing / 'processing' / 'model'}: no such file or folder; expected model.tar.gz" in reason
    assert not (processing / "processing" / "evaluation" / EVALUATION_FILE).exists()


def test_missing_test_channel_is_reported(processing):
    shutil.rmtree(processing / "processing" / "test")
    assert main(["evaluate"]) == 1
    assert f"--test (default) {processing / 'processing' / 'test'}: no such folder; expected a COCO channel" in failure_reason(processing)


def test_model_directory_without_weights_is_reported(processing):
    model = processing / "processing" / "model"
    model.mkdir(parents=True)
    (model / "config.yaml").write_text("MODEL: {}\n")
    assert main(["evaluate"]) == 1
    assert "is missing model_final.pth, labels.json" in failure_reason(processing)


def test_file_that_is_not_an_archive_is_reported(processing):
    bogus = processing / "model.tar.gz"
    bogus.write_text("not a tar file")
    assert main(["evaluate", "--model", str(bogus)]) == 1
    assert f"{bogus}: expected a model.tar.gz archive or a model directory" in failure_reason(processing)


def test_archive_escaping_its_directory_is_refused(processing):
    archive = processing / "processing" / "model" / "model.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    assert main(["evaluate"]) == 1
    reason = failure_reason(processing)
    assert "cannot extract the model archive" in reason and "../../escaped.txt" in reason and "outside the destination" in reason


def test_broken_annotations_are_reported(processing):
    (processing / "processing" / "test" / "annotations.json").write_text("{not json")
    (processing / "processing" / "model").mkdir()  # the paths are checked first: give the model's
    assert main(["evaluate"]) == 1
    assert "annotations.json: not valid JSON" in failure_reason(processing)


@pytest.mark.slow
def test_scores_the_champion_with_the_same_code(tiny_model_dir, tiny_model, tmp_path, monkeypatch):
    from detector.pipeline_spec import champion_bar_path, champion_metric_path

    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "ml"))
    champion = make_archive(tiny_model_dir, tmp_path / "champion" / "model.tar.gz")
    arn = "arn:aws:sagemaker:us-east-1:111122223333:model-package/detector/3"
    rc = main(["evaluate", "--model", str(tiny_model_dir), "--test", str(tiny_model / "input" / "data" / "testing"),
               "--output", str(tmp_path / "out"), "--device", "cpu", "--champion", str(champion.parent),
               "--champion-arn", arn, "--max-regression", "0.05"])
    assert rc == 0
    document = json.loads((tmp_path / "out" / EVALUATION_FILE).read_text())
    testing_ap = json_get(document, TESTING_AP_PATH)
    # The same model as champion: the same numbers, so the scoring path is the same.
    assert json_get(document, champion_metric_path()) == testing_ap
    assert json_get(document, champion_bar_path()) == max(0.0, round(testing_ap - 0.05, 6))
    assert document["champion"]["arn"] == arn and document["champion"]["max_regression"] == 0.05
    assert document["champion"]["metrics"]["testing_ap"] == testing_ap


def test_champion_arn_without_a_champion_path_is_refused(tmp_path):
    from detector.evaluation.evaluator import EvaluationError, evaluate_model

    with pytest.raises(EvaluationError, match="names a champion, but no --champion model was given"):
        evaluate_model(tmp_path, tmp_path, tmp_path, champion_arn="local:model-package/detector/1")


def test_no_champion_gives_a_zero_bar_and_no_champion_metrics(tmp_path):
    from detector.evaluation.evaluator import champion_section

    document = {"metrics": {"testing_ap": {"value": 0.4}, "testing_ap50": {"value": 0.7}}, "num_images": 2}
    section = champion_section(document, None, "arn:ignored", 0.1)
    assert section["champion"] == {"arn": "none", "max_regression": 0.1, "metrics": {}, "bar": {"testing_ap": 0.0, "testing_ap50": 0.0}}
    assert set(section["metrics"]) == {"testing_ap", "testing_ap50"}


def test_champion_arn_without_a_champion_model_is_refused(processing, tmp_path):
    arn = "arn:aws:sagemaker:us-east-1:111122223333:model-package/detector/1"
    assert main(["evaluate", "--champion-arn", arn]) == 1  # the champion's processing input is missing
    assert failure_reason(processing).strip() == (
        f"--champion (default) {processing / 'processing' / 'champion'}: no such file or folder; "
        "expected the champion: model.tar.gz, a folder holding one, or a model directory (model_final.pth, config.yaml, labels.json)")
    (processing / "processing" / "model").mkdir()  # the paths are checked first: give the model's
    assert main(["evaluate", "--max-regression", "2"]) == 1
    assert "--max-regression 2.0: expected 0 to 1" in failure_reason(processing)
