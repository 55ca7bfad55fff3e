"""detector.roi_align against torchvision's own op: same values and gradients, every edge the kernel has."""

import pytest
import torch
from detectron2.layers import ROIAlign as Detectron2ROIAlign
from detectron2.modeling.poolers import ROIPooler
from torchvision.ops import roi_align as torchvision_roi_align

from detector.roi_align import ROIAlign, sampling_matrix, use_sparse_roi_align


def _rois(generator, count, batch, extent):
    image = torch.randint(0, batch, (count, 1), generator=generator).float()
    corner = torch.rand(count, 2, generator=generator) * extent * 1.4 - 0.2 * extent  # some outside the map
    size = torch.rand(count, 2, generator=generator) * extent
    return torch.cat([image, corner, corner + size], 1)


def _value_and_grad(op, features, rois, grad_out_seed=0):
    features = features.detach().clone().requires_grad_()
    out = op(features, rois)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_out_seed))
    (grad,) = torch.autograd.grad((out * weights).sum(), features)
    return out.detach(), grad


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_values_and_gradients_match_torchvision(aligned, sampling_ratio, scale):
    generator = torch.Generator().manual_seed(int(aligned) * 100 + sampling_ratio * 10 + int(scale * 4))
    batch, channels, height, width = 3, 5, 13, 9
    features = torch.randn(batch, channels, height, width, generator=generator)
    rois = _rois(generator, 20, batch, width / scale)
    rois[0, 3:] = rois[0, 1:3]  # an empty box
    rois[1, 1:] = torch.tensor([0.0, 0.0, width / scale, height / scale])  # the whole map: the last pixel's clamp
    output_size = (7, 5)

    def reference(x, r):
        return torchvision_roi_align(x, r, output_size, scale, sampling_ratio, aligned)

    ours = ROIAlign(output_size, scale, sampling_ratio, aligned)
    expected, expected_grad = _value_and_grad(reference, features, rois)
    got, got_grad = _value_and_grad(ours, features, rois)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-5)


def test_channels_last_features_are_read_without_changing_the_result():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 8, 10, 10, generator=generator)
    rois = _rois(generator, 12, 2, 40)
    op = ROIAlign((7, 7), 0.25, 0, True)
    plain, plain_grad = _value_and_grad(op, features, rois)
    channels_last, channels_last_grad = _value_and_grad(op, features.to(memory_format=torch.channels_last), rois)
    torch.testing.assert_close(channels_last, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(channels_last_grad, plain_grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_under_bf16_autocast_the_boxes_keep_their_fp32_coordinates(training):
    """detectron2's module casts the ROIs to the features' dtype: bf16 rounds x=601 to 600."""
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(1, 4, 40, 40, generator=generator)
    rois = torch.tensor([[0.0, 601.0, 301.0, 633.0, 333.0]])
    expected = torchvision_roi_align(features, rois, (7, 7), 1 / 16, 0, True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = ROIAlign((7, 7), 1 / 16, 0, True)(features.bfloat16().requires_grad_(training), rois)
        theirs = Detectron2ROIAlign((7, 7), 1 / 16, 0, True)(features.bfloat16(), rois)
    assert ours.dtype == torch.bfloat16
    assert ours.requires_grad == training
    ours_error = (ours.float() - expected).abs().max().item()
    theirs_error = (theirs.float() - expected).abs().max().item()
    assert ours_error < 0.02  # bf16's rounding of the values only
    assert theirs_error > 3 * ours_error


def test_no_boxes_give_an_empty_result():
    features = torch.randn(2, 3, 5, 5, requires_grad=True)
    out = ROIAlign((7, 7), 1.0, 0, True)(features, torch.zeros((0, 5)))
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert features.grad.abs().sum() == 0


def test_the_matrix_has_four_taps_per_sample_and_rows_that_sum_to_one_inside_the_map():
    rois = torch.tensor([[0.0, 2.0, 2.0, 10.0, 6.0]])
    matrix = sampling_matrix(rois, (1, 1, 16, 16), 1.0, (2, 4), 2, True).coalesce()
    assert matrix.shape == (8, 256)
    assert matrix._nnz() <= 8 * 2 * 2 * 4
    torch.testing.assert_close(torch.sparse.sum(matrix, 1).to_dense(), torch.ones(8))


def test_every_pooler_of_a_model_is_replaced_and_pools_as_before():
    pooler = ROIPooler((7, 7), scales=(1 / 8, 1 / 16), sampling_ratio=0, pooler_type="ROIAlignV2")
    model = torch.nn.Sequential(pooler)
    generator = torch.Generator().manual_seed(5)
    features = [torch.randn(2, 6, 16, 16, generator=generator), torch.randn(2, 6, 8, 8, generator=generator)]
    from detectron2.structures import Boxes

    def boxes_of(count):
        corner = torch.rand(count, 2, generator=generator) * 100
        return Boxes(torch.cat([corner, corner + 4 + torch.rand(count, 2, generator=generator) * 100], 1))

    boxes = [boxes_of(9), boxes_of(4)]
    before = pooler(features, boxes)
    assert use_sparse_roi_align(model) == 2
    assert all(type(level) is ROIAlign for level in pooler.level_poolers)
    torch.testing.assert_close(pooler(features, boxes), before, rtol=0, atol=1e-5)
    assert use_sparse_roi_align(model) == 0


def test_bf16_features_without_autocast_pool_in_fp32():
    features = torch.randn(1, 16, 12, 12, generator=torch.Generator().manual_seed(7))
    rois = torch.tensor([[0.0, 3.0, 4.0, 60.0, 70.0], [0.0, 10.0, 10.0, 90.0, 40.0]])
    expected = torchvision_roi_align(features, rois, (7, 7), 1 / 8, 0, True)
    with torch.no_grad():
        got = ROIAlign((7, 7), 1 / 8, 0, True)(features.bfloat16(), rois)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=0.03)
