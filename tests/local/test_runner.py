"""`detector pipeline --local` end to end: real train, evaluate, registry and serve processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import detector_command, detector_env
from detector import pipeline_spec as spec
from detector.data.synthetic import generate_channels
from detector.local.backends import ProcessBackend
from detector.local.registry import LocalModelRegistry
from detector.local.runner import LocalRun, PipelineFailed, local_parameters
from detector.model_dir import write_model_archive
from detector.pipeline_spec import EVALUATION_FILE

SMALL = ["--param", "MaxIter=12", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("channels")
    generate_channels(root, train_images=16, test_images=6, image_size=128, seed=3)
    return root


def pipeline(root: Path, data: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        detector_command("pipeline", "--local", "--root", str(root), "--data", str(data), *args),
        env=detector_env(), capture_output=True, text=True, timeout=timeout,
    )


def the_execution(root: Path) -> Path:
    executions = sorted((root / "executions").iterdir())
    assert len(executions) == 1
    return executions[0]


@pytest.mark.slow
def test_runs_every_step_and_serves_the_registered_model(tmp_path, data):
    result = pipeline(tmp_path, data, *SMALL, "--param", "MinTestingAP=0", "--param", "TransformInput=testing")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    execution = the_execution(tmp_path)
    assert (execution / "train" / "model" / "model_final.pth").exists()
    assert (execution / "train" / "checkpoints" / "checkpoint_00000012.pth").exists()
    assert (execution / "artifacts" / "model.tar.gz").exists()
    evaluation = json.loads((execution / "evaluate" / "processing" / "evaluation" / "evaluation.json").read_text())
    testing_ap = evaluation["metrics"]["testing_ap"]["value"]
    assert 0.0 <= testing_ap <= 1.0
    assert (execution / "evaluate" / "processing" / "evaluation" / "evaluation.png").exists()

    package = json.loads((tmp_path / "registry" / "detector" / "1" / "package.json").read_text())
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["Metrics"]["testing_ap"]["value"] == testing_ap
    response = json.loads((execution / "deploy" / "response.json").read_text())
    assert set(response) >= {"detections", "image"}
    assert {d["category_id"] for d in response["detections"]} <= {3, 7, 12}

    for step in ("Data", "Train", "Evaluate", "CheckTestingAP", "CheckChampion", "Register", "Deploy"):
        assert re.search(rf"^  {step}\s+succeeded\s+[0-9.]+ s$", result.stdout, re.M), step
    assert "local:model-package/detector/1 (Approved)" in result.stdout
    assert re.search(r"testing_ap\s+[0-9.]+", result.stdout)

    # The optional Transform step scored the testing channel with the registered model.
    assert re.search(r"^  Transform\s+succeeded\s+[0-9.]+ s$", result.stdout, re.M)
    predictions = [json.loads(line) for line in (execution / "transform" / "predictions.jsonl").read_text().splitlines()]
    testing = json.loads((data / "testing" / "annotations.json").read_text())
    assert [(p["file"], p["image_id"]) for p in predictions] == [(i["file_name"], i["id"]) for i in testing["images"]]
    assert isinstance(json.loads((execution / "transform" / "predictions.coco.json").read_text()), list)


@pytest.mark.slow
def test_low_ap_stops_at_the_gate_and_registers_nothing(tmp_path, data):
    result = pipeline(tmp_path, data, *SMALL, "--param", "MinTestingAP=1.0")
    assert result.returncode == 1
    assert re.search(r"Model not registered: testing_ap [0-9.]+(?:e-?[0-9]+)? is below MinTestingAP 1", result.stdout)
    assert re.search(r"^  CheckTestingAP\s+failed", result.stdout, re.M)
    assert not (tmp_path / "registry").exists()
    assert not (the_execution(tmp_path) / "deploy").exists()


@pytest.mark.slow
def test_an_interrupted_run_resumes_training_from_its_checkpoints(tmp_path, data):
    args = detector_command("pipeline", "--local", "--root", str(tmp_path), "--data", str(data), "--no-progress",
                            "--param", "MaxIter=60", "--param", "MinTestingAP=0")
    runner = subprocess.Popen(args, env=detector_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    logs: list[Path] = []
    while time.monotonic() < deadline and runner.poll() is None:
        logs = list(tmp_path.glob("executions/*/train/train.log"))
        if logs and re.search(r"iter: (9|19)\b", logs[0].read_text()):
            break
        time.sleep(0.2)
    assert logs and runner.poll() is None, runner.communicate()[0][-3000:]
    checkpoints = logs[0].parent / "checkpoints"
    runner.send_signal(signal.SIGTERM)
    output = runner.communicate(timeout=120)[0]
    assert runner.returncode != 0
    saved = sorted(p.name for p in checkpoints.glob("checkpoint_*.pth"))
    assert len(saved) == 1 and saved[0] != "checkpoint_00000060.pth", output[-3000:]
    assert not list(tmp_path.glob("executions/*/train/model/model_final.pth"))

    resumed = pipeline(tmp_path, data, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert f"resuming from {saved[-1]}" in resumed.stdout
    train_log = (the_execution(tmp_path) / "train" / "train.log").read_text()
    iteration = int(saved[-1][len("checkpoint_"):-len(".pth")])
    assert f"at iteration {iteration} of 60" in train_log


@pytest.mark.slow
def test_relative_root_from_the_project_root_and_from_another_directory(tmp_path, data):
    """The README's default `--root runs/pipeline` is relative: every step, serving included, must work with it."""
    for cwd in (tmp_path / "project", tmp_path / "elsewhere" / "deeper"):
        cwd.mkdir(parents=True)
        result = subprocess.run(
            detector_command("pipeline", "--local", "--root", "runs/pipeline", "--data", str(data), *SMALL, "--param", "MinTestingAP=0"),
            env=detector_env(), capture_output=True, text=True, timeout=600, cwd=cwd,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        assert re.search(r"^  Deploy\s+succeeded", result.stdout, re.M)
        execution = the_execution(cwd / "runs" / "pipeline")
        assert json.loads((execution / "deploy" / "response.json").read_text())["image"]
        assert (cwd / "runs" / "pipeline" / "registry" / "detector" / "1" / "package.json").exists()


@pytest.mark.slow
def test_a_failing_step_is_named_with_its_reason_and_log_and_no_traceback(tmp_path, data):
    """The endpoint refuses the request (its pixel limit is set below the test image's size): the Deploy
    step fails with the HTTP status, the server's JSON error and the end of its log."""
    result = subprocess.run(
        detector_command("pipeline", "--local", "--root", str(tmp_path), "--data", str(data), *SMALL, "--param", "MinTestingAP=0"),
        env=detector_env(DETECTOR_MAX_IMAGE_PIXELS="100"), capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert re.search(r"Pipeline failed: step Deploy failed: POST /invocations with \S+\.png answered HTTP 400: "
                     r"image is 128x128 = 16384 pixels, above the limit of 100 \(DETECTOR_MAX_IMAGE_PIXELS\)", output), output[-3000:]
    log = the_execution(tmp_path) / "deploy" / "serve.log"
    assert f"last lines of {log}:" in output
    assert re.search(r"^  Deploy\s+failed", result.stdout, re.M)
    assert "Traceback" not in output


@pytest.mark.slow
def test_the_local_run_gates_a_mask_model_on_testing_mask_ap(tiny_mask_evaluation, tmp_path):
    """The local runner's condition on the real evaluation.json of a mask model: mask AP, not box AP."""
    output, _ = tiny_mask_evaluation
    report = json.loads((output / EVALUATION_FILE).read_text())
    mask_ap = report["metrics"]["testing_mask_ap"]["value"]
    lines = []
    run = LocalRun(tmp_path, {"MinTestingAP": 0.0}, "e1", backend=None, log=lines.append,
                   hyperparameters={"model": "detector/mask_rcnn_R_18_FPN_128px.yaml"})
    run.check({"report": report})
    assert run.metrics["evaluation_testing_mask_ap"] == mask_ap
    assert run.metrics["evaluation_testing_ap"] == report["metrics"]["testing_ap"]["value"]
    assert f"  testing_mask_ap {mask_ap:.4f} >= MinTestingAP 0?" in lines

    run.parameters["MinTestingAP"] = 1.0
    with pytest.raises(PipelineFailed, match=rf"TestingAPTooLow: Model not registered: testing_mask_ap {mask_ap} is below MinTestingAP 1.0"):
        run.check({"report": report})
    # Named explicitly, the gate reads box AP even for a mask model.
    boxes = LocalRun(tmp_path, {"MinTestingAP": 1.0}, "e2", backend=None, log=lines.append,
                     hyperparameters={"model": "detector/mask_rcnn_R_18_FPN_128px.yaml"}, gate_metric="testing_ap")
    with pytest.raises(PipelineFailed, match=r"Model not registered: testing_ap [0-9.]+(?:e-?[0-9]+)? is below"):
        boxes.check({"report": report})


@pytest.mark.slow
def test_champion_gate_stops_a_worse_model_and_passes_an_equal_or_better_one(tmp_path, tiny_model):
    """Champion: the session's tiny model (trained 30 iterations, keeps low-score boxes: AP above 0). A
    1-iteration challenger finds nothing (AP 0) and is stopped; against a champion as weak as itself it passes."""
    champion_ap = json.loads((tiny_model / "model" / "metrics.json").read_text())["testing"]["ap"]
    assert champion_ap > 0, "the fixture model must beat an untrained one for this test to mean anything"
    champion_archive = write_model_archive(tiny_model / "model", tmp_path / "champion.tar.gz")
    evaluation = tmp_path / "champion-evaluation.json"
    evaluation.write_text(json.dumps({"metrics": {"testing_ap": {"value": champion_ap}}}))
    registry = LocalModelRegistry(tmp_path / "registry")
    registry.register("detector", champion_archive, evaluation, "Approved", ["image/png"], ["application/json"], "test")

    weak = ["--param", "MaxIter=1", "--param", "MinTestingAP=0", "--param", "ModelApprovalStatus=PendingManualApproval", "--no-progress"]
    data = tiny_model / "input" / "data"
    stopped = pipeline(tmp_path, data, *weak)
    assert stopped.returncode == 1, stopped.stdout[-4000:] + stopped.stderr[-4000:]
    number = r"[0-9.]+(?:e-?[0-9]+)?"  # a tiny model's AP prints as 9.5e-05
    assert re.search(rf"step WorseThanChampion: Model not registered: testing_ap {number} is below the champion's testing_ap "
                     rf"{number} minus MaxRegression 0.0 = bar {number} ; champion local:model-package/detector/1", stopped.stdout)
    stdout = stopped.stdout
    assert re.search(r"^  CheckTestingAP\s+succeeded", stdout, re.M) and re.search(r"^  CheckChampion\s+failed", stdout, re.M)
    assert registry.versions("detector") == [1]  # nothing registered
    [execution] = sorted((tmp_path / "executions").iterdir())
    report = json.loads((execution / "evaluate" / "processing" / "evaluation" / "evaluation.json").read_text())
    assert report["champion"]["arn"] == "local:model-package/detector/1"
    assert report["metrics"]["champion_testing_ap"]["value"] == round(champion_ap, 6)  # scored like training scored it

    # The weak challenger becomes the champion: a model at least as good passes and is registered.
    registry.set_approval("detector", 1, "Rejected")
    evaluation.write_text(json.dumps(report))
    registry.register("detector", execution / "artifacts" / "model.tar.gz", evaluation, "Approved", ["image/png"], ["application/json"], "test")
    passed = pipeline(tmp_path, data, *weak)
    assert passed.returncode == 0, passed.stdout[-4000:] + passed.stderr[-4000:]
    assert re.search(r"^  CheckChampion\s+succeeded", passed.stdout, re.M)
    assert registry.versions("detector") == [1, 2, 3]
    assert "not deployed: the package is PendingManualApproval" in passed.stdout


def run(tmp_path, **overrides) -> LocalRun:
    return LocalRun(tmp_path, local_parameters(tmp_path, overrides), "e1", ProcessBackend(), log=lambda line: None)


def evaluation(testing_ap: float, champion_ap: float | None, max_regression: float = 0.0) -> dict:
    arn = spec.NO_CHAMPION if champion_ap is None else "local:model-package/detector/1"
    metrics = {"testing_ap": {"value": testing_ap}}
    if champion_ap is not None:
        metrics["champion_testing_ap"] = {"value": champion_ap}
    report = {"metrics": metrics, "champion": {
        "arn": arn, "max_regression": max_regression, "metrics": {} if champion_ap is None else {"testing_ap": champion_ap},
        "bar": {"testing_ap": spec.champion_bar(champion_ap, max_regression)}}}
    return {"report": report, "path": None}


def test_first_model_passes_on_the_absolute_bar(tmp_path):
    local = run(tmp_path, MinTestingAP=0.3)
    local.check(evaluation(0.4, None))
    local.check_champion(evaluation(0.4, None))


def test_worse_than_the_champion_is_stopped_with_both_numbers(tmp_path):
    local = run(tmp_path, MinTestingAP=0.3)
    local.check(evaluation(0.4, 0.5))
    with pytest.raises(PipelineFailed) as failure:
        local.check_champion(evaluation(0.4, 0.5))
    assert str(failure.value) == (f"step {spec.STEP_CHAMPION_FAIL}: Model not registered: testing_ap 0.4 is below the champion's "
                                  "testing_ap 0.5 minus MaxRegression 0.0 = bar 0.5 ; champion local:model-package/detector/1")


def test_max_regression_lets_a_slightly_worse_model_through(tmp_path):
    run(tmp_path).check_champion(evaluation(0.46, 0.5, max_regression=0.05))


def test_below_the_absolute_bar_names_that_test(tmp_path):
    with pytest.raises(PipelineFailed, match=f"step {spec.STEP_FAIL}: Model not registered: testing_ap 0.2 is below MinTestingAP 0.3"):
        run(tmp_path, MinTestingAP=0.3).check(evaluation(0.2, 0.1))


def test_a_mask_model_gets_built_in_data_with_masks_in_its_own_folder(tmp_path, monkeypatch):
    import detector.local.runner as runner

    monkeypatch.setattr(runner, "DEMO_DATA", {"train_images": 4, "test_images": 2, "image_size": 64, "seed": 0})
    boxes = LocalRun(tmp_path, {}, "e1", backend=None, log=lambda line: None).prepare_data()
    masks = LocalRun(tmp_path, {}, "e2", backend=None, log=lambda line: None,
                     hyperparameters={"model": "detector/mask_rcnn_R_18_FPN_128px.yaml"}).prepare_data()
    assert boxes["training"] == tmp_path / "demo-data" / "training"
    assert masks["training"] == tmp_path / "demo-data-masks" / "training"
    for channel, has_masks in ((boxes["training"], False), (masks["training"], True)):
        annotations = json.loads((channel / "annotations.json").read_text())["annotations"]
        assert annotations and all(("segmentation" in a) is has_masks for a in annotations)


def test_training_ap_on_a_sample_of_the_demo_data_only(tmp_path):
    """The demo measures training_ap on as many training images as its test set holds; a run on the
    user's own channels keeps the hyperparameter's default, and a value the run was given wins."""
    parameters = local_parameters(tmp_path, {})
    demo = LocalRun(tmp_path, parameters, "e1", backend=None, log=lambda line: None)
    assert demo.training_hyperparameters()["training_eval_images"] == "64"
    given = LocalRun(tmp_path, parameters, "e2", backend=None, log=lambda line: None,
                     hyperparameters={"model": "detector/faster_rcnn_R_18_FPN_128px.yaml", "training_eval_images": "200"})
    assert given.training_hyperparameters()["training_eval_images"] == "200"
    own = LocalRun(tmp_path, parameters, "e3", backend=None, log=lambda line: None, data_dir=tmp_path / "mine")
    assert "training_eval_images" not in own.training_hyperparameters()


def test_hyperparameters_of_a_local_run_are_checked_before_anything_runs(tmp_path, capsys):
    from detector.cli import main

    assert main(["pipeline", "--local", "--root", str(tmp_path), "--hyperparameter", "modle=x"]) == 2
    assert "hyperparameter 'modle' is not known" in capsys.readouterr().err
    assert main(["pipeline", "--local", "--root", str(tmp_path), "--hyperparameter", "model"]) == 2
    assert "--hyperparameter 'model': expected name=value" in capsys.readouterr().err
    assert not (tmp_path / "demo-data").exists()
