"""`detector pipeline --local --backend docker`: every step of the local pipeline in the built images."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SERVE_IMAGE, TRAIN_IMAGE, docker

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def containers_of(image: str) -> set[str]:
    return set(docker("ps", "-aq", "--filter", f"ancestor={image}").stdout.split())


def test_the_local_pipeline_runs_each_step_in_its_image(tmp_path):
    before = containers_of(TRAIN_IMAGE) | containers_of(SERVE_IMAGE)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # As a user runs it: from a folder of their own, relative paths, output to a pipe.
    result = subprocess.run(
        [sys.executable, "-m", "detector", "pipeline", "--local", "--backend", "docker",
         "--train-image", TRAIN_IMAGE, "--serve-image", SERVE_IMAGE,
         "--param", "MaxIter=30", "--param", "MinTestingAP=0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    out = result.stdout
    assert "(docker backend)" in out
    for step in ("Train", "Evaluate", "CheckTestingAP", "Register", "Deploy"):
        assert re.search(rf"^  {step} +succeeded", out, re.M), out[-3000:]
    assert re.search(r"endpoint http://127\.0\.0\.1:\d+/invocations answered \d+ detections", out), out[-3000:]
    # Files the containers wrote (as root) under the user's folder, where the steps read them.
    executions = list((tmp_path / "runs" / "pipeline" / "executions").iterdir())
    (execution,) = executions
    assert (execution / "artifacts" / "model.tar.gz").is_file()
    assert (execution / "evaluate" / "processing" / "evaluation" / "evaluation.json").is_file()
    # Every container a step started is gone (docker run --rm, the endpoint stopped).
    assert containers_of(TRAIN_IMAGE) | containers_of(SERVE_IMAGE) == before
