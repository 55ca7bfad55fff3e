"""Shared fixtures: a synthetic dataset and a tiny model trained once per test session.

The helpers they use, and that tests import (``from helpers import ...``), are in helpers.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import detector_command, detector_env, tiny_hyperparameters, tiny_mask_hyperparameters, write_training_job


IMAGES_DIR = Path(__file__).parent / "images"


def pytest_addoption(parser):
    parser.addoption("--images", action="store_true",
                     help="also run tests/images: the built images in a real container engine (make images-test)")


def pytest_ignore_collect(collection_path, config):
    """tests/images needs an engine and the built images: collected with --images, or when named."""
    if Path(collection_path) != IMAGES_DIR or config.getoption("--images"):
        return None
    named = [Path(arg.split("::")[0]).resolve() for arg in config.args]
    return True if not any(IMAGES_DIR == path or IMAGES_DIR in path.parents for path in named) else None


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


@pytest.fixture(scope="session")
def tiny_mask_model(tmp_path_factory) -> tuple[Path, str]:
    """A finished tiny Mask R-CNN training job on `detector synth --masks` data, and its output."""
    base = write_training_job(
        tmp_path_factory.mktemp("tiny_mask_model"),
        tiny_mask_hyperparameters(max_iter=30, checkpoint_period=20),
        train_images=16,
        test_images=4,
        masks=True,
    )
    result = subprocess.run(detector_command("train"), env=detector_env(base), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return base, result.stdout + result.stderr


@pytest.fixture(scope="session")
def tiny_mask_evaluation(tiny_mask_model) -> tuple[Path, str]:
    """`detector evaluate` of the tiny mask model's archive on its testing channel: the output folder and the log."""
    from detector.environment import prepare_processing_job
    from detector.model_dir import write_model_archive

    base, _ = tiny_mask_model
    job = base.parent / "evaluation_job"
    job.mkdir()
    archive = write_model_archive(base / "model", job / "model.tar.gz")
    layout = prepare_processing_job(job, archive, base / "input" / "data" / "testing")
    result = subprocess.run(detector_command("evaluate"), env=detector_env(job), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return layout.evaluation_output, result.stdout + result.stderr
