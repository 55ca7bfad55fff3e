"""Which server workers hold the loaded model right now, told through files in a private directory.

multi-model-server's own ``/ping`` answers 200 while workers are still loading, after a load
failed and while a dead worker restarts, so ``/ping`` is answered from here instead. A worker
leaves ``worker-<pid>.ready`` once it has loaded and warmed up the model, or ``worker-failure``
with the reason it could not. A ready file whose process is gone (killed, crashed) no longer
counts: ``WorkerStatus.ready_pids`` checks each process, cheaply enough to ask on every request.
"""

from __future__ import annotations

import os
from pathlib import Path

FAILURE_FILE = "worker-failure"
READY_PREFIX, READY_SUFFIX = "worker-", ".ready"


def mark_ready(runtime_dir: Path | None) -> None:
    if runtime_dir is not None:
        (runtime_dir / f"{READY_PREFIX}{os.getpid()}{READY_SUFFIX}").touch()


def mark_failed(runtime_dir: Path | None, reason: str) -> None:
    if runtime_dir is not None:
        (runtime_dir / FAILURE_FILE).write_text(reason)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; an exited process that waits to be reaped (a zombie) is not alive."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # "pid (command) state ...": the command may hold spaces and parentheses, the state follows the last ")".
    return stat[stat.rindex(b")") + 2: stat.rindex(b")") + 3] not in (b"Z", b"X")


class WorkerStatus:
    """The workers' reports in ``runtime_dir``, read on demand."""

    def __init__(self, runtime_dir: Path):
        self.runtime_dir = runtime_dir

    def ready_pids(self) -> list[int]:
        """Process ids of the workers that loaded the model and still run."""
        pids = []
        for name in os.listdir(self.runtime_dir):
            if name.startswith(READY_PREFIX) and name.endswith(READY_SUFFIX):
                pid = name[len(READY_PREFIX):-len(READY_SUFFIX)]
                if pid.isdigit() and process_alive(int(pid)):
                    pids.append(int(pid))
        return sorted(pids)

    def forget_dead(self) -> list[int]:
        """Remove the ready files of workers that no longer run; returns their process ids."""
        dead = []
        for path in self.runtime_dir.glob(f"{READY_PREFIX}*{READY_SUFFIX}"):
            pid = path.name[len(READY_PREFIX):-len(READY_SUFFIX)]
            if pid.isdigit() and not process_alive(int(pid)):
                path.unlink(missing_ok=True)
                dead.append(int(pid))
        return sorted(dead)

    def take_failure(self) -> str | None:
        """The reason a worker reported for a failed load (removing the report), if any."""
        path = self.runtime_dir / FAILURE_FILE
        try:
            reason = path.read_text()
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        return reason
