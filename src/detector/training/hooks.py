"""The trainer's own hooks, next to detectron2's (``IterationTimer``, ``LRScheduler``, ``PeriodicWriter``)."""

from __future__ import annotations

import logging
import time
from typing import Callable

from detectron2.engine import HookBase

from ..evaluation.metrics import EvaluationInterrupted
from .checkpoint import CheckpointStore
from .distributed import Rank, any_rank, barrier
from .state import TrainingState
from .stop import StopRequest, TrainingInterrupted

logger = logging.getLogger("detector.train")


def save_checkpoint(store: CheckpointStore, state: TrainingState, completed: int, reason: str | None = None) -> None:
    """Every rank takes part (the state gathers each rank's random state); the main rank writes."""
    started = time.monotonic()
    document = state.state_dict(completed)
    if state.rank.is_main:
        path = store.save(completed, document)
        logger.info("Saved checkpoint %s%s in %.2f s", path.name, f" ({reason})" if reason else "", time.monotonic() - started)
    barrier(state.rank)


class CheckpointHook(HookBase):
    """Saves every ``period`` iterations, every ``minutes`` minutes, after the last iteration and on a
    stop request (SIGTERM); after the stop request's checkpoint it ends training with
    :class:`TrainingInterrupted`. Every rank decides alike: a flag set on one rank counts on all."""

    def __init__(self, store: CheckpointStore, state: TrainingState, period: int, minutes: float, stop: StopRequest, max_iter: int):
        self.store, self.state, self.period = store, state, period
        self.seconds = minutes * 60 if minutes > 0 else None
        self.stop, self.max_iter = stop, max_iter
        self.last_save = time.monotonic()

    @property
    def rank(self) -> Rank:
        return self.state.rank

    def after_step(self):
        completed = self.trainer.iter + 1
        stop, time_due = any_rank(
            self.rank, [self.stop.is_set(), self.seconds is not None and time.monotonic() - self.last_save >= self.seconds]
        )
        if stop or time_due or completed == self.max_iter or completed % self.period == 0:
            save_checkpoint(self.store, self.state, completed, reason="stop request" if stop else None)
            self.last_save = time.monotonic()
        if stop:
            raise TrainingInterrupted(completed)


class PeriodicEvalHook(HookBase):
    """Evaluates every ``period`` iterations except after the last (the final evaluation follows).

    Registered before :class:`CheckpointHook`: a stop request during the evaluation ends it within a
    batch, and the checkpoint hook then saves this iteration and stops training."""

    def __init__(self, period: int, max_iter: int, evaluate: Callable[[], object]):
        self.period, self.max_iter, self.evaluate = period, max_iter, evaluate

    def after_step(self):
        completed = self.trainer.iter + 1
        if self.period and completed % self.period == 0 and completed != self.max_iter:
            logger.info("Evaluating after iteration %d", completed)
            try:
                self.evaluate()
            except EvaluationInterrupted:
                logger.warning("Evaluation after iteration %d stopped by a stop request", completed)
