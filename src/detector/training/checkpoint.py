"""Spot-safe checkpoints in the checkpoint directory (``/opt/ml/checkpoints``).

A checkpoint is one file, ``checkpoint_<iteration>.pth``, written to a hidden temporary name, flushed
to disk and renamed into place, so a kill at any moment leaves every visible checkpoint whole. The
newest file that loads is used; a torn or half-copied one (SageMaker copies the directory from S3
before a restarted job starts) is skipped with a warning and the one before it is used. Files hold
tensors and plain values only and load with ``torch.load(..., weights_only=True)``.

Each checkpoint records a fingerprint of everything that changes training (config, data, batch
size, learning rate, run length, seed). Resuming under a different fingerprint is refused with the
differences named, unless the job sets ``reset_checkpoints``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_(\d{8})\.pth$")
KEEP = 2


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    iteration: int
    state: dict


def fingerprint_digest(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def describe_differences(saved: dict, current: dict) -> list[str]:
    differences = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            differences.append(f"{key}: checkpoint has {saved.get(key)!r}, this job has {current.get(key)!r}")
    return differences


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:200]


class CheckpointStore:
    def __init__(self, directory: Path):
        self.directory = directory

    def files(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, iteration: int, state: dict) -> Path:
        import torch

        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"checkpoint_{iteration:08d}.pth"
        tmp = self.directory / f".checkpoint_{iteration:08d}.pth.tmp"
        with open(tmp, "wb") as f:
            torch.save({**state, "iteration": iteration}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for _, old in self.files()[:-KEEP]:
            old.unlink(missing_ok=True)
        return final

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads, or None when there is none."""
        for iteration, path in reversed(self.files()):
            checkpoint = self._load(iteration, path)
            if checkpoint is not None:
                return checkpoint
        return None

    def load(self, iteration: int) -> Checkpoint | None:
        """The checkpoint of ``iteration`` when it is here and loads, else None."""
        path = dict(self.files()).get(iteration)
        return None if path is None else self._load(iteration, path)

    def _load(self, iteration: int, path: Path) -> Checkpoint | None:
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("iteration") != iteration or "model" not in state:
                raise ValueError("not a checkpoint written by detector train")
        except Exception as e:  # a torn file raises whatever the unpickler hits first
            logger.warning("Skipping unreadable checkpoint %s (%s); trying an older one", path, e)
            return None
        return Checkpoint(path, iteration, state)

    def reset_once(self, job_name: str | None) -> bool:
        """Discard the checkpoints for ``reset_checkpoints``, once per job: a marker in the directory
        (synced to S3 and back with the checkpoints) tells a restarted job that its reset is done, so
        it resumes. Without a job name every run resets. Returns whether it discarded anything."""
        marker = self.directory / f".reset-by-{_safe_name(job_name)}" if job_name else None
        if marker is not None and marker.exists():
            logger.info("reset_checkpoints: this job (%s) already discarded the old checkpoints; resuming its own", job_name)
            return False
        found = self.files()
        if found:
            logger.warning("reset_checkpoints is set: discarding %d checkpoint(s) in %s", len(found), self.directory)
        self.clear()
        if marker is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"checkpoints reset by training job {job_name}\n")
        return bool(found)

    def check_compatible(self, checkpoint: Checkpoint, fingerprint: dict) -> None:
        saved = json.loads(checkpoint.state.get("fingerprint", "{}"))
        if fingerprint_digest(saved) == fingerprint_digest(fingerprint):
            return
        differences = describe_differences(saved, fingerprint)
        raise CheckpointError(
            f"checkpoint {checkpoint.path.name} in {self.directory} was made by a job with a different "
            f"configuration ({'; '.join(differences)}). Resuming would silently mix the two. Use a new "
            "checkpoint location, restore the original settings, or set the hyperparameter "
            "reset_checkpoints=true to discard these checkpoints and start over."
        )

    def clear(self) -> None:
        for _, path in self.files():
            path.unlink(missing_ok=True)
        for tmp in self.directory.glob(".checkpoint_*.tmp") if self.directory.is_dir() else []:
            tmp.unlink(missing_ok=True)
