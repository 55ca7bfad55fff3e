"""Both images run `detector <command>` (exec-form ENTRYPOINT ["detector"]): the installed console
script must be detector.cli:main and must handle what SageMaker and the pipeline pass it:
`train` (training job), `evaluate` (processing step, training image) and `serve` (hosting)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONTAINER_COMMANDS = ("train", "evaluate", "serve")


def console_script() -> str:
    path = shutil.which("detector", path=str(Path(sys.executable).parent))
    assert path, "the `detector` console script is not installed next to this interpreter (pip install -e .)"
    return path


def test_pyproject_and_the_installed_distribution_map_detector_to_cli_main():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"detector": "detector.cli:main"}
    (entry_point,) = importlib.metadata.entry_points(group="console_scripts", name="detector")
    assert entry_point.value == "detector.cli:main"
    from detector import cli

    assert entry_point.load() is cli.main


def test_the_cli_parser_has_every_command_the_containers_run():
    from detector.cli import _available, build_parser

    parser = build_parser(_available())
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    missing = [name for name in CONTAINER_COMMANDS if name not in commands.choices]
    assert missing == [], f"`detector` lacks the container command(s) {missing}"


@pytest.mark.parametrize("command", CONTAINER_COMMANDS)
def test_installed_script_answers_each_container_command(command):
    from helpers import detector_env

    result = subprocess.run([console_script(), command, "--help"], env=detector_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"usage: detector {command}" in result.stdout


def test_installed_script_runs_train_as_a_training_job_would(tmp_path):
    """`docker run IMAGE train` with no data: a clean failure with the reason in /opt/ml/output/failure."""
    from helpers import detector_env

    result = subprocess.run([console_script(), "train"], env=detector_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.strip() and "Traceback" not in failure
