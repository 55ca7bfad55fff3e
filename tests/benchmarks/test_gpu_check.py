"""benchmarks/gpu_check.sh, the GPU checks as one script, run on its CPU path (no GPU here): every step
runs and writes its results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_cpu_path_runs_every_benchmark_and_writes_its_results(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(out)],
                            env={**__import__("os").environ, "PYTHON": sys.executable}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    steps = [line.split()[0] for line in (out / "summary.txt").read_text().splitlines()]
    assert steps == ["environment", "train", "serve", "transfer"]
    environment = json.loads((out / "environment.json").read_text())
    assert environment["torch"] and environment["gpu"] is None
    train = json.loads((out / "train.json").read_text())
    assert set(train["median_images_per_s"]) == {"DefaultTrainer", "DefaultTrainer+FTZ", "detector"}
    assert all(value > 0 for value in train["median_images_per_s"].values())
    assert train["ratios"]["detector / DefaultTrainer"] > 0
    serve = json.loads((out / "serve.json").read_text())["summary"]
    assert serve["device"] == "cpu" and serve["model_p50_ms_DefaultPredictor"] > 0 and serve["model_p50_ms_auto"] > 0
    transfer = json.loads((out / "transfer.json").read_text())
    assert 0 <= transfer["testing_ap_fine_tuned"] <= 1 and 0 <= transfer["testing_ap_from_scratch"] <= 1


def test_a_failing_step_is_recorded_and_ends_with_status_1(tmp_path):
    # No python3 that has torch: every step fails, each is recorded, the script goes on and exits 1.
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(tmp_path)],
                            env={"PATH": "/usr/bin:/bin", "PYTHON": "/bin/false"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["environment", "train", "serve", "transfer"]
    assert all(line.endswith("exit 1") for line in lines)
