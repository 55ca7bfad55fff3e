"""The training state in-process, with a toy model: saved and restored by the same keys, exactly."""

from __future__ import annotations

import itertools

import pytest
import torch

from detector.training.checkpoint import CheckpointStore
from detector.training.state import KEYS, TrainingState

FINGERPRINT = {"SOLVER.BASE_LR": 0.1, "training data": "abc"}


class Toy(torch.nn.Module):
    """A model detectron2's SimpleTrainer can drive: batch in, dict of losses out."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, batch):
        x, y = batch
        noise = torch.randn(()) * 0.01  # draws from torch's RNG: a resume must restore it
        return {"loss": ((self.linear(x).squeeze(-1) - y) ** 2).mean() * (1 + noise)}


def batches(start: int = 0):
    for i in itertools.count(start):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(8, 4, generator=g)
        yield x, x.sum(-1)


def build(max_iter: int = 12):
    """Model, optimizer and detectron2's own scheduler (warmup, then drops at 6 and 9)."""
    from detectron2.config import get_cfg
    from detectron2.solver import build_lr_scheduler

    torch.manual_seed(0)
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = get_cfg()
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.BASE_LR = max_iter, (6, 9), 3, 0.1
    return TrainingState(model, optimizer, build_lr_scheduler(cfg, optimizer), FINGERPRINT)


def train(state: TrainingState, start: int, stop: int, lrs: list[float]) -> None:
    for _, batch in zip(range(start, stop), batches(start)):
        state.optimizer.zero_grad()
        state.model(batch)["loss"].backward()
        state.optimizer.step()
        lrs.append(state.optimizer.param_groups[0]["lr"])
        state.scheduler.step()


def test_state_dict_holds_every_key_and_loads_with_weights_only(tmp_path):
    state = build()
    train(state, 0, 2, [])
    document = state.state_dict(2)
    assert set(document) == set(KEYS) - {"grad_scaler"}
    assert document["iteration"] == 2 and document["scheduler"]["last_epoch"] == 2
    CheckpointStore(tmp_path).save(2, document)
    loaded = CheckpointStore(tmp_path).latest()  # torch.load(weights_only=True) inside
    assert loaded is not None and loaded.iteration == 2 and set(loaded.state) == set(document)


@pytest.mark.parametrize("stop_at", [2, 7])  # during warmup, and after the first learning-rate drop
def test_a_resumed_run_continues_exactly_like_an_uninterrupted_one(tmp_path, stop_at):
    reference, reference_lrs = build(), []
    train(reference, 0, 12, reference_lrs)

    first, lrs = build(), []
    train(first, 0, stop_at, lrs)
    CheckpointStore(tmp_path).save(stop_at, first.state_dict(stop_at))
    torch.manual_seed(1234)  # a new process: fresh random state, fresh objects
    resumed = build()
    assert resumed.load_state_dict(CheckpointStore(tmp_path).latest().state) == stop_at
    train(resumed, stop_at, 12, lrs)

    assert lrs == pytest.approx(reference_lrs, rel=0, abs=0)
    for got, want in zip(resumed.model.parameters(), reference.model.parameters()):
        assert torch.equal(got, want)


def test_the_scheduler_position_is_restored_not_rebuilt():
    saved = build()
    train(saved, 0, 7, [])
    restored = build()
    restored.load_state_dict(saved.state_dict(7))
    assert restored.scheduler.last_epoch == 7
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(saved.optimizer.param_groups[0]["lr"])
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # after the drop at 6


def test_grad_scaler_state_is_part_of_the_state():
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0)
    state = build()
    state.grad_scaler = scaler
    document = state.state_dict(0)
    assert document["grad_scaler"]["scale"] == 512.0
    other = build()
    other.grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    other.load_state_dict(document)
    assert other.grad_scaler.get_scale() == 512.0
