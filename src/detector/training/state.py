"""The whole resumable state of a training run, saved and restored by the same keys.

``TrainingState`` holds the objects a run changes as it trains (model, optimizer, learning-rate
scheduler, AMP grad scaler) and returns or loads them as one dict, like torchvision's detection
reference::

    model        the model's state dict (fp32 master weights)
    optimizer    the optimizer's state dict (momentum buffers, the current learning rate)
    scheduler    the learning-rate scheduler's state dict (its position in the schedule)
    grad_scaler  the AMP grad scaler's state dict (only when training with AMP)
    rng          every rank's torch / numpy / python (and CUDA) random state, by rank
    iteration    completed iterations
    fingerprint  what the run trains (config, data, categories), as sorted JSON

:class:`~detector.training.checkpoint.CheckpointStore` writes the dict atomically and checks the
fingerprint before anything is loaded.
"""

from __future__ import annotations

import json
import random

import numpy as np

from .distributed import Rank, gather_to_main
from .optimizer import load_optimizer_state

KEYS = ("model", "optimizer", "scheduler", "grad_scaler", "rng", "iteration", "fingerprint")


def rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingState:
    def __init__(self, model, optimizer, scheduler, fingerprint: dict, rank: Rank = Rank(), grad_scaler=None):
        self.model, self.optimizer, self.scheduler, self.grad_scaler = model, optimizer, scheduler, grad_scaler
        self.fingerprint, self.rank = fingerprint, rank

    def state_dict(self, iteration: int) -> dict:
        """The state after ``iteration`` completed iterations. A collective when distributed:
        every rank calls it (each contributes its random state); the full dict is the main rank's."""
        rng = gather_to_main(self.rank, rng_state())
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {str(i): s for i, s in enumerate(rng)} if rng is not None else {},
            "iteration": iteration,
            "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
        }
        if self.grad_scaler is not None:
            state["grad_scaler"] = self.grad_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> int:
        """Restore what :meth:`state_dict` saved (this rank's random state); returns the iteration."""
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        rng = state.get("rng", {}).get(str(self.rank.rank))
        if rng is not None:
            restore_rng_state(rng)
        return int(state["iteration"])
