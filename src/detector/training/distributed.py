"""This process's place in a training job, and the few collectives the trainer needs.

One process (``Rank()``) or one rank of a ``torch.distributed`` job started by
:mod:`detector.training.launch`; every helper here is a no-op for a single process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def barrier(rank: Rank) -> None:
    if rank.world_size > 1:
        from detectron2.utils import comm

        comm.synchronize()


def any_rank(rank: Rank, flags: list[bool]) -> list[bool]:
    """Each flag set on some rank is set on all (so every rank saves and stops at the same step)."""
    if rank.world_size == 1:
        return flags
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def gather_to_main(rank: Rank, value) -> list | None:
    """Every rank's ``value`` in rank order on the main rank; None on the others."""
    if rank.world_size == 1:
        return [value]
    from detectron2.utils import comm

    gathered = comm.gather(value, dst=0)
    return gathered if rank.is_main else None


def all_gather(rank: Rank, value) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if rank.world_size == 1:
        return [value]
    from detectron2.utils import comm

    return comm.all_gather(value)
