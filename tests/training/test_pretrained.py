"""`detector train` starting from pretrained weights: a real subprocess, a loopback weights server."""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest
import torch

from helpers import TrainingProcess, run_training, tiny_hyperparameters, write_training_job
from test_weights import FlakyServer

from detector.environment import TrainingLayout, write_hyperparameters
from detector.model_dir import write_model_archive

pytestmark = pytest.mark.slow

SHORT = {"max_iter": 4, "checkpoint_period": 2}


def job(tmp_path: Path, name: str, channels: dict | None = None, **hyperparameters) -> Path:
    """A tiny training job; ``channels`` adds channels (name -> folder to copy)."""
    base = write_training_job(tmp_path / name, tiny_hyperparameters(**{**SHORT, **hyperparameters}))
    for channel, source in (channels or {}).items():
        shutil.copytree(source, TrainingLayout(base).channel_dir(channel))
    return base


def failure(base: Path) -> str:
    return TrainingLayout(base).failure_file.read_text()


def relabelled(tiny_model: Path, tmp_path: Path) -> dict[str, Path]:
    """The tiny model's channels with other category ids and names (a different dataset's labels)."""
    mapping = {3: (21, "ring"), 7: (22, "box"), 12: (23, "wedge")}
    out = {}
    for channel in ("training", "testing"):
        target = tmp_path / "relabelled" / channel
        shutil.copytree(TrainingLayout(tiny_model).channel_dir(channel), target)
        document = json.loads((target / "annotations.json").read_text())
        document["categories"] = [{"id": mapping[c["id"]][0], "name": mapping[c["id"]][1]} for c in document["categories"]]
        for annotation in document["annotations"]:
            annotation["category_id"] = mapping[annotation["category_id"]][0]
        (target / "annotations.json").write_text(json.dumps(document))
        out[channel] = target
    return out


def test_weights_from_a_url_are_downloaded_with_a_retry_and_loaded(tiny_model_dir, tmp_path):
    server = FlakyServer((tiny_model_dir / "model_final.pth").read_bytes(), failures=1)
    try:
        base = job(tmp_path, "url", weights=server.url)
        trained = run_training(base, DETECTOR_WEIGHTS_CACHE=str(tmp_path / "cache"))
    finally:
        server.close()
    assert trained.process.returncode == 0, trained.output[-3000:]
    assert "Download of " in trained.output and "retrying" in trained.output and server.requests == 2
    assert "Starting weights: loaded " in trained.output
    assert list((tmp_path / "cache").rglob("model.pth")), "downloads land in the cache"
    assert not list((base / "checkpoints").glob("*.pth.part")) and not (base / "model" / "model.pth").exists()


@pytest.mark.parametrize("form", ["pkl", "pth", "tar.gz", "model dir"])
def test_the_pretrained_channel_takes_each_form(tiny_model, tmp_path, form):
    model_dir = tiny_model / "model"
    channel = tmp_path / "pretrained"
    channel.mkdir()
    state = torch.load(model_dir / "model_final.pth", weights_only=True)
    if form == "pkl":
        with open(channel / "model.pkl", "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "test"}, f)
    elif form == "pth":
        torch.save({"model": state}, channel / "checkpoint.pth")
    elif form == "tar.gz":
        write_model_archive(model_dir, channel / "model.tar.gz")
    else:
        shutil.rmtree(channel)
        shutil.copytree(model_dir, channel)
    base = job(tmp_path, "job", {"pretrained": channel})
    trained = run_training(base, DETECTOR_WEIGHTS_CACHE=str(tmp_path / "cache"))
    assert trained.process.returncode == 0, trained.output[-3000:]
    assert "Starting weights: loaded " in trained.output and "skipped 0 " in trained.output


def test_a_warm_start_from_a_model_with_other_categories_skips_its_class_heads(tiny_model, tmp_path):
    channels = relabelled(tiny_model, tmp_path)
    base = write_training_job(tmp_path / "warm", tiny_hyperparameters(**SHORT))
    layout = TrainingLayout(base)
    for name, source in channels.items():
        shutil.rmtree(layout.channel_dir(name))
        shutil.copytree(source, layout.channel_dir(name))
    shutil.copytree(tiny_model / "model", layout.channel_dir("pretrained"))
    trained = run_training(base)
    assert trained.process.returncode == 0, trained.output[-3000:]
    assert "with other categories (circle, square, triangle, now ring, box, wedge)" in trained.output
    assert "class heads" in trained.output and "Starting weights: loaded " in trained.output
    labels = json.loads((base / "model" / "labels.json").read_text())
    assert [c["id"] for c in labels["categories"]] == [21, 22, 23]


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (Path.write_text, (tmp_path / "ran", "ran"))

    channel = tmp_path / "pretrained"
    channel.mkdir()
    (channel / "evil.pkl").write_bytes(pickle.dumps({"model": {"w": RunsCode()}, "__author__": "x"}))
    base = job(tmp_path, "evil", {"pretrained": channel})
    trained = run_training(base)
    assert trained.process.returncode == 1
    assert "evil.pkl: refused to load" in failure(base) and "Traceback" not in failure(base)
    assert not (tmp_path / "ran").exists() and not (base / "checkpoints").exists()


def test_an_unreachable_url_fails_fast_with_the_ways_out(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/R-50.pkl"
    base = job(tmp_path, "offline", weights=url)
    started = time.monotonic()
    trained = run_training(base, DETECTOR_WEIGHTS_CACHE=str(tmp_path / "cache"))
    assert trained.process.returncode == 1 and time.monotonic() - started < 90
    reason = failure(base)
    assert url in reason and "'pretrained' channel" in reason and "weights=none" in reason


def test_a_resume_with_other_weights_is_refused(tiny_model_dir, tmp_path):
    first, second = tmp_path / "a.pth", tmp_path / "b.pth"
    state = torch.load(tiny_model_dir / "model_final.pth", weights_only=True)
    torch.save(state, first)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, second)
    base = job(tmp_path, "resume", weights=str(first))
    assert run_training(base).process.returncode == 0
    write_hyperparameters(base, tiny_hyperparameters(**SHORT, weights=str(second)))
    refused = run_training(base)
    assert refused.process.returncode == 1
    assert "starting weights: checkpoint has 'sha256:" in failure(base) and "reset_checkpoints" in failure(base)


def test_reset_checkpoints_acts_once_per_job_so_a_spot_restart_resumes(tmp_path):
    base = job(tmp_path, "reset")
    assert run_training(base, TRAINING_JOB_NAME="job-1").process.returncode == 0
    write_hyperparameters(base, tiny_hyperparameters(**{**SHORT, "max_iter": 6, "reset_checkpoints": "true"}))
    second = run_training(base, TRAINING_JOB_NAME="job-2")
    assert second.process.returncode == 0, second.output[-3000:]
    assert "discarding 2 checkpoint(s)" in second.output and "at iteration 0 of 6" in second.output
    restarted = run_training(base, TRAINING_JOB_NAME="job-2")  # the same job again, as after a Spot reclaim
    assert restarted.process.returncode == 0, restarted.output[-3000:]
    assert "already discarded" in restarted.output and "at iteration 6 of 6" in restarted.output


def test_a_dying_rank_ends_a_two_process_job_within_seconds(tmp_path):
    base = job(tmp_path, "ranks", max_iter=400, processes_per_host=2, checkpoint_period=1000)
    training = TrainingProcess(base, DETECTOR_MASTER_ADDR="127.0.0.1", DETECTOR_MASTER_PORT=str(_free_port()))
    training.wait_for(r"iter: \d+", timeout=300)
    ranks = psutil.Process(training.process.pid).children()
    ranks = [p for p in ranks if "spawn" in " ".join(p.cmdline()) or "multiprocessing" in " ".join(p.cmdline())]
    assert len(ranks) >= 2, [p.cmdline() for p in psutil.Process(training.process.pid).children()]
    killed = time.monotonic()
    ranks[-1].send_signal(signal.SIGKILL)
    code = training.finish(timeout=120)
    assert time.monotonic() - killed < 30, training.output[-3000:]
    assert code == 1
    assert "was killed by SIGKILL" in failure(base) and "the other training processes were stopped" in failure(base)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
