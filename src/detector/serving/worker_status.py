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
    except OSError:  # no /proc: whether the process exists is all that can be told
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    # "pid (command) state ...": the command may hold spaces and parentheses, the state follows the last ")".
    state = stat.rindex(b")") + 2
    return stat[state:state + 1] not in (b"Z", b"X")


class WorkerStatus:
    """The workers' reports in ``runtime_dir``, read on demand."""

    def __init__(self, runtime_dir: Path):
        self.runtime_dir = runtime_dir

    def _ready_files(self) -> list[tuple[int, str]]:
        """(process id, file name) of every ready file, live or not."""
        found = []
        for name in os.listdir(self.runtime_dir):
            pid = name[len(READY_PREFIX):-len(READY_SUFFIX)]
            if name.startswith(READY_PREFIX) and name.endswith(READY_SUFFIX) and pid.isdigit():
                found.append((int(pid), name))
        return sorted(found)

    def ready_pids(self) -> list[int]:
        """Process ids of the workers that loaded the model and still run."""
        return [pid for pid, _ in self._ready_files() if process_alive(pid)]

    def forget_dead(self) -> list[int]:
        """Remove the ready files of workers that no longer run; returns their process ids."""
        dead = [(pid, name) for pid, name in self._ready_files() if not process_alive(pid)]
        for _, name in dead:
            (self.runtime_dir / name).unlink(missing_ok=True)
        return [pid for pid, _ in dead]

    def take_failure(self) -> str | None:
        """The reason a worker reported for a failed load (removing the report), if any."""
        path = self.runtime_dir / FAILURE_FILE
        try:
            reason = path.read_text()
        except FileNotFoundError:
            return None
        path.unlink(missing_ok=True)
        return reason
