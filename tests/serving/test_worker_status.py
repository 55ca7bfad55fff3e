import os
import subprocess
import sys

from detector.serving.worker_status import WorkerStatus, mark_failed, mark_ready, process_alive


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while True:  # exited but not reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
    assert not process_alive(child.pid)
    child.wait()
    assert not process_alive(child.pid)
    assert process_alive(os.getpid())


def test_ready_workers_are_the_live_ones_and_dead_ones_are_forgotten(tmp_path):
    status = WorkerStatus(tmp_path)
    assert status.ready_pids() == []
    mark_ready(tmp_path)
    dead = subprocess.run([sys.executable, "-c", f"from pathlib import Path; import os; Path('{tmp_path}', f'worker-{{os.getpid()}}.ready').touch(); print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    assert status.ready_pids() == [os.getpid()]
    assert status.forget_dead() == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"worker-{os.getpid()}.ready"]


def test_a_failure_report_is_taken_once(tmp_path):
    status = WorkerStatus(tmp_path)
    assert status.take_failure() is None
    mark_failed(tmp_path, "CUDA out of memory")
    assert status.take_failure() == "CUDA out of memory"
    assert status.take_failure() is None
