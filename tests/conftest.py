"""Shared fixtures: a synthetic dataset and a tiny model trained once per test session.

The helpers they use, and that tests import (``from helpers import ...``), are in helpers.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import detector_command, detector_env, tiny_hyperparameters, write_training_job


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Base dir of a finished tiny training job: ``model/`` plus its ``input/data`` channels."""
    base = write_training_job(tmp_path_factory.mktemp("tiny_model"), tiny_hyperparameters())
    result = subprocess.run(detector_command("train"), env=detector_env(base), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return base


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model: Path) -> Path:
    return tiny_model / "model"
