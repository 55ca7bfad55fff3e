"""Start the training processes of this host: in-process for one, ``torch.distributed`` for several.

World size is ``hosts x processes_per_host`` (one process per GPU by default, one on CPU). With
several processes this process stays the parent: it forwards SIGTERM to its children, so the stop
request reaches every rank, and exits with the worst child status. NCCL on GPU, gloo on CPU; the
first host of ``resourceconfig.json`` is the rendezvous address.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from datetime import timedelta

from ..environment import TrainingEnvironment, export_environ
from ..failure import report_failure
from .hyperparameters import Hyperparameters
from .stop import EXIT_CODE_STOPPED, StopRequest
from .distributed import Rank
from .trainer import train_process

logger = logging.getLogger("detector.launch")

# After a rank fails: how long the others get to stop on SIGTERM before they are killed. Blocked in a
# collective with the dead rank, they never reach the next step's stop check.
RANK_FAILURE_GRACE_S = 10.0


def processes_per_host(env: TrainingEnvironment, params: Hyperparameters) -> int:
    if params.processes_per_host is not None:
        return params.processes_per_host
    return max(env.num_gpus, 1)


def run(env: TrainingEnvironment, params: Hyperparameters) -> int:
    per_host = processes_per_host(env, params)
    world_size = per_host * len(env.hosts)
    if world_size == 1:
        return train_process(env, params, Rank(), StopRequest().install())

    export_environ(env.distributed_environ())  # before the ranks start: they inherit it
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_worker, args=(env, params, local_rank, per_host), name=f"rank-{local_rank}")
        for local_rank in range(per_host)
    ]
    forwarded: list[int] = []

    def forward(signum, frame):
        forwarded.append(signum)
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for child in children:
        child.start()
        if forwarded and child.pid is not None:  # a stop request that came while the ranks started
            os.kill(child.pid, forwarded[0])
    first_failed = _wait_for_ranks(children)
    codes = [child.exitcode for child in children]
    if forwarded and all(code in (0, EXIT_CODE_STOPPED, -signal.SIGTERM) for code in codes):
        return EXIT_CODE_STOPPED
    if first_failed is not None:
        code = first_failed.exitcode
        if code is not None and code < 0:
            # Killed: it wrote no reason, and what the others wrote (a broken connection) follows from it.
            reason = (
                f"training process {first_failed.name} was killed by {signal.Signals(-code).name} (out of memory is a "
                "common cause); the other training processes were stopped. See the job log"
            )
            report_failure(env.failure_file, reason, overwrite=True)
        else:
            report_failure(env.failure_file, f"training process {first_failed.name} exited with status {code}; see the job log", overwrite=False)
        return code if code and code > 0 else 1
    return 0


def _wait_for_ranks(children, grace_s: float = RANK_FAILURE_GRACE_S):
    """Wait for every rank; returns the first that failed, or None. When one fails, the others are
    stopped within ``grace_s``: they would otherwise wait in a collective for the dead rank until the
    process group times out (30 minutes of a GPU instance)."""
    from multiprocessing.connection import wait

    running = list(children)
    deadline, first_failed = None, None
    while running:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        for sentinel in wait([c.sentinel for c in running], timeout=timeout):
            child = next(c for c in running if c.sentinel == sentinel)
            child.join()
            running.remove(child)
            if child.exitcode not in (0, EXIT_CODE_STOPPED, -signal.SIGTERM) and first_failed is None:
                first_failed = child
                if running:
                    logger.error(
                        "%s exited with status %s: stopping the other %d training process(es)", child.name, child.exitcode, len(running)
                    )
                deadline = time.monotonic() + grace_s
                for other in running:
                    if other.is_alive():
                        os.kill(other.pid, signal.SIGTERM)
        if deadline is not None and time.monotonic() >= deadline:
            for other in running:
                if other.is_alive():
                    other.kill()
            for other in running:
                other.join()
            running = []
    return first_failed


def _worker(env: TrainingEnvironment, params: Hyperparameters, local_rank: int, per_host: int) -> None:
    import sys

    import torch
    import torch.distributed as dist

    stop = StopRequest().install()
    world_size = per_host * len(env.hosts)
    rank = env.host_rank * per_host + local_rank
    use_gpu = env.num_gpus > 0
    try:
        if use_gpu:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            backend="nccl" if use_gpu else "gloo",
            init_method=f"tcp://{env.master_addr}:{env.master_port}",
            world_size=world_size,
            rank=rank,
            timeout=timedelta(minutes=30),
        )
        _set_local_group(per_host, len(env.hosts), env.host_rank)
        code = train_process(env, params, Rank(rank, world_size, local_rank), stop)
    except SystemExit as stop:  # a stop request after the final checkpoint
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException as error:  # report, then exit non-zero; the parent collects the status
        code = report_failure(env.failure_file, error, overwrite=False)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    sys.exit(code)


def _set_local_group(per_host: int, num_hosts: int, host_rank: int) -> None:
    """detectron2's comm helpers (local rank, local size) expect a per-machine process group."""
    import torch.distributed as dist
    from detectron2.utils import comm

    for host in range(num_hosts):
        ranks = list(range(host * per_host, (host + 1) * per_host))
        group = dist.new_group(ranks)
        if host == host_rank:
            comm._LOCAL_PROCESS_GROUP = group  # noqa: SLF001
