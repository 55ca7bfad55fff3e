"""Numeric precision of the model's arithmetic: one setting for training, evaluation and serving.

``auto`` | ``fp32`` | ``bf16`` | ``fp16``. ``auto`` chooses per machine and never picks something
slower than fp32:

- a CPU with native bf16 (AMX or AVX-512 BF16 on x86-64, the BF16 extension on Arm): ``bf16``
  autocast, the model in channels-last memory format (measured on a Xeon with AMX: training
  1.5x, one-image inference 1.8x faster than fp32);
- a CUDA GPU: ``fp16`` automatic mixed precision with a grad scaler;
- anything else: ``fp32``.

Autocast keeps the weights in fp32 (the master weights): a checkpoint written under one precision
resumes under any other, and a model directory serves under any precision.

On CPUs the process also flushes denormal floats to zero. Denormals appear in the gradients and
weight updates once the learning rate drops, and each one costs a microcode assist on x86: detectron2's
own trainer ran 2.1x faster with them flushed on the packaged config. Values that small change
nothing a detector computes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

from .errors import DetectorError

logger = logging.getLogger("detector.precision")

SETTINGS = ("auto", "fp32", "bf16", "fp16")


class PrecisionError(DetectorError):
    """A precision the machine cannot run, or one that does not exist."""


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16: what runs
    device: str  # cpu | cuda
    setting: str  # what was asked for (auto, ...)
    reason: str  # why auto chose it, for the logs

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.name]

    @property
    def mixed(self) -> bool:
        return self.name != "fp32"

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range."""
        return self.name == "fp16"

    @property
    def channels_last(self) -> bool:
        """NHWC weights: oneDNN's bf16 convolutions run in it natively on CPUs, cuDNN's tensor cores on GPUs."""
        return self.mixed

    def autocast(self):
        """The context the model's forward pass runs in (nothing for fp32)."""
        if not self.mixed:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(self.device, dtype=self.dtype)

    def describe(self) -> str:
        text = f"{self.name} on {self.device}"
        if self.setting == "auto":
            text += f" (auto: {self.reason})"
        if self.channels_last:
            text += ", channels-last"
        return text

    def as_json(self) -> dict:
        return {"precision": self.name, "setting": self.setting, "device": self.device, "channels_last": self.channels_last}


def _cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware, so bf16 is faster than fp32 rather than emulated."""
    flags = _cpu_flags()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve(setting: str, device: str, what: str = "precision") -> Precision:
    """The precision ``setting`` means on ``device`` (``cpu`` or ``cuda``); ``what`` names the setting in errors."""
    setting = (setting or "auto").strip().lower()
    if setting not in SETTINGS:
        raise PrecisionError(f"{what}={setting!r} is not a precision; expected one of: {', '.join(SETTINGS)}")
    device = "cuda" if str(device).startswith("cuda") else "cpu"
    if setting == "auto":
        if device == "cuda":
            return Precision("fp16", device, setting, "CUDA GPU: fp16 mixed precision")
        if cpu_has_native_bf16():
            return Precision("bf16", device, setting, "the CPU has native bf16 (AMX / AVX-512 BF16)")
        return Precision("fp32", device, setting, "the CPU has no native bf16")
    if setting == "fp16" and device == "cpu":
        raise PrecisionError(f"{what}='fp16' needs a CUDA GPU; on CPUs use 'bf16' (CPUs with AMX or AVX-512 BF16) or 'fp32'")
    if setting == "bf16" and device == "cuda" and not _cuda_bf16():
        raise PrecisionError(f"{what}='bf16' needs a GPU with bf16 support (Ampere or newer); use 'fp16' or 'fp32'")
    if setting == "bf16" and device == "cpu" and not cpu_has_native_bf16():
        logger.warning("%s='bf16' on a CPU without native bf16: it is emulated and likely slower than fp32", what)
    return Precision(setting, device, setting, "")


def flush_denormals(device: str) -> bool:
    """Flush denormal floats to zero in this thread and the threads it starts later (CPU only).

    Call it before torch starts its intra-op threads (before the first parallel operation): each thread
    has its own floating-point control register and new threads copy their creator's."""
    if str(device).startswith("cuda"):
        return False
    import torch

    return bool(torch.set_flush_denormal(True))


def prepare_model(model, precision: Precision):
    """The model in the memory format ``precision`` wants, with the CPU ROIAlign of
    :mod:`detector.roi_align` (the same arithmetic, about 5x faster with its backward pass) and the
    RPN of :mod:`detector.proposals` (a batch's proposals found in threads) and, for training on CPU,
    the last stage's large 3x3 convolutions over small maps as matrix products (:mod:`detector.matmul_conv`);
    the weights stay fp32. For training and inference alike; see also :func:`prepare_inference_model`."""
    from .matmul_conv import use_matmul_convolutions
    from .proposals import use_threaded_proposals
    from .roi_align import use_sparse_roi_align

    use_sparse_roi_align(model)
    use_threaded_proposals(model)
    use_matmul_convolutions(model)
    if precision.channels_last:
        import torch

        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_inference_model(model, precision: Precision):
    """``model`` (in eval mode) made ready for inference at ``precision``: :func:`prepare_model`, then

    - each batch norm that follows a convolution folded into that convolution's weights and bias
      (detectron2's ``Conv2d`` with ``norm``: BN or FrozenBN; eval mode reads only their statistics),
      so a ResNet's ~20 normalisation passes over the feature maps go;
    - under bf16 / fp16 autocast, the convolution and linear weights stored in that dtype once:
      autocast would otherwise cast every weight (all 19M of the small model, 44M of R50-FPN) again
      on every call, which was a quarter of a bf16 call on CPU. The result is the same: autocast
      runs these layers in that dtype from the same rounded weights;
    - on CPU, the largest convolutions' weights laid out for oneDNN once (:mod:`detector.prepacked`)
      instead of on every call.

    Only for inference: the training model keeps its fp32 master weights and its norms."""
    import torch

    if model.training:
        raise ValueError("prepare_inference_model needs a model in eval mode")
    model = prepare_model(model, precision)
    fold_batch_norms(model)
    if precision.mixed:
        layers = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
        for module in model.modules():
            if isinstance(module, layers):
                module.to(precision.dtype)
    if precision.device == "cpu":
        from .prepacked import use_prepacked_convolutions

        use_prepacked_convolutions(model)
    return model


def inference_copy(model, precision: Precision):
    """A copy of a training model prepared like a served one (:func:`prepare_inference_model`), so that
    training's metric lines and ``detector evaluate`` of the saved model compute the same numbers."""
    import copy

    return prepare_inference_model(copy.deepcopy(model).eval(), precision)


def fold_batch_norms(model) -> int:
    """Fold each detectron2 ``Conv2d``'s eval-mode BN / FrozenBN into the convolution; returns how many."""
    import torch
    from detectron2.layers import Conv2d, FrozenBatchNorm2d

    folded = 0
    for module in model.modules():
        norm = getattr(module, "norm", None)
        if not isinstance(module, Conv2d) or not isinstance(norm, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            continue
        if isinstance(norm, torch.nn.BatchNorm2d) and not norm.track_running_stats:
            continue  # normalises with the batch's own statistics even in eval mode
        with torch.no_grad():
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            shift = norm.bias - norm.running_mean * scale
            weight = module.weight * scale.view(-1, 1, 1, 1).to(module.weight.dtype)
            bias = shift if module.bias is None else module.bias * scale + shift
            module.weight.copy_(weight)
            if module.bias is None:
                module.bias = torch.nn.Parameter(bias.to(module.weight.dtype), requires_grad=False)
            else:
                module.bias.copy_(bias)
        module.norm = None
        folded += 1
    return folded
