"""The optimizer: detectron2's SGD (its parameter groups, learning rates and gradient clipping) with
torch's fused kernel, which does the whole update (weight decay, momentum, step) in one vectorised,
multi-threaded pass per tensor instead of four dispatched operations. The update is the same; for
the packaged R18-FPN (19M parameters) one step took 24 ms with the default loop and 10 ms fused on
2 CPU cores (2026-12-01). CUDA has the same fused kernel.

The fused kernel wants contiguous tensors: a channels-last convolution weight (the memory format of
bf16 training on CPU) would be copied to a contiguous tensor and back, with its gradient and momentum,
on every step, which was 10 ms of that 24. Where a parameter, its gradient and its momentum buffer
are all channels-last, :meth:`FusedSGD.step` hands the kernel their NHWC views instead: the same
memory read as contiguous tensors, element for element the same update (tested).
"""

from __future__ import annotations

import torch
from torch.optim.sgd import sgd
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

# Per-group flags that pick the implementation, not the arithmetic: a checkpoint written without them
# (or with other values) must not switch a resumed job back to the slow loop.
IMPLEMENTATION_FLAGS = ("fused", "foreach")


def _channels_last_views(tensors: tuple) -> tuple:
    """``tensors`` as contiguous NHWC views where every one of them is a channels-last 4-D tensor."""
    if all(t is not None and t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last) for t in tensors):
        return tuple(t.permute(0, 2, 3, 1) for t in tensors)
    return tensors


class FusedSGD(torch.optim.SGD):
    def __init__(self, params, **options):
        super().__init__(params, fused=True, **options)

    def _momentum_pending(self) -> bool:
        """True until every parameter with a gradient has its momentum buffer (the first step makes them)."""
        return any(
            group["momentum"] != 0 and self.state.get(p, {}).get("momentum_buffer") is None
            for group in self.param_groups
            for p in group["params"]
            if p.grad is not None
        )

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None or self._momentum_pending() or any(group["differentiable"] for group in self.param_groups):
            return super().step(closure)
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            has_sparse_grad = self._init_group(group, params, grads, buffers)
            if group["momentum"] != 0:  # (without momentum there are no buffers: the kernel takes [])
                views = [_channels_last_views(triple) for triple in zip(params, grads, buffers)]
                params, grads, buffers = [v[0] for v in views], [v[1] for v in views], [v[2] for v in views]
            sgd(
                params,
                grads,
                buffers,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                has_sparse_grad=has_sparse_grad,
                foreach=group["foreach"],
                fused=group["fused"],
                grad_scale=getattr(self, "grad_scale", None),
                found_inf=getattr(self, "found_inf", None),
            )
        return None


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
