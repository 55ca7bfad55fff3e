"""One training step under the job's precision: detectron2's SimpleTrainer with autocast.

detectron2's ``AMPTrainer`` knows only CUDA and fp16. This step runs the forward pass under
:meth:`detector.precision.Precision.autocast` (bf16 on CPUs, fp16 or bf16 on GPUs), scales the
loss only where fp16 needs it, and keeps the optimizer on the fp32 master weights, so hooks,
checkpoints and metrics are exactly those of ``SimpleTrainer``.
"""

from __future__ import annotations

import time

from detectron2.engine import SimpleTrainer

from ..precision import Precision


class PrecisionTrainer(SimpleTrainer):
    def __init__(self, model, data_loader, optimizer, precision: Precision, grad_scaler=None):
        super().__init__(model, data_loader, optimizer)
        if precision.needs_grad_scaler and grad_scaler is None:
            raise ValueError(f"{precision.name} training needs a grad scaler")
        self.precision = precision
        self.grad_scaler = grad_scaler

    def run_step(self):
        assert self.model.training, "[PrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with self.precision.autocast():
            loss_dict = self.model(data)
            losses = sum(loss_dict.values())

        self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self._write_metrics(loss_dict, data_time)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self._write_metrics(loss_dict, data_time)
            self.optimizer.step()
