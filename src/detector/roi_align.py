"""ROIAlign for CPUs: torchvision's arithmetic, as two sparse matrix products.

torchvision's CPU ``roi_align`` backward recomputes every bilinear weight once per channel, in one
thread: with the packaged R18-FPN at 128 px it was a quarter of a bf16 training step (88 ms of 386).
The sampling is the same for every channel, so here it is computed once per ROI, bin and sample
point, as a sparse matrix ``S`` (one row per output bin, four taps per sample point, each weight
divided by the bin's sample count) over the feature map's pixels. Then

    forward   pooled[bin, c]  = S @ features[pixel, c]
    backward  grad[pixel, c]  = S.T @ grad_pooled[bin, c]

with the features read in channels-last order (no copy when the model is channels-last). The taps
follow torchvision's kernel exactly: ``aligned`` (the half-pixel shift), the adaptive grid when
``sampling_ratio`` is 0 (``ceil(roi_size / output_size)`` samples per bin side, per ROI), samples
outside ``[-1, size]`` contributing nothing, and coordinates clamped to the map. The products run in
fp32 whatever autocast does (torchvision's op does the same), and the ROI coordinates stay fp32:
detectron2's ``ROIAlign`` casts them to the features' dtype first, which under bf16 autocast rounds a
box edge at x=601 to 600 (at x=1000 bf16's step is 8 pixels).

Without a backward pass to come (inference, evaluation) the module calls torchvision's op (forward
alone it is about as fast: a gather-based pooler over all levels was tried and was no faster for one
image and slower for eight), still with fp32 coordinates; so does it on CUDA.
"""

from __future__ import annotations

import torch
from detectron2.layers import ROIAlign as Detectron2ROIAlign
from torchvision.ops import roi_align as torchvision_roi_align


def bin_taps(rois: torch.Tensor, spatial_scale: float, height: int, width: int, output_size, sampling_ratio: int, aligned: bool):
    """ROIAlign's bilinear taps, grouped by sample grid: yields ``(chosen, pixel, weight)`` per group.

    ``rois`` is (K, 5): batch index, then x1, y1, x2, y2 in image coordinates; ``height`` and
    ``width`` are the feature map's. ``chosen`` are the ROIs of the group; ``pixel`` and ``weight``
    are (k, ph, pw, gh, gw, 2, 2): for each bin and sample point its four neighbours,
    ``b * H * W + y * W + x`` (channels-last order), and their weights, already divided by the bin's
    sample count.
    """
    pooled_h, pooled_w = output_size
    rois = rois.detach().to(torch.float32)
    count = rois.shape[0]
    scale = float(spatial_scale)
    offset = 0.5 if aligned else 0.0
    start_x = rois[:, 1] * scale - offset
    start_y = rois[:, 2] * scale - offset
    roi_w = rois[:, 3] * scale - offset - start_x
    roi_h = rois[:, 4] * scale - offset - start_y
    if not aligned:  # the legacy op forces malformed ROIs to 1x1
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = roi_h / pooled_h
    bin_w = roi_w / pooled_w
    image = rois[:, 0].long()

    # One vectorised pass per distinct sample grid (one pass when sampling_ratio > 0).
    if sampling_ratio > 0:
        groups = [(sampling_ratio, sampling_ratio, torch.arange(count))] if count else []
    else:
        grid_h = torch.ceil(roi_h / pooled_h).long()
        grid_w = torch.ceil(roi_w / pooled_w).long()
        key = grid_h * (int(grid_w.max()) + 1 if count else 1) + grid_w
        groups = []
        for value in torch.unique(key).tolist():
            chosen = torch.nonzero(key == value).squeeze(1)
            groups.append((int(grid_h[chosen[0]]), int(grid_w[chosen[0]]), chosen))
    for gh, gw, chosen in groups:
        if gh <= 0 or gw <= 0:  # an empty ROI: its bins stay 0, as in torchvision
            continue
        k = chosen.numel()
        y_low, y_high, y_weights = _taps(start_y[chosen], bin_h[chosen], pooled_h, gh, height)  # (k, ph, gh, 2)
        x_low, x_high, x_weights = _taps(start_x[chosen], bin_w[chosen], pooled_w, gw, width)  # (k, pw, gw, 2)
        y_index = torch.stack([y_low, y_high], -1).view(k, pooled_h, 1, gh, 1, 2, 1)
        x_index = torch.stack([x_low, x_high], -1).view(k, 1, pooled_w, 1, gw, 1, 2)
        base = (image[chosen] * (height * width)).view(k, 1, 1, 1, 1, 1, 1)
        pixel = base + y_index * width + x_index
        weight = y_weights.view(k, pooled_h, 1, gh, 1, 2, 1) * x_weights.view(k, 1, pooled_w, 1, gw, 1, 2) / float(gh * gw)
        shape = (k, pooled_h, pooled_w, gh, gw, 2, 2)
        yield chosen, pixel.expand(shape), weight.expand(shape)


def sampling_matrix(rois: torch.Tensor, feature_shape, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool):
    """The sparse (bins x pixels) matrix of ROIAlign's bilinear taps, uncoalesced, in fp32.

    Bins are numbered ``k * ph * pw + i * pw + j``; pixels ``b * H * W + y * W + x`` (channels-last order).
    """
    batch, _, height, width = feature_shape
    pooled_h, pooled_w = output_size
    count = rois.shape[0]
    rows, cols, values = [], [], []
    for chosen, pixel, weight in bin_taps(rois, spatial_scale, height, width, output_size, sampling_ratio, aligned):
        k = chosen.numel()
        bins = (chosen.view(k, 1, 1) * (pooled_h * pooled_w)
                + torch.arange(pooled_h).view(1, pooled_h, 1) * pooled_w + torch.arange(pooled_w).view(1, 1, pooled_w))
        rows.append(bins.view(k, pooled_h, pooled_w, 1, 1, 1, 1).expand(pixel.shape).reshape(-1))
        cols.append(pixel.reshape(-1))
        values.append(weight.reshape(-1))
    if rows:
        indices = torch.stack([torch.cat(rows), torch.cat(cols)])
        values = torch.cat(values)
    else:
        indices = torch.zeros((2, 0), dtype=torch.long)
        values = torch.zeros((0,), dtype=torch.float32)
    return torch.sparse_coo_tensor(indices, values, (count * pooled_h * pooled_w, batch * height * width), check_invariants=False)


def _taps(start, bin_size, pooled: int, grid: int, size: int):
    """Per ROI, bin and sample along one axis: the two neighbouring pixels and their weights.

    Exactly torchvision's ``bilinear_interpolate`` along one axis: a sample outside [-1, size] gets
    weight 0, coordinates below 0 read pixel 0, and at the last pixel both neighbours are that pixel.
    """
    k = start.numel()
    bins = torch.arange(pooled, dtype=torch.float32).view(1, pooled, 1)
    samples = (torch.arange(grid, dtype=torch.float32) + 0.5).view(1, 1, grid)
    start = start.view(k, 1, 1)
    bin_size = bin_size.view(k, 1, 1)
    coordinate = start + bins * bin_size + samples * bin_size / grid
    inside = ((coordinate >= -1.0) & (coordinate <= size)).to(torch.float32)
    coordinate = coordinate.clamp(min=0.0)
    low = coordinate.long()
    last = low >= size - 1
    low = torch.where(last, torch.full_like(low, size - 1), low)
    high = torch.where(last, low, low + 1)
    coordinate = torch.where(last, low.to(torch.float32), coordinate)
    fraction = coordinate - low
    weights = torch.stack([(1.0 - fraction) * inside, fraction * inside], -1)
    return low, high, weights


class _SparseROIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, rois, spatial_scale, output_size, sampling_ratio, aligned):
        batch, channels, height, width = features.shape
        matrix = sampling_matrix(rois, features.shape, spatial_scale, output_size, sampling_ratio, aligned)
        ctx.matrix = matrix
        ctx.feature_shape = (batch, channels, height, width)
        ctx.dtype = features.dtype
        with torch.autocast("cpu", enabled=False):
            pixels = features.detach().permute(0, 2, 3, 1).reshape(-1, channels).to(torch.float32)
            pooled = torch.sparse.mm(matrix, pixels)
        k = rois.shape[0]
        return pooled.view(k, output_size[0], output_size[1], channels).permute(0, 3, 1, 2).to(features.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_pooled):
        batch, channels, height, width = ctx.feature_shape
        with torch.autocast("cpu", enabled=False):
            grad = grad_pooled.permute(0, 2, 3, 1).reshape(-1, channels).to(torch.float32)
            grad_pixels = torch.sparse.mm(ctx.matrix.t(), grad)
        grad_features = grad_pixels.view(batch, height, width, channels).permute(0, 3, 1, 2).to(ctx.dtype)
        return grad_features, None, None, None, None, None


class ROIAlign(Detectron2ROIAlign):
    """detectron2's ``ROIAlign`` with the CPU op above and fp32 ROI coordinates."""

    def forward(self, input, rois):
        assert rois.dim() == 2 and rois.size(1) == 5
        if input.is_quantized:
            input = input.dequantize()
        output_size = tuple(self.output_size) if isinstance(self.output_size, (tuple, list)) else (self.output_size,) * 2
        needs_grad = torch.is_grad_enabled() and input.requires_grad
        if input.device.type != "cpu" or input.dtype == torch.float64 or not needs_grad:
            # torchvision's forward alone is about as fast; in fp32 (fp64 for fp64), as its autocast
            # wrapper computes bf16 / fp16 features
            compute = torch.float64 if input.dtype == torch.float64 else torch.float32
            return torchvision_roi_align(input.to(compute), rois.to(compute), output_size, self.spatial_scale,
                                         self.sampling_ratio, self.aligned).to(input.dtype)
        return _SparseROIAlign.apply(input, rois, float(self.spatial_scale), output_size, int(self.sampling_ratio), bool(self.aligned))


def use_sparse_roi_align(model) -> int:
    """Replace every detectron2 ``ROIAlign`` in ``model`` (box, mask and keypoint poolers) with the
    module above; returns how many were replaced. The modules hold no weights."""
    replaced = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is Detectron2ROIAlign:
                fast = ROIAlign(child.output_size, child.spatial_scale, child.sampling_ratio, child.aligned)
                setattr(parent, name, fast)
                replaced += 1
    return replaced
