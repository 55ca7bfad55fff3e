"""docker-compose.yml's CPU profile with the built images: synth, then train, then serve, as its header says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import SERVE_IMAGE, TRAIN_IMAGE, assert_correct, demo_hyperparameters, sample_image

from detector.serving.model_server import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`) when the client has it, else docker-compose (1.29 on Debian 12)."""
    docker = os.environ.get("DOCKER") or "docker"
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    found = shutil.which("docker-compose")
    assert found, "neither `docker compose` nor docker-compose is installed (scripts/engine.sh up installs docker-compose)"
    return [found]


class Compose:
    def __init__(self, local_dir: Path, port: int):
        self.project = f"detector-test-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "DETECTOR_LOCAL_DIR": str(local_dir), "SERVE_PORT": str(port),
                    "TRAIN_IMAGE_CPU": TRAIN_IMAGE, "SERVE_IMAGE_CPU": SERVE_IMAGE}

    def __call__(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([*compose_command(), "-p", self.project, "--profile", "cpu", *args], cwd=REPO,
                              env=self.env, capture_output=True, text=True, timeout=timeout)


def test_cpu_profile_synth_train_then_serve(tmp_path, interrupted_training):
    local = tmp_path / "local"
    local.mkdir()
    # A short fine-tuning from the trained model (a `pretrained` channel folder under data/).
    hyperparameters = demo_hyperparameters(max_iter=20, checkpoint_period=10, learning_rate=0.01)
    (local / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    port = free_port()
    compose = Compose(local, port)
    try:
        synth = compose("run", "--rm", "synth-cpu")
        assert synth.returncode == 0, synth.stdout[-3000:] + synth.stderr[-3000:]
        assert (local / "data" / "testing" / "annotations.json").is_file()
        shutil.copytree(interrupted_training.model_dir, local / "data" / "pretrained")

        train = compose("run", "--rm", "train-cpu")
        assert train.returncode == 0, train.stdout[-5000:] + train.stderr[-3000:]
        assert "testing_ap" in train.stdout
        assert {"model_final.pth", "config.yaml", "labels.json"} <= {p.name for p in (local / "model").iterdir()}
        assert list((local / "checkpoints").iterdir()), "checkpoints go to local/checkpoints"

        up = compose("up", "-d", "serve-cpu", timeout=120)
        assert up.returncode == 0, up.stderr
        health = wait_healthy(compose, port)
        body, truth = sample_image({"testing": local / "data" / "testing"})
        response = requests.post(f"http://127.0.0.1:{port}/invocations", data=body,
                                 headers={"Content-Type": "image/png"}, timeout=60)
        assert response.status_code == 200, response.text
        assert_correct(response.json(), truth, local / "model", body)
        assert health == "healthy"
    finally:
        logs = compose("logs", "--no-color", timeout=60).stdout
        down = compose("down", "--remove-orphans", "--timeout", "30", timeout=120)
    assert down.returncode == 0, down.stderr
    leftover = subprocess.run([os.environ.get("DOCKER") or "docker", "ps", "-aq", "--filter",
                               f"label=com.docker.compose.project={compose.project}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"containers left behind:\n{logs[-3000:]}"


def wait_healthy(compose: Compose, port: int, timeout: float = 240) -> str:
    """The serve-cpu container's Docker health status once its healthcheck (a /ping) passes."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        ids = compose("ps", "-q", "serve-cpu", timeout=60).stdout.split()
        if ids:
            inspect = subprocess.run([os.environ.get("DOCKER") or "docker", "inspect", "--format",
                                      "{{.State.Health.Status}}", ids[0]], capture_output=True, text=True)
            status = inspect.stdout.strip()
            if status == "healthy":
                return status
        time.sleep(2)
    raise AssertionError(f"serve-cpu never became healthy (last {status!r}):\n{compose('logs', '--no-color').stdout[-4000:]}")
