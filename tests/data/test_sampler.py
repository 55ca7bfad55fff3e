import itertools

import pytest

from detector.data.sampler import ResumableBatchSampler, epoch_batches

ASPECTS = [i % 3 != 0 for i in range(37)]


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_every_image_appears_once_per_epoch_in_same_orientation_batches():
    batches = epoch_batches(ASPECTS, batch_size=4, seed=0, epoch=0)
    flat = [i for b in batches for i in b]
    assert set(flat) == set(range(37)) and all(len(b) == 4 for b in batches)
    mixed = [b for b in batches if len({ASPECTS[i] for i in b}) > 1]
    assert len(mixed) <= 1


def test_resuming_continues_the_same_global_order():
    full = take(ResumableBatchSampler(ASPECTS, 4, seed=3), 40)
    resumed = take(ResumableBatchSampler(ASPECTS, 4, seed=3, start_batch=23), 17)
    assert resumed == full[23:]


def test_order_does_not_depend_on_the_number_of_processes():
    single = take(ResumableBatchSampler(ASPECTS, 4, seed=3, start_batch=5), 12)
    for world in (2, 4):
        shards = [take(ResumableBatchSampler(ASPECTS, 4, seed=3, rank=r, world_size=world, start_batch=5), 12) for r in range(world)]
        rebuilt = [sorted(i for shard in shards for i in shard[b]) for b in range(12)]
        assert rebuilt == [sorted(b) for b in single]


def test_seed_changes_order_and_tiny_datasets_fill_batches():
    assert take(ResumableBatchSampler(ASPECTS, 4, seed=1), 3) != take(ResumableBatchSampler(ASPECTS, 4, seed=2), 3)
    assert all(len(b) == 8 for b in take(ResumableBatchSampler([True, True, False], 8, seed=0), 3))


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match="not divisible"):
        ResumableBatchSampler(ASPECTS, 6, seed=0, world_size=4)
