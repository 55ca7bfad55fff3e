"""Large 3x3 convolutions over small feature maps as one matrix product, for training on CPU.

A ResNet's last stage holds its largest convolutions (2.4M weights each) and, for small images, its
smallest maps: 4x4 for a 128 px image. There, oneDNN's convolution spends its time on the weight
(reordering it, and computing its gradient through a kernel made for large maps), not on arithmetic.
Written as a matrix product over the nine shifted copies of the map, forward and backward together
took 4.7 ms instead of 18.0 for a 512-channel convolution at bf16, batch 8 (2 cores, AMX, 2026-12-02),
and 5.1 instead of 10.7 for the stride-2 one that opens the stage. The matrix product loses as the
map grows (2.5x slower at 16x16), hence the limits. Only these layers change:

- 3x3 convolutions with padding 1 and no dilation or groups, of at least :data:`MIN_WEIGHTS` weights;
- on CPU, when a gradient is wanted (training); inference has :mod:`detector.prepacked`;
- at most :data:`MAX_ROWS` output pixels in the whole batch (the rows of the product), per dtype.

The arithmetic is the same convolution in the same dtype: products summed in fp32 and rounded once,
the input gradient's nine overlapping parts summed in fp32 too. The weights stay fp32 master weights
and the state dict is unchanged.
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d
from torch.autograd.function import once_differentiable

MIN_WEIGHTS = 1_000_000
# Output pixels over the batch where the product still wins (measured, forward and backward, batch 8):
# bf16 0.36x at 128 rows, 0.74x at 512, 2.5x at 2048; fp32 0.63x at 128, 1.06x at 512.
MAX_ROWS = {torch.bfloat16: 512, torch.float32: 256}


def cpu_compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a CPU layer computes ``x`` in: autocast's where it is on, else ``x``'s own."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def _output_size(size, stride):
    return (size[0] - 1) // stride[0] + 1, (size[1] - 1) // stride[1] + 1


def _taps(size, stride):
    """The output size, and the nine (row, column) windows of a padded NHWC map that each output pixel
    reads, by tap."""
    out = _output_size(size, stride)
    return out, [
        (slice(ky, ky + stride[0] * (out[0] - 1) + 1, stride[0]), slice(kx, kx + stride[1] * (out[1] - 1) + 1, stride[1]))
        for ky in range(3)
        for kx in range(3)
    ]


class _Conv3x3(torch.autograd.Function):
    """y = conv2d(x, weight, stride, padding=1) computed in ``dtype`` as columns @ weight.T.

    The columns of each output pixel follow the weight's own memory, so that the weight is the matrix
    without a copy and its gradient comes out in the weight's layout: (tap, channel) for a channels-last
    weight, (channel, tap) for a contiguous one."""

    @staticmethod
    def forward(ctx, x, weight, stride, dtype):
        n, c, h, w = x.shape
        (ho, wo), taps = _taps((h, w), stride)
        tap_major = weight.is_contiguous(memory_format=torch.channels_last)
        padded = x.new_zeros((n, h + 2, w + 2, c), dtype=dtype)
        padded[:, 1 : h + 1, 1 : w + 1] = x.permute(0, 2, 3, 1)
        windows = [padded[:, rows, cols] for rows, cols in taps]
        columns = (torch.cat(windows, dim=-1) if tap_major else torch.stack(windows, dim=-1)).view(n * ho * wo, 9 * c)
        matrix = weight.to(dtype)
        matrix = (matrix.permute(0, 2, 3, 1) if tap_major else matrix).reshape(weight.shape[0], 9 * c)
        ctx.save_for_backward(columns, matrix)
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        ctx.shapes = (x.shape, x.dtype, weight.dtype, stride, tap_major, channels_last)
        y = (columns @ matrix.t()).view(n, ho, wo, -1).permute(0, 3, 1, 2)  # channels-last memory
        return y if channels_last else y.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        columns, matrix = ctx.saved_tensors
        (n, c, h, w), x_dtype, weight_dtype, stride, tap_major, channels_last = ctx.shapes
        grad = grad.to(matrix.dtype).permute(0, 2, 3, 1).reshape(columns.shape[0], -1)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = grad.t() @ columns
            if tap_major:
                grad_weight = grad_weight.view(-1, 3, 3, c).permute(0, 3, 1, 2)  # channels-last, as the weight
            grad_weight = grad_weight.reshape(-1, c, 3, 3).to(weight_dtype)
        if ctx.needs_input_grad[0]:
            (ho, wo), taps = _taps((h, w), stride)
            parts = (grad @ matrix).view((n, ho, wo, 9, c) if tap_major else (n, ho, wo, c, 9))
            total = parts.new_zeros((n, h + 2, w + 2, c), dtype=torch.float32)
            for tap, (rows, cols) in enumerate(taps):
                total[:, rows, cols] += parts[:, :, :, tap] if tap_major else parts[..., tap]
            layout = torch.channels_last if channels_last else torch.contiguous_format
            grad_x = total[:, 1 : h + 1, 1 : w + 1].permute(0, 3, 1, 2).to(x_dtype, memory_format=layout)
        return grad_x, grad_weight, None, None


class MatmulConv2d(Conv2d):
    """detectron2's ``Conv2d`` (norm and activation included) with the matrix-product path above."""

    def _matmul_dtype(self, x: torch.Tensor):
        """The dtype to compute in, or None where torch's convolution is used."""
        if x.device.type != "cpu" or self.weight.device.type != "cpu" or x.dim() != 4:
            return None
        if not torch.is_grad_enabled() or not (self.weight.requires_grad or x.requires_grad):
            return None
        dtype = cpu_compute_dtype(x)
        if dtype not in MAX_ROWS or self.weight.dtype != torch.float32 and self.weight.dtype != dtype:
            return None
        ho, wo = _output_size(x.shape[-2:], self.stride)
        return dtype if 0 < x.shape[0] * ho * wo <= MAX_ROWS[dtype] else None

    def forward(self, x):
        dtype = self._matmul_dtype(x)
        if dtype is None:
            return super().forward(x)
        y = _Conv3x3.apply(x, self.weight, tuple(self.stride), dtype)
        if self.bias is not None:
            y = y + self.bias.to(dtype).view(1, -1, 1, 1)
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        return y


def _eligible(module) -> bool:
    return (
        type(module) is Conv2d
        and module.weight.numel() >= MIN_WEIGHTS
        and tuple(module.kernel_size) == (3, 3)
        and tuple(module.padding) == (1, 1)
        and tuple(module.dilation) == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def use_matmul_convolutions(model) -> int:
    """Make each large 3x3 detectron2 ``Conv2d`` of ``model`` a :class:`MatmulConv2d`; returns how many."""
    changed = 0
    for module in model.modules():
        if _eligible(module):
            module.__class__ = MatmulConv2d
            changed += 1
    return changed
