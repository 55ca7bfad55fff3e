"""The training image run as SageMaker runs it: `docker run IMAGE train` with /opt/ml mounted from
outside, stopped with SIGTERM and resumed, a bad channel, and `docker run IMAGE evaluate` as the
evaluation processing job."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import (
    ITERATIONS,
    OPT_ML,
    STOP_AFTER_ITERATION,
    TRAIN_IMAGE,
    docker,
    run_to_end,
    training_job,
    training_mounts,
)

from detector.model_dir import read_model_dir

pytestmark = pytest.mark.slow


def test_the_entrypoint_is_pid_1(interrupted_training):
    # Exec-form ENTRYPOINT: `detector` itself (its Python) is PID 1, so SIGTERM reaches the trainer.
    assert re.fullmatch(r"\S*python3?\S* \S*/detector train", interrupted_training.pid1), interrupted_training.pid1


def test_docker_stop_saves_a_checkpoint_at_once_and_exits_143(interrupted_training):
    job = interrupted_training
    # SIGTERM handled: stopped after the step in flight, well before docker's SIGKILL (60 s here).
    assert job.stop_seconds < 30, f"docker stop took {job.stop_seconds:.1f} s:\n{job.first_log[-3000:]}"
    assert job.first_exit == 143, job.first_log[-3000:]
    # Periodic checkpoints are off: this one was written because of the SIGTERM.
    assert len(job.checkpoints_after_stop) == 1, job.checkpoints_after_stop
    (checkpoint,) = job.checkpoints_after_stop
    saved_at = int(re.search(r"(\d+)", checkpoint).group(1))
    assert STOP_AFTER_ITERATION <= saved_at < ITERATIONS, checkpoint
    assert "Training finished" not in job.first_log and "testing_ap" not in job.first_log


def test_the_next_run_resumes_from_the_checkpoint_and_finishes(interrupted_training):
    job = interrupted_training
    assert job.second_exit == 0, job.second_log[-5000:]
    (checkpoint,) = job.checkpoints_after_stop
    resumed = re.search(r"Resuming from (\S+) at iteration (\d+) of (\d+)", job.second_log)
    assert resumed, job.second_log[-5000:]
    assert resumed.group(1) == f"{OPT_ML}/checkpoints/{checkpoint}"
    assert int(resumed.group(3)) == ITERATIONS
    # The iterations before the stop are not trained again.
    first_iterations = [int(i) for i in re.findall(r"\biter: (\d+)", job.second_log)]
    assert first_iterations, "the second run trained nothing:\n" + job.second_log[-3000:]
    assert min(first_iterations) >= int(resumed.group(2)), first_iterations[:5]


def test_the_model_folder_holds_what_serving_needs_and_no_checkpoints(interrupted_training):
    job = interrupted_training
    assert job.second_exit == 0, job.second_log[-3000:]
    files = read_model_dir(job.model_dir)  # weights, config and labels, readable as serving reads them
    assert files.labels.names
    assert not list(job.model_dir.glob("checkpoint*")) and not list(job.model_dir.glob("*.pth.tmp"))
    # AP as a fraction, never NaN (DESIGN.md, Metrics); the model's quality is checked by serving it.
    testing_ap = float(re.search(r"^testing_ap (\S+)$", job.second_log, re.M).group(1))
    assert 0.0 <= testing_ap <= 1.0


def test_a_bad_channel_writes_the_failure_file_and_exits_non_zero(tmp_path, demo_data):
    base = training_job(tmp_path / "job", demo_data, max_iter=5)
    annotations = base / "input" / "data" / "training" / "annotations.json"
    coco = json.loads(annotations.read_text())
    coco["annotations"][0]["bbox"] = [10, 10, -4, 8]  # a negative width
    annotations.write_text(json.dumps(coco))

    code, log = run_to_end(TRAIN_IMAGE, ["train"], mounts=training_mounts(base), timeout=300)

    assert code != 0, log[-3000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.strip(), "no reason in /opt/ml/output/failure"
    # The file as the container sees it, the annotation and what is wrong with it.
    assert failure.startswith(f"{OPT_ML}/input/data/training/annotations.json: annotations[0]"), failure
    assert "width -4" in failure, failure
    assert "Traceback" not in failure
    assert not list((base / "model").iterdir()), "a failed job must not leave a model"


def test_the_training_image_runs_as_root_without_java():
    # SageMaker mounts /opt/ml/model, /opt/ml/output and /opt/ml/checkpoints for root (docs/images.md).
    result = docker("run", "--rm", "--entrypoint", "sh", TRAIN_IMAGE, "-c", "id -u; command -v java || echo no-java",
                    timeout=120)
    assert result.stdout.split() == ["0", "no-java"], result.stdout


def test_evaluate_runs_as_a_processing_job_and_writes_evaluation_json(tmp_path, interrupted_training, model_archive, demo_data):
    from detector.environment import ProcessingEnvironment

    local = ProcessingEnvironment(tmp_path)
    container = ProcessingEnvironment(Path(OPT_ML))
    local.model_input.mkdir(parents=True)
    shutil.copyfile(model_archive, local.model_input / "model.tar.gz")
    local.evaluation_output.mkdir(parents=True)
    mounts = {
        local.model_input: f"{container.model_input}:ro",
        demo_data["testing"]: f"{container.test_input}:ro",
        local.evaluation_output: str(container.evaluation_output),
    }

    code, log = run_to_end(TRAIN_IMAGE, ["evaluate"], mounts=mounts, timeout=600)

    assert code == 0, log[-5000:]
    report = json.loads((local.evaluation_output / "evaluation.json").read_text())
    evaluated = report["metrics"]["testing_ap"]["value"]
    trained = float(re.search(r"^testing_ap (\S+)$", interrupted_training.second_log, re.M).group(1))
    # The same model on the same channel: the evaluation step agrees with training's own number.
    assert evaluated == pytest.approx(trained, abs=1e-6)
