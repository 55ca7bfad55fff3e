"""detector.prepacked: large convolutions with a weight reordered for oneDNN once, the same outputs."""

import copy

import pytest
import torch
from detectron2.layers import Conv2d

from detector import prepacked
from detector.prepacked import PrepackedConv2d, use_prepacked_convolutions


def _conv(channels: int = 512, stride: int = 1, dtype=torch.float32):
    torch.manual_seed(0)
    conv = Conv2d(channels, channels, 3, stride=stride, padding=1, bias=True, activation=torch.nn.functional.relu)
    return conv.eval().to(dtype).to(memory_format=torch.channels_last)


def _input(size: int, dtype=torch.float32, channels: int = 512):
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(size))
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


def _spy(monkeypatch):
    calls = []
    real = torch.mkldnn_convolution
    monkeypatch.setattr(torch, "mkldnn_convolution", lambda *a: calls.append(a[0].shape) or real(*a))
    return calls


@pytest.mark.parametrize("stride", [1, 2])
def test_same_output_as_detectron2s_conv_at_fp32_and_bf16(stride, monkeypatch):
    calls = _spy(monkeypatch)
    for dtype, tolerance in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        plain = _conv(stride=stride, dtype=dtype)
        ours = copy.deepcopy(plain)
        assert use_prepacked_convolutions(ours) == 1
        x = _input(8, dtype)
        with torch.inference_mode():
            expected, got = plain(x), ours(x)
        assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got.float(), expected.float(), rtol=tolerance, atol=tolerance)
    assert len(calls) == 2  # the oneDNN path ran, once per dtype


def test_under_bf16_autocast_an_fp32_input_meets_bf16_weights(monkeypatch):
    calls = _spy(monkeypatch)
    plain = _conv(dtype=torch.bfloat16)
    ours = copy.deepcopy(plain)
    use_prepacked_convolutions(ours)
    x = _input(4)  # fp32, as the first layer of a stage may hand it over
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = plain(x), ours(x)
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)
    assert len(calls) == 1


def test_large_maps_gradients_and_small_weights_take_torchs_path(monkeypatch):
    calls = _spy(monkeypatch)
    ours = _conv()
    use_prepacked_convolutions(ours)
    with torch.inference_mode():
        ours(_input(32))  # 1024 pixels > MAX_PIXELS
    out = ours(_input(4))  # gradients wanted
    assert out.requires_grad and calls == []
    small = torch.nn.Sequential(Conv2d(16, 16, 3, padding=1), _conv())
    assert use_prepacked_convolutions(small) == 1 and type(small[0]) is Conv2d
    assert prepacked.MIN_WEIGHTS > 16 * 16 * 9


def test_the_reordered_weight_follows_a_changed_weight_and_is_not_copied():
    ours = _conv()
    use_prepacked_convolutions(ours)
    x = _input(4)
    with torch.inference_mode():
        before = ours(x)
    with torch.no_grad():
        ours.weight.mul_(2)
        ours.bias.mul_(2)
    with torch.inference_mode():
        after = ours(x)
    torch.testing.assert_close(after, 2 * before, rtol=1e-4, atol=1e-4)  # relu(2z) = 2 relu(z)
    copied = copy.deepcopy(ours)
    assert type(copied) is PrepackedConv2d and copied._packed is None
    assert set(copied.state_dict()) == {"weight", "bias"}
    with torch.inference_mode():
        torch.testing.assert_close(copied(x), after)
