"""`detector train` as SageMaker runs it: a real subprocess on a relocated /opt/ml."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import TrainingProcess, detector_command, detector_env, run_training, tiny_hyperparameters, write_training_job
from detector import cli
from detector.environment import TrainingLayout, write_hyperparameters

pytestmark = pytest.mark.slow

METRIC_LINE = re.compile(r"^(training|testing)_ap ([0-9\.]+)$", re.M)


def checkpoints(base: Path) -> list[str]:
    return sorted(p.name for p in (base / "checkpoints").glob("checkpoint_*.pth"))


def test_completed_run_writes_model_metrics_and_metric_lines(tiny_model):
    model_dir = tiny_model / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.yaml", "labels.json", "metrics.json", "model_final.pth"]
    labels = json.loads((model_dir / "labels.json").read_text())
    assert labels == {
        "categories": [
            {"index": 0, "id": 3, "name": "circle"},
            {"index": 1, "id": 7, "name": "square"},
            {"index": 2, "id": 12, "name": "triangle"},
        ]
    }
    metrics = json.loads((model_dir / "metrics.json").read_text())
    for channel in ("training", "testing"):
        assert 0.0 <= metrics[channel]["ap"] <= 1.0
        assert set(metrics[channel]["per_class_ap"]) == {"3", "7", "12"}
    assert metrics["iterations"] == 30
    assert not list(model_dir.glob("checkpoint*")), "checkpoints must stay out of the model directory"
    assert (tiny_model / "checkpoints" / "checkpoint_00000030.pth").exists()
    assert not (tiny_model / "output" / "failure").exists()


def test_metric_lines_match_the_pipeline_regexes(tmp_path):
    base = write_training_job(tmp_path, tiny_hyperparameters(max_iter=4, checkpoint_period=100))
    job = run_training(base)
    assert job.process.returncode == 0, job.output[-3000:]
    found = dict(METRIC_LINE.findall(job.output))
    assert set(found) == {"training", "testing"}
    for value in found.values():
        assert 0.0 <= float(value) <= 1.0
    assert re.search(r"^testing_ap50 [0-9.]+$", job.output, re.M) and re.search(r"^testing_ap75 [0-9.]+$", job.output, re.M)
    assert "nan" not in " ".join(line for line in job.output.splitlines() if "_ap" in line).lower()


def test_sigterm_saves_within_seconds_and_restart_loses_no_iteration(tmp_path):
    base = write_training_job(tmp_path, tiny_hyperparameters(max_iter=40, checkpoint_period=100, log_period=1))
    job = TrainingProcess(base)
    seen = int(job.wait_for(r"iter: (1[2-9])\b").group(1))  # 0-based: seen + 1 iterations are done
    job.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert job.finish() == 143, job.output[-3000:]
    assert time.monotonic() - sent < 30
    saved = int(re.search(r"Saved checkpoint checkpoint_(\d+)\.pth \(stop request\)", job.output).group(1))
    assert saved >= seen + 1
    assert checkpoints(base) == [f"checkpoint_{saved:08d}.pth"]
    assert not (base / "model" / "model_final.pth").exists()
    assert not (base / "output" / "failure").exists()

    resumed = run_training(base)
    assert resumed.process.returncode == 0, resumed.output[-3000:]
    assert f"at iteration {saved} of 40" in resumed.output
    assert re.search(r"iter: 39\b", resumed.output) and not re.search(rf"iter: {saved - 1}\b", resumed.output)
    assert checkpoints(base)[-1] == "checkpoint_00000040.pth"
    assert json.loads((base / "model" / "metrics.json").read_text())["iterations"] == 40


def test_kill_9_resumes_from_the_last_periodic_checkpoint(tmp_path):
    base = write_training_job(tmp_path, tiny_hyperparameters(max_iter=24, checkpoint_period=8, log_period=1))
    job = TrainingProcess(base)
    job.wait_for(r"iter: (1[1-4])\b")
    job.process.kill()
    job.finish()
    assert checkpoints(base) == ["checkpoint_00000008.pth"]

    resumed = run_training(base)
    assert resumed.process.returncode == 0, resumed.output[-3000:]
    assert "Resuming from" in resumed.output and "at iteration 8 of 24" in resumed.output
    assert (base / "model" / "model_final.pth").exists()


def test_changed_learning_rate_is_refused_on_resume(tmp_path):
    base = write_training_job(tmp_path, tiny_hyperparameters(max_iter=3, learning_rate=0.04))
    assert run_training(base).process.returncode == 0
    write_hyperparameters(base, tiny_hyperparameters(max_iter=3, learning_rate=0.01))
    refused = run_training(base)
    assert refused.process.returncode == 1
    reason = (base / "output" / "failure").read_text()
    assert "SOLVER.BASE_LR: checkpoint has 0.04, this job has 0.01" in reason
    assert "reset_checkpoints" in reason
    assert checkpoints(base) == ["checkpoint_00000003.pth"], "a refused job must not touch the checkpoints"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_hosts_train_one_job_with_gloo(tmp_path):
    port = str(free_port())
    hosts = ["algo-1", "algo-2"]
    bases = []
    for host in hosts:
        base = write_training_job(tmp_path / host, tiny_hyperparameters(max_iter=6, batch_size=4), hosts=hosts, current_host=host)
        bases.append(base)
    jobs = [TrainingProcess(b, DETECTOR_MASTER_ADDR="127.0.0.1", DETECTOR_MASTER_PORT=port) for b in bases]
    codes = [job.finish() for job in jobs]
    assert codes == [0, 0], "\n\n".join(job.output[-3000:] for job in jobs)
    assert (bases[0] / "model" / "model_final.pth").exists()
    assert not (bases[1] / "model").exists(), "only rank 0 writes outputs"
    assert METRIC_LINE.search(jobs[0].output) and not METRIC_LINE.search(jobs[1].output)
    assert "training_ap" not in jobs[1].output


BAD_INPUTS = [
    (lambda base: (base / "input/data/training/images/00003.png").unlink(), "image files are missing"),
    (lambda base: (base / "input/data/training/annotations.json").write_text("{"), "annotations.json: not valid JSON"),
    (lambda base: _edit(base, lambda d: d["annotations"][0].update(bbox=[100, 100, 60, 60])), "outside its image"),
    (lambda base: _edit(base, lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 4])), "non-positive size"),
    (lambda base: _edit(base, lambda d: d["annotations"][0].update(category_id=5)), "category_id 5, which is not declared"),
    (lambda base: _edit(base, lambda d: d.update(images=[], annotations=[])), "the dataset is empty"),
    (lambda base: _edit(base, lambda d: d["categories"].append({"id": 99, "name": "ball"}), channel="testing"),
     "categories [99] are not among the training channel's categories [3, 7, 12]"),
    (lambda base: _hyperparameters(base, batch_size="eight"), "'batch_size'='eight': expected a whole number"),
    (lambda base: _hyperparameters(base, epochs="3"), "hyperparameter 'epochs' is not known"),
    (lambda base: _hyperparameters(base, model="COCO-Detection/no_such.yaml"), "neither a detectron2 model-zoo config"),
    (lambda base: _hyperparameters(base, opts="MODEL.NO_SUCH_KEY 1"), "hyperparameter 'opts'"),
]


def _edit(base: Path, change, channel: str = "training") -> None:
    path = base / "input/data" / channel / "annotations.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _hyperparameters(base: Path, **changes) -> None:
    write_hyperparameters(base, {**json.loads(TrainingLayout(base).hyperparameters_file.read_text()), **changes})


@pytest.mark.parametrize("break_input, reason", BAD_INPUTS, ids=[r for _, r in BAD_INPUTS])
def test_bad_input_fails_with_a_reason_naming_it(tmp_path, monkeypatch, capsys, break_input, reason):
    base = write_training_job(tmp_path, tiny_hyperparameters(), train_images=4, test_images=2)
    break_input(base)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    assert cli.main(["train"]) == 1
    written = (base / "output" / "failure").read_text()
    assert reason in written
    assert "Traceback" not in written and len(written) <= 1025
    assert reason in capsys.readouterr().err
    assert not (base / "checkpoints").exists() and not (base / "model").exists()


def test_sigterm_during_the_final_evaluation_exits_and_restart_only_evaluates(tmp_path):
    base = write_training_job(tmp_path, tiny_hyperparameters(max_iter=4, checkpoint_period=100), train_images=64, test_images=64)
    job = TrainingProcess(base)
    job.wait_for(r"Overall training speed")
    job.process.send_signal(signal.SIGTERM)
    assert job.finish(timeout=60) == 143, job.output[-3000:]
    assert checkpoints(base) == ["checkpoint_00000004.pth"]
    assert not (base / "model" / "model_final.pth").exists()

    resumed = run_training(base)
    assert resumed.process.returncode == 0, resumed.output[-3000:]
    assert "at iteration 4 of 4" in resumed.output and "Starting training" not in resumed.output
    assert METRIC_LINE.search(resumed.output) and (base / "model" / "model_final.pth").exists()


def test_sigterm_during_a_periodic_evaluation_stops_within_seconds(tmp_path):
    # Many test images make the evaluation long enough to be caught in the middle.
    base = write_training_job(
        tmp_path, tiny_hyperparameters(max_iter=40, eval_period=2, checkpoint_period=1000, training_eval_images=10), test_images=400
    )
    job = TrainingProcess(base)
    job.wait_for(r"Evaluating after iteration 2\b", timeout=300)
    assert "training_ap is measured on a fixed sample of 10 of the 24 training images" in job.output
    sent = time.monotonic()
    job.process.send_signal(signal.SIGTERM)
    assert job.finish(timeout=120) == 143, job.output[-3000:]
    assert time.monotonic() - sent < 20, "the evaluation must not run to its end"
    assert "Evaluation after iteration 2 stopped by a stop request" in job.output
    assert checkpoints(base) == ["checkpoint_00000002.pth"]


def test_a_checkpoint_written_in_fp32_resumes_in_bf16(tmp_path):
    """Checkpoints hold fp32 master weights: a job may resume under another precision."""
    hyperparameters = tiny_hyperparameters(max_iter=8, checkpoint_period=4, log_period=1)
    base = write_training_job(tmp_path, {**hyperparameters, "precision": "fp32"})
    job = TrainingProcess(base)
    job.wait_for(r"iter: [5-7]\b")
    job.process.kill()
    job.finish()
    assert "Precision: fp32 on cpu" in job.output
    assert checkpoints(base) == ["checkpoint_00000004.pth"]

    write_hyperparameters(base, {**hyperparameters, "precision": "bf16"})
    resumed = run_training(base)
    assert resumed.process.returncode == 0, resumed.output[-3000:]
    assert "Precision: bf16 on cpu" in resumed.output and "at iteration 4 of 8" in resumed.output
    metrics = json.loads((base / "model" / "metrics.json").read_text())
    assert metrics["precision"] == {"precision": "bf16", "setting": "bf16", "device": "cpu", "channels_last": True}


MASK_LINE = re.compile(r"^(training|testing)_mask_(ap|ap50|ap75) ([0-9.]+)$", re.M)


def test_a_mask_model_prints_mask_lines_and_writes_both_metric_sets(tiny_mask_model):
    base, output = tiny_mask_model
    found = {(channel, name): float(value) for channel, name, value in MASK_LINE.findall(output)}
    assert set(found) == {(c, n) for c in ("training", "testing") for n in ("ap", "ap50", "ap75")}
    assert all(0.0 <= v <= 1.0 for v in found.values())
    assert set(dict(METRIC_LINE.findall(output))) == {"training", "testing"}, "the box lines are still there"
    assert "nan" not in " ".join(line for line in output.splitlines() if "_ap" in line).lower()
    assert "INPUT.MASK_FORMAT polygon -> bitmask" in output  # the synthetic circles are RLE
    metrics = json.loads((base / "model" / "metrics.json").read_text())
    for channel in ("training", "testing"):
        assert metrics[f"{channel}_mask"]["ap"] == pytest.approx(found[(channel, "ap")], abs=1e-6)
        assert set(metrics[f"{channel}_mask"]["per_class_ap"]) == set(metrics[channel]["per_class_ap"]) == {"3", "7", "12"}
        assert 0.0 <= metrics[channel]["ap"] <= 1.0
    assert metrics["training_mask"]["num_images"] == 4  # training_eval_images


def test_a_mask_model_resumes_mid_run(tiny_mask_model, tmp_path):
    """A restarted job (Spot) with only the mid-run checkpoint trains the rest and evaluates masks."""
    import shutil

    finished, _ = tiny_mask_model
    base = tmp_path / "job"
    shutil.copytree(finished, base, ignore=shutil.ignore_patterns("model"))
    (base / "checkpoints" / "checkpoint_00000030.pth").unlink()
    assert checkpoints(base) == ["checkpoint_00000020.pth"]
    resumed = run_training(base)
    assert resumed.process.returncode == 0, resumed.output[-3000:]
    assert "Resuming from" in resumed.output and "at iteration 20 of 30" in resumed.output
    assert re.search(r"iter: 29\b", resumed.output) and not re.search(r"iter: 14\b", resumed.output)
    assert len(MASK_LINE.findall(resumed.output)) == 6
    assert "testing_mask" in json.loads((base / "model" / "metrics.json").read_text())


def test_a_mask_model_on_data_without_masks_fails_naming_the_file(tmp_path):
    from helpers import tiny_mask_hyperparameters

    base = write_training_job(tmp_path, tiny_mask_hyperparameters(max_iter=2), train_images=2, test_images=1)
    job = run_training(base)
    assert job.process.returncode == 1
    reason = (base / "output" / "failure").read_text()
    assert "training/annotations.json: hyperparameter 'model'='detector/mask_rcnn_R_18_FPN_128px.yaml' (a mask model) needs a " \
           "'segmentation' (polygons or RLE) on every annotation" in reason
    assert "Traceback" not in job.output
