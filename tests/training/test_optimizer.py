"""The fused SGD: detectron2's optimizer, the same update, one kernel; kept fused across a resume."""

from __future__ import annotations

import copy

import torch
from detectron2.config import get_cfg
from detectron2.solver import build_optimizer as detectron2_build_optimizer

from detector.training.optimizer import build_optimizer, load_optimizer_state


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))


def _cfg(clip: bool = False):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 0.05, 0.9, 1e-3
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = clip
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    return cfg


def _train(model, optimizer, steps: int = 5):
    for step in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        (model(x) ** 2).mean().backward()
        optimizer.step()


def test_same_groups_and_update_as_detectron2s_sgd_but_fused():
    for clip in (False, True):
        ours_model, theirs_model = _model(), _model()
        ours, theirs = build_optimizer(_cfg(clip), ours_model), detectron2_build_optimizer(_cfg(clip), theirs_model)
        assert all(group["fused"] for group in ours.param_groups)
        assert not any(group["fused"] for group in theirs.param_groups)
        assert [{k: v for k, v in g.items() if k not in ("params", "fused")} for g in ours.param_groups] == [
            {k: v for k, v in g.items() if k not in ("params", "fused")} for g in theirs.param_groups
        ]
        _train(ours_model, ours)
        _train(theirs_model, theirs)
        for a, b in zip(ours_model.state_dict().values(), theirs_model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_from_the_unfused_optimizer_resumes_fused_and_identically():
    theirs_model = _model()
    theirs = detectron2_build_optimizer(_cfg(), theirs_model)
    _train(theirs_model, theirs, steps=3)
    saved = copy.deepcopy(theirs.state_dict())  # as from a checkpoint file: not the live buffers

    ours_model = _model()
    ours_model.load_state_dict(theirs_model.state_dict())
    ours = build_optimizer(_cfg(), ours_model)
    load_optimizer_state(ours, saved)
    assert all(group["fused"] for group in ours.param_groups)
    _train(ours_model, ours, steps=2)
    _train(theirs_model, theirs, steps=2)
    for a, b in zip(ours_model.state_dict().values(), theirs_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_channels_last_weights_step_through_views_with_the_same_update(monkeypatch):
    """From the second step on, a channels-last weight, its gradient and its momentum reach the fused
    kernel as contiguous NHWC views of the same memory (no copies), and the update is plain SGD's."""
    ours_model = _model().to(memory_format=torch.channels_last)
    plain_model = _model()
    ours, plain = build_optimizer(_cfg(), ours_model), detectron2_build_optimizer(_cfg(), plain_model)
    weight = ours_model[0].weight
    assert not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    fused = torch._fused_sgd_

    def spy(params, grads, buffers, **options):
        seen.append([(p.shape, p.is_contiguous(), p.data_ptr()) for p in params])
        return fused(params, grads, buffers, **options)

    monkeypatch.setattr(torch, "_fused_sgd_", spy)
    _train(ours_model, ours, steps=4)
    _train(plain_model, plain, steps=4)
    conv = [(shape, contiguous) for step in seen[1:] for shape, contiguous, ptr in step if ptr == weight.data_ptr()]
    assert conv == [(torch.Size([4, 3, 3, 3]), True)] * 3, seen  # NHWC shape, contiguous, the weight's own memory
    assert ours_model[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(ours_model.state_dict().values(), plain_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    buffer = ours.state[weight]["momentum_buffer"]
    assert buffer.is_contiguous(memory_format=torch.channels_last)
