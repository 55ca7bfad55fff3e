"""Helpers shared by the tests (fixtures are in conftest.py): `detector` subprocesses, training
layouts with synthetic data, and a `detector serve` to start and wait for.

Importable as ``helpers``: pytest puts this folder on ``sys.path`` for its conftest.py (rootdir
conftest, ``prepend`` import mode), the same way ``from conftest import ...`` used to work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL_MODEL = "detector/faster_rcnn_R_18_FPN_128px.yaml"
SMALL_MASK_MODEL = "detector/mask_rcnn_R_18_FPN_128px.yaml"


def detector_env(base_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a `detector` subprocess running this checkout's sources."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "PYTHONUNBUFFERED": "1"}
    if base_dir is not None:
        env["SAGEMAKER_BASE_DIR"] = str(base_dir)
    env.update(extra)
    return env


def detector_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "detector", *args]


def write_training_job(
    base_dir: Path, hyperparameters: dict, train_images: int = 24, test_images: int = 8, seed: int = 0, masks: bool = False,
    **layout,
) -> Path:
    """A SageMaker training layout under ``base_dir`` with synthetic channels (``masks``: with shape masks)
    and string hyperparameters.

    ``layout``: ``hosts``, ``current_host``, ``network_interface_name`` for resourceconfig.json."""
    from detector import environment
    from detector.data.synthetic import generate_channels

    channels = generate_channels(
        environment.TrainingLayout(base_dir).data_dir, train_images, test_images, image_size=128, seed=seed, masks=masks
    )
    return environment.write_training_job(base_dir, hyperparameters, list(channels), **layout)


def tiny_hyperparameters(**overrides) -> dict[str, str]:
    params = {
        "model": SMALL_MODEL,
        "max_iter": "30",
        "batch_size": "4",
        "checkpoint_period": "10",
        "num_workers": "0",
        "log_period": "5",
        # Keep low-confidence boxes so an untrained model still answers with detections.
        "opts": "MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0",
    }
    params.update({k: str(v) for k, v in overrides.items()})
    return params


def tiny_mask_hyperparameters(**overrides) -> dict[str, str]:
    """The small mask model, as short as a test can afford; at most 20 masks per image to evaluate and serve."""
    return tiny_hyperparameters(
        model=SMALL_MASK_MODEL,
        training_eval_images="4",
        opts="MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0 TEST.DETECTIONS_PER_IMAGE 20",
        **overrides,
    )


def start_serve(base_dir: Path, log_path: Path, **extra_env: str) -> tuple[subprocess.Popen, str]:
    """Start `detector serve` on a free port, in the log's directory; returns the process and its base URL."""
    from detector.serving.model_server import free_port

    port = free_port()
    env = detector_env(base_dir, SAGEMAKER_BIND_TO_PORT=str(port), **extra_env)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(detector_command("serve"), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)
    return process, f"http://127.0.0.1:{port}"


def wait_until_serving(process: subprocess.Popen, log_path: Path, timeout: float = 180) -> None:
    """Wait for `detector serve` to log that it is ready (the model is loaded in every worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b"ready: http" in log_path.read_bytes():
            return
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"detector serve did not become ready (exit {process.poll()}):\n{log_path.read_text()[-5000:]}")


@contextmanager
def serving(base_dir: Path, log_path: Path, **extra_env: str):
    """A ready `detector serve` of ``base_dir`` for the block (its base URL); stopped with SIGTERM after it."""
    process, url = start_serve(base_dir, log_path, **extra_env)
    try:
        wait_until_serving(process, log_path)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


class TrainingProcess:
    """A `detector train` subprocess whose combined output is collected line by line."""

    def __init__(self, base: Path, **env):
        self.process = subprocess.Popen(
            detector_command("train"),
            env=detector_env(base, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen; output:\n{self.output[-4000:]}")

    def finish(self, timeout: float = 600) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code


def run_training(base: Path, **env) -> TrainingProcess:
    job = TrainingProcess(base, **env)
    job.finish()
    return job
