"""The optimizer: detectron2's SGD (its parameter groups, learning rates and gradient clipping) with
torch's fused kernel, which does the whole update (weight decay, momentum, step) in one vectorised,
multi-threaded pass per tensor instead of four dispatched operations. The update is the same; for
the packaged R18-FPN (19M parameters) one step took 24 ms with the default loop and 10 ms fused on
2 CPU cores (2026-12-01). CUDA has the same fused kernel.
"""

from __future__ import annotations

import torch
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

# Per-group flags that pick the implementation, not the arithmetic: a checkpoint written without them
# (or with other values) must not switch a resumed job back to the slow loop.
IMPLEMENTATION_FLAGS = ("fused", "foreach")


class FusedSGD(torch.optim.SGD):
    def __init__(self, params, **options):
        super().__init__(params, fused=True, **options)


def build_optimizer(cfg, model) -> torch.optim.Optimizer:
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    return maybe_add_gradient_clipping(cfg, FusedSGD)(
        params,
        lr=cfg.SOLVER.BASE_LR,
        momentum=cfg.SOLVER.MOMENTUM,
        nesterov=cfg.SOLVER.NESTEROV,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict`` keeping this optimizer's implementation flags."""
    flags = [{key: group[key] for key in IMPLEMENTATION_FLAGS if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, flags):
        group.update(kept)
