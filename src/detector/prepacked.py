"""Convolutions with their weights laid out for oneDNN once, for inference on CPU.

On CPU, torch hands a convolution's weight to oneDNN as a plain tensor, and oneDNN reorders it into
its blocked layout on every call. Where the weight is large and the feature map small (a ResNet's
last stage: 2.4M weights over 4x4 maps for a 128 px image), that reorder costs more than the
arithmetic: one 512-channel 3x3 convolution at bf16 took 1000 us, and 454 us with the weight reordered
once (2 cores, AMX, 2026-12-01). For small convolutions the conversions of the activations to and from
oneDNN's layout cost more than they save, so only these layers change:

- weights of at least :data:`MIN_WEIGHTS` elements, on CPU, in inference (no gradient wanted);
- feature maps of at most :data:`MAX_PIXELS` pixels; a larger image takes torch's path, call by call.

The result is the same convolution (identical detections on the demo model). The reordered weight is
made on first use and again whenever the weight changes (its version counter), and it is not part of
the state dict.
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d

from .matmul_conv import MatmulConv2d, cpu_compute_dtype

MIN_WEIGHTS = 1_000_000
MAX_PIXELS = 16 * 16


class PrepackedConv2d(Conv2d):
    """detectron2's ``Conv2d`` (norm and activation included) with the oneDNN path above."""

    _packed = None
    _packed_key = None

    def _use_packed(self, x: torch.Tensor) -> bool:
        if x.device.type != "cpu" or self.weight.device.type != "cpu" or x.dim() != 4:
            return False
        if torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad):
            return False
        if x.shape[-2] * x.shape[-1] > MAX_PIXELS or self.padding_mode != "zeros":
            return False
        return cpu_compute_dtype(x) == self.weight.dtype and self.weight.dtype in (torch.float32, torch.bfloat16)

    def _packed_weight(self) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype)
        if self._packed is None or self._packed_key != key:
            self._packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.detach().to_mkldnn(), list(self.padding), list(self.stride), list(self.dilation), self.groups
            )
            self._packed_key = key
        return self._packed

    def forward(self, x):
        if not self._use_packed(x):
            return super().forward(x)
        bias = None if self.bias is None else self.bias.detach().to(self.weight.dtype)
        y = torch.mkldnn_convolution(
            x.to(self.weight.dtype).to_mkldnn(), self._packed_weight(), bias,
            list(self.padding), list(self.stride), list(self.dilation), self.groups,
        ).to_dense()
        if x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        return y

    def __getstate__(self):  # a copy or pickle reorders again on first use
        state = self.__dict__.copy()
        state.pop("_packed", None)
        state.pop("_packed_key", None)
        return state


def use_prepacked_convolutions(model) -> int:
    """Make each large detectron2 ``Conv2d`` of ``model`` a :class:`PrepackedConv2d`; returns how many.

    A :class:`~detector.matmul_conv.MatmulConv2d` (training's path for the same layers, kept by a copy of a
    training model) becomes one too."""
    changed = 0
    for module in model.modules():
        if type(module) in (Conv2d, MatmulConv2d) and module.weight.numel() >= MIN_WEIGHTS:
            module.__class__ = PrepackedConv2d
            changed += 1
    return changed
