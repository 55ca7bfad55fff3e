"""The executions of the local pipeline under ``<root>/executions/<id>/``: a new one, or the newest to resume.

An execution id is the UTC start time (``20261201-153000``), so the newest sorts last. Each execution
keeps the parameters it ran with in ``parameters.json``; ``--resume`` reruns the newest execution in
place with those parameters, unless new ones are given.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

from ..errors import DetectorError

EXECUTIONS_DIR = "executions"
PARAMETERS_FILE = "parameters.json"


def executions_dir(root: Path) -> Path:
    return Path(root) / EXECUTIONS_DIR


def execution_dir(root: Path, execution_id: str) -> Path:
    return executions_dir(root) / execution_id


def new_execution_id(now: float | None = None) -> str:
    """The id of an execution started at ``now`` (seconds since the epoch; default: now)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))


def latest_execution(root: Path) -> str:
    """The newest execution's id; DetectorError when there is none."""
    executions = executions_dir(root)
    previous = sorted(p.name for p in executions.iterdir() if p.is_dir()) if executions.is_dir() else []
    if not previous:
        raise DetectorError(f"--resume: no execution under {executions} to resume")
    return previous[-1]


def save_parameters(root: Path, execution_id: str, parameters: Mapping[str, object]) -> Path:
    path = execution_dir(root, execution_id) / PARAMETERS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(parameters), indent=2, sort_keys=True))
    return path


def resume_parameters(root: Path, execution_id: str, parameters: dict, overrides: Mapping[str, object]) -> dict:
    """The parameters a resumed execution runs with: those it saved, unless ``overrides`` are given
    (then ``parameters``, which hold them) or it saved none."""
    saved = execution_dir(root, execution_id) / PARAMETERS_FILE
    if overrides or not saved.exists():
        return parameters
    try:
        loaded = json.loads(saved.read_text())
    except (OSError, ValueError) as e:
        raise DetectorError(f"--resume: cannot read the parameters of execution {execution_id} from {saved} ({e})") from e
    if not isinstance(loaded, dict):
        raise DetectorError(f"--resume: {saved} does not hold a JSON object of parameters")
    return loaded


def plan_execution(root: Path, parameters: dict, overrides: Mapping[str, object], resume: bool) -> tuple[str, dict]:
    """(execution id, parameters) of the run to start: a new execution with ``parameters``, or with
    ``resume`` the newest one with its saved parameters (``overrides`` given: ``parameters``)."""
    if not resume:
        return new_execution_id(), parameters
    execution_id = latest_execution(root)
    return execution_id, resume_parameters(root, execution_id, parameters, overrides)
