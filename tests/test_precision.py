import pytest
import torch

from detector import precision as precision_module
from detector.precision import PrecisionError, cpu_has_native_bf16, resolve


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)


def test_auto_is_bf16_channels_last_on_a_cpu_with_native_bf16(bf16_cpu):
    chosen = resolve("auto", "cpu")
    assert (chosen.name, chosen.dtype, chosen.channels_last, chosen.needs_grad_scaler) == ("bf16", torch.bfloat16, True, False)
    assert "auto: the CPU has native bf16" in chosen.describe()


def test_auto_never_emulates_bf16(plain_cpu):
    chosen = resolve("auto", "cpu")
    assert (chosen.name, chosen.mixed, chosen.channels_last) == ("fp32", False, False)


def test_auto_on_a_gpu_is_fp16_with_a_grad_scaler(plain_cpu):
    chosen = resolve("auto", "cuda:1")
    assert (chosen.name, chosen.device, chosen.needs_grad_scaler) == ("fp16", "cuda", True)


@pytest.mark.parametrize("setting", ["FP32", " fp32 ", "fp32"])
def test_settings_are_read_loosely(setting):
    assert resolve(setting, "cpu").name == "fp32"


def test_unknown_and_impossible_settings_are_named(plain_cpu):
    with pytest.raises(PrecisionError, match=r"DETECTOR_PRECISION='half' is not a precision; expected one of: auto, fp32, bf16, fp16"):
        resolve("half", "cpu", "DETECTOR_PRECISION")
    with pytest.raises(PrecisionError, match=r"precision='fp16' needs a CUDA GPU"):
        resolve("fp16", "cpu")


def test_autocast_runs_matmuls_in_the_chosen_dtype(bf16_cpu):
    a = torch.ones(4, 4)
    with resolve("bf16", "cpu").autocast():
        assert (a @ a).dtype == torch.bfloat16
    with resolve("fp32", "cpu").autocast():
        assert (a @ a).dtype == torch.float32


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n\nprocessor\t: 1\n")
    real_path = precision_module.Path
    monkeypatch.setattr(precision_module, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setattr(precision_module.platform, "machine", lambda: "x86_64")
    cpu_has_native_bf16.cache_clear()
    try:
        assert cpu_has_native_bf16() is True
        cpuinfo.write_text("flags\t\t: fpu sse2 avx2\n")
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16() is False
    finally:
        cpu_has_native_bf16.cache_clear()


def test_the_model_keeps_fp32_master_weights_in_channels_last(bf16_cpu):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    model = precision_module.prepare_model(model, resolve("auto", "cpu"))
    weight = model[0].weight
    assert weight.dtype == torch.float32 and weight.is_contiguous(memory_format=torch.channels_last)


def _conv_bn_model(frozen: bool):
    from detectron2.layers import Conv2d, FrozenBatchNorm2d

    torch.manual_seed(0)
    norm = FrozenBatchNorm2d(6) if frozen else torch.nn.BatchNorm2d(6)
    norm.weight.data.uniform_(0.5, 2)
    norm.bias.data.uniform_(-1, 1)
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.2, 3)
    model = torch.nn.Sequential(
        Conv2d(3, 6, 3, padding=1, bias=False, norm=norm, activation=torch.nn.functional.relu),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 8 * 8, 4),
    )
    return model.eval()


@pytest.mark.parametrize("frozen", [False, True])
def test_inference_folds_each_norm_into_its_convolution(frozen):
    from detector.precision import prepare_inference_model

    model = _conv_bn_model(frozen)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
        prepared = prepare_inference_model(model, resolve("fp32", "cpu"))
        assert prepared[0].norm is None
        torch.testing.assert_close(prepared(x), expected, rtol=1e-5, atol=1e-5)


def test_inference_at_bf16_stores_the_weights_autocast_would_use(bf16_cpu):
    from detector.precision import prepare_inference_model

    model = _conv_bn_model(frozen=False)
    x = torch.randn(2, 3, 8, 8)
    chosen = resolve("bf16", "cpu")
    with torch.no_grad():
        expected = model(x)
        prepared = prepare_inference_model(model, chosen)
        assert {p.dtype for p in prepared.parameters()} == {torch.bfloat16}
        with chosen.autocast():
            got = prepared(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="eval mode"):
        prepare_inference_model(_conv_bn_model(frozen=False).train(), chosen)
