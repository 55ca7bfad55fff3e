"""The trainer's hooks in-process: detectron2's SimpleTrainer, a toy model, a real CheckpointStore."""

from __future__ import annotations

import pytest
import torch
from detectron2.engine import SimpleTrainer, hooks

from detector.training.checkpoint import CheckpointStore
from detector.training.hooks import CheckpointHook, PeriodicEvalHook
from detector.training.stop import StopRequest, TrainingInterrupted

from test_state import batches, build  # noqa: E402  (same folder; pytest puts it on sys.path)


class StopAt(hooks.HookBase):
    """Sets the stop request after iteration ``n`` finishes, as SIGTERM would mid-run."""

    def __init__(self, stop: StopRequest, n: int):
        self.stop, self.n = stop, n

    def before_step(self):
        if self.trainer.iter + 1 == self.n:
            self.stop.set()


def run(tmp_path, max_iter=12, period=4, minutes=0.0, stop_at=None, eval_period=0, evaluations=None):
    state, stop = build(max_iter), StopRequest()
    store = CheckpointStore(tmp_path / "checkpoints")
    trainer = SimpleTrainer(state.model, batches(), state.optimizer)
    trainer.register_hooks(
        [
            hooks.LRScheduler(state.optimizer, state.scheduler),
            *([StopAt(stop, stop_at)] if stop_at else []),
            CheckpointHook(store, state, period, minutes, stop, max_iter),
            PeriodicEvalHook(eval_period, max_iter, lambda: evaluations.append(trainer.iter + 1)),
        ]
    )
    trainer.train(0, max_iter)
    return store


def saved(store: CheckpointStore) -> list[int]:
    return [iteration for iteration, _ in store.files()]


def test_saves_every_period_and_after_the_last_iteration(tmp_path):
    store = run(tmp_path, max_iter=10, period=4)
    assert saved(store) == [8, 10]  # 4 was saved too; the store keeps the newest two
    assert store.latest().state["scheduler"]["last_epoch"] == 10


def test_a_stop_request_saves_the_step_in_flight_then_ends_training(tmp_path):
    with pytest.raises(TrainingInterrupted) as interrupted:
        run(tmp_path, max_iter=12, period=100, stop_at=5)
    assert interrupted.value.iteration == 5
    store = CheckpointStore(tmp_path / "checkpoints")
    assert saved(store) == [5]
    checkpoint = store.latest()
    assert checkpoint.iteration == 5 and checkpoint.state["iteration"] == 5


def test_a_time_due_save_happens_without_a_period(tmp_path):
    store = run(tmp_path, max_iter=3, period=1000, minutes=1e-9)
    assert saved(store) == [2, 3]


def test_periodic_evaluation_skips_the_last_iteration(tmp_path):
    evaluations = []
    run(tmp_path, max_iter=12, period=100, eval_period=4, evaluations=evaluations)
    assert evaluations == [4, 8]


def test_resume_from_a_stop_request_checkpoint_matches_an_uninterrupted_run(tmp_path):
    reference = build(12)
    trainer = SimpleTrainer(reference.model, batches(), reference.optimizer)
    trainer.register_hooks([hooks.LRScheduler(reference.optimizer, reference.scheduler)])
    trainer.train(0, 12)

    with pytest.raises(TrainingInterrupted):
        run(tmp_path, max_iter=12, period=100, stop_at=7)
    torch.manual_seed(99)
    resumed = build(12)
    start = resumed.load_state_dict(CheckpointStore(tmp_path / "checkpoints").latest().state)
    trainer = SimpleTrainer(resumed.model, batches(start), resumed.optimizer)
    trainer.register_hooks([hooks.LRScheduler(resumed.optimizer, resumed.scheduler)])
    trainer.train(start, 12)
    for got, want in zip(resumed.model.parameters(), reference.model.parameters()):
        assert torch.equal(got, want)
