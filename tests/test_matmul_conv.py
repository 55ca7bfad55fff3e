"""detector.matmul_conv: large 3x3 convolutions over small maps as a matrix product in training, the same
convolution (outputs and gradients), and torch's path everywhere else."""

import copy

import pytest
import torch
from detectron2.layers import Conv2d, get_norm

from detector import matmul_conv
from detector.matmul_conv import MatmulConv2d, use_matmul_convolutions
from detector.prepacked import PrepackedConv2d, use_prepacked_convolutions


def _conv(cin=512, cout=512, stride=1, bias=False, norm=True):
    torch.manual_seed(0)
    conv = Conv2d(
        cin, cout, 3, stride=stride, padding=1, bias=bias,
        norm=get_norm("BN", cout) if norm else None, activation=torch.nn.functional.relu,
    )
    return conv.train().to(memory_format=torch.channels_last)


def _input(size, channels=512, batch=4, channels_last=True):
    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(size))
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _spy(monkeypatch):
    calls = []
    real = matmul_conv._Conv3x3.apply
    monkeypatch.setattr(matmul_conv._Conv3x3, "apply", lambda *a: calls.append(a[0].shape) or real(*a))
    return calls


def _step(conv, x, autocast):
    """Output, input gradient and weight gradient of one forward and backward pass."""
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = conv(x)
    y.float().square().mean().backward()
    return y, x.grad, conv.weight.grad


@pytest.mark.parametrize("stride,cin,bias,norm", [(1, 512, False, True), (2, 256, True, False), (1, 512, True, True)])
def test_outputs_and_gradients_equal_torchs_convolution_at_fp32(stride, cin, bias, norm, monkeypatch):
    calls = _spy(monkeypatch)
    plain = _conv(cin, stride=stride, bias=bias, norm=norm)
    ours = copy.deepcopy(plain)
    assert use_matmul_convolutions(ours) == 1 and type(ours) is MatmulConv2d
    x = _input(8, cin)
    expected, got = _step(plain, x, False), _step(ours, x, False)
    assert calls == [x.shape]  # the matrix product ran
    for want, have in zip(expected, got):
        assert have.dtype == want.dtype and have.shape == want.shape
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    if bias:
        torch.testing.assert_close(ours.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.norm.running_mean, plain.norm.running_mean) if norm else None


@pytest.mark.parametrize("stride", [1, 2])
def test_under_bf16_autocast_the_same_convolution_in_bf16_with_fp32_weight_gradients(stride, monkeypatch):
    calls = _spy(monkeypatch)
    cin = 512 if stride == 1 else 256
    plain = _conv(cin, stride=stride, norm=False)
    ours = copy.deepcopy(plain)
    use_matmul_convolutions(ours)
    for x in (_input(4, cin).bfloat16(), _input(4, cin)):  # a stage may hand over bf16 or fp32
        plain.zero_grad(), ours.zero_grad()
        expected, got = _step(plain, x, True), _step(ours, x, True)
        assert got[0].dtype == torch.bfloat16 and got[1].dtype == x.dtype and got[2].dtype == torch.float32
        for want, have in zip(expected, got):
            scale = float(want.detach().float().abs().max())
            torch.testing.assert_close(have.float(), want.float(), rtol=0, atol=2e-2 * scale)
    assert len(calls) == 2


def test_gradients_come_back_in_the_layouts_of_the_input_and_the_weight():
    plain = _conv(norm=False)
    ours = copy.deepcopy(plain)
    use_matmul_convolutions(ours)
    _, _, grad_weight = _step(ours, _input(4), False)
    assert grad_weight.is_contiguous(memory_format=torch.channels_last)  # as the weight: no copy to match
    for module in (plain, ours):
        module.to(memory_format=torch.contiguous_format).zero_grad()
    x = _input(4, channels_last=False)
    expected, got = _step(plain, x, False), _step(ours, x, False)
    assert got[0].is_contiguous() and got[1].is_contiguous() and got[2].is_contiguous()
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-4)


def test_large_maps_no_gradient_and_other_convolutions_take_torchs_path(monkeypatch):
    calls = _spy(monkeypatch)
    ours = _conv(norm=False)
    use_matmul_convolutions(ours)
    ours(_input(16, batch=2).requires_grad_())  # 512 rows > MAX_ROWS[fp32]
    with torch.no_grad():
        ours(_input(4))
    ours.weight.requires_grad_(False)
    ours(_input(4))  # nothing wants a gradient
    assert calls == []
    ours.weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours(_input(16, batch=2))  # 512 rows: within MAX_ROWS[bf16]
    assert len(calls) == 1
    small = torch.nn.Sequential(
        Conv2d(16, 16, 3, padding=1), Conv2d(512, 512, 1), Conv2d(256, 512, 3, padding=2, dilation=2), _conv()
    )
    assert use_matmul_convolutions(small) == 1 and [type(m) for m in small[:3]] == [Conv2d] * 3
    assert matmul_conv.MIN_WEIGHTS > 16 * 16 * 9


def test_state_dict_is_unchanged_and_inference_gets_the_prepacked_path():
    plain = _conv()
    ours = copy.deepcopy(plain)
    use_matmul_convolutions(ours)
    assert ours.state_dict().keys() == plain.state_dict().keys()
    served = copy.deepcopy(ours).eval()
    assert use_prepacked_convolutions(served) == 1 and type(served) is PrepackedConv2d
    with torch.inference_mode():
        torch.testing.assert_close(served(_input(4)), plain.eval()(_input(4)), rtol=1e-4, atol=1e-4)


def test_the_packaged_small_model_trains_its_last_stage_through_the_product_and_serves_it_prepacked(monkeypatch):
    from detectron2.modeling import build_model

    from detector.precision import inference_copy, prepare_model, resolve
    from detector.training.config import load_model_config

    cfg = load_model_config("detector/faster_rcnn_R_18_FPN_128px.yaml")
    cfg.MODEL.DEVICE = "cpu"
    model = prepare_model(build_model(cfg), resolve("fp32", "cpu"))
    swapped = [name for name, m in model.named_modules() if type(m) is MatmulConv2d]
    assert swapped == ["backbone.bottom_up.res5.0.conv1", "backbone.bottom_up.res5.0.conv2",
                       "backbone.bottom_up.res5.1.conv1", "backbone.bottom_up.res5.1.conv2"]
    calls = _spy(monkeypatch)
    model.backbone(torch.randn(2, 3, 128, 128))["p3"].sum().backward()
    assert calls and all(shape[-1] in (8, 4) for shape in calls)
    served = inference_copy(model.eval(), resolve("fp32", "cpu"))
    assert {type(m) for m in served.modules()}.isdisjoint({MatmulConv2d})
    assert sum(type(m) is PrepackedConv2d for m in served.modules()) == 4
