"""What the benchmark scripts share: the environment of the processes they start."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child_environ(**extra: str) -> dict[str, str]:
    """This process's environment for a child that runs this checkout's ``detector``: ``src`` first on
    PYTHONPATH, what was there kept (a detectron2 built in place, as benchmarks/gpu_check.sh does), plus
    ``extra``."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}
