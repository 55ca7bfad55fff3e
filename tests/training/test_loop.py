"""PrecisionTrainer: detectron2's SimpleTrainer step under autocast, on a toy model, in-process."""

import pytest
import torch
from detectron2.utils.events import EventStorage

from detector.precision import Precision
from detector.training.loop import PrecisionTrainer


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 1)
        self.dtypes = []

    def forward(self, batch):
        out = self.linear(torch.stack(batch))
        self.dtypes.append(out.dtype)
        return {"loss": (out.float() ** 2).mean()}


def loader():
    generator = torch.Generator().manual_seed(0)
    while True:
        yield [torch.randn(8, generator=generator) for _ in range(4)]


def run(precision: Precision, steps: int = 3, grad_scaler=None) -> Toy:
    torch.manual_seed(0)
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = PrecisionTrainer(model, loader(), optimizer, precision, grad_scaler)
    with EventStorage(0) as storage:
        for i in range(steps):
            storage.iter = i
            trainer.run_step()
    return model


def test_bf16_runs_the_forward_pass_in_bf16_and_keeps_fp32_weights():
    model = run(Precision("bf16", "cpu", "bf16", ""))
    assert model.dtypes == [torch.bfloat16] * 3
    assert model.linear.weight.dtype == torch.float32


def test_bf16_steps_follow_the_fp32_steps_closely():
    fp32 = run(Precision("fp32", "cpu", "fp32", ""), steps=5)
    bf16 = run(Precision("bf16", "cpu", "bf16", ""), steps=5)
    assert fp32.dtypes == [torch.float32] * 5
    torch.manual_seed(0)
    start = Toy().linear.weight.detach()  # the weights both started from (same seed)
    assert not torch.equal(fp32.linear.weight, bf16.linear.weight)  # bf16 really ran
    moved = (fp32.linear.weight - start).abs().max()
    assert (fp32.linear.weight - bf16.linear.weight).abs().max() < 0.05 * moved + 1e-2


def test_fp16_needs_a_grad_scaler():
    with pytest.raises(ValueError, match="fp16 training needs a grad scaler"):
        PrecisionTrainer(Toy(), loader(), None, Precision("fp16", "cuda", "fp16", ""))


def test_the_grad_scaler_scales_the_backward_pass():
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    run(Precision("fp32", "cpu", "fp32", ""), steps=2, grad_scaler=scaler)
    assert scaler.get_scale() == 4.0 and scaler._growth_tracker.item() == 2
