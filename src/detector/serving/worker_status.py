"""How server workers tell ``detector serve`` that their model loaded, or why it did not.

multi-model-server's ``/ping`` answers 200 while workers are still loading and after a load
failed, so workers leave files in the server's private runtime directory instead.
"""

from __future__ import annotations

import os
from pathlib import Path

FAILURE_FILE = "worker-failure"


def mark_ready(runtime_dir: Path | None) -> None:
    if runtime_dir is not None:
        (runtime_dir / f"worker-{os.getpid()}.ready").touch()


def mark_failed(runtime_dir: Path | None, reason: str) -> None:
    if runtime_dir is not None:
        (runtime_dir / FAILURE_FILE).write_text(reason)


def ready_workers(runtime_dir: Path) -> int:
    return len(list(runtime_dir.glob("worker-*.ready")))


def worker_failure(runtime_dir: Path) -> str | None:
    try:
        return (runtime_dir / FAILURE_FILE).read_text()
    except FileNotFoundError:
        return None
