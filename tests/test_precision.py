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
