"""A deterministic, resumable batch order that does not depend on the number of processes.

Every global batch (``batch_size`` images, the whole job) is a pure function of the seed and the
batch number: each epoch is a seeded permutation of the dataset, split into batches of images of the
same orientation (landscape or portrait, like detectron2's aspect-ratio grouping, so padding stays
small), and the batches of an epoch are shuffled. Rank ``r`` of ``w`` takes images ``r::w`` of each
global batch. Resuming at iteration ``i`` is starting at batch ``i``: a restarted job sees exactly
the batches the uninterrupted job would have seen, even with a different number of processes.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Sequence

import numpy as np


def epoch_batches(aspect_is_wide: Sequence[bool], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(aspect_is_wide))
    groups: dict[bool, list[int]] = {True: [], False: []}
    batches: list[list[int]] = []
    for index in order.tolist():
        group = groups[bool(aspect_is_wide[index])]
        group.append(index)
        if len(group) == batch_size:
            batches.append(group.copy())
            group.clear()
    leftover = groups[True] + groups[False]
    while len(leftover) >= batch_size:
        batches.append(leftover[:batch_size])
        leftover = leftover[batch_size:]
    if leftover:
        # Fill the last batch from the start of this epoch's order rather than dropping images.
        taken = set(leftover)
        candidates = [i for i in order.tolist() if i not in taken] or order.tolist()
        fill = list(itertools.islice(itertools.cycle(candidates), batch_size - len(leftover)))
        batches.append(leftover + fill)
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


class ResumableBatchSampler:
    """Infinite stream of this rank's share of each global batch, starting at ``start_batch``."""

    def __init__(
        self,
        aspect_is_wide: Sequence[bool],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the number of processes {world_size}")
        self.aspect_is_wide = list(aspect_is_wide)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch

    def global_batches(self) -> Iterator[list[int]]:
        epoch, skip = 0, self.start_batch
        while True:
            batches = epoch_batches(self.aspect_is_wide, self.batch_size, self.seed, epoch)
            if skip >= len(batches):
                skip -= len(batches)
            else:
                yield from batches[skip:]
                skip = 0
            epoch += 1

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield batch[self.rank :: self.world_size]
