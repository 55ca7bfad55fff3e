"""Typed, validated training hyperparameters.

SageMaker delivers every hyperparameter as a string. Each field below declares its type; parsing
rejects unknown names and wrong types with a message naming the hyperparameter. Names starting with
``sagemaker_`` belong to SageMaker and are ignored.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..errors import HyperparameterError
from ..precision import SETTINGS

DEFAULT_MODEL = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Hyperparameters:
    model: str = DEFAULT_MODEL
    # Where training starts (see detector.training.weights); None: the pretrained channel, else the config's.
    weights: str | None = None
    max_iter: int | None = None
    num_epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    checkpoint_period: int = 500
    checkpoint_minutes: float = 10.0
    eval_period: int = 0
    # training_ap is measured on this many training images, a fixed sample (0: all of them).
    training_eval_images: int = 500
    seed: int = 42
    # auto | fp32 | bf16 | fp16 (see detector.precision); `amp` is its old name: true = auto, false = fp32.
    precision: str = "auto"
    amp: bool | None = None
    opts: tuple[str, ...] = field(default_factory=tuple)
    reset_checkpoints: bool = False
    training_annotations: str | None = None
    testing_annotations: str | None = None
    processes_per_host: int | None = None
    num_workers: int = 2
    log_period: int = 20

    @classmethod
    def from_strings(cls, raw: Mapping[str, str]) -> "Hyperparameters":
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, text in raw.items():
            if name.startswith("sagemaker_"):
                continue
            if name not in known:
                raise HyperparameterError(
                    f"hyperparameter {name!r} is not known; expected one of: {', '.join(sorted(known))}"
                )
            values[name] = _parse(name, text)
        if values.get("amp") is not None:
            if "precision" in values:
                raise HyperparameterError(
                    "hyperparameters 'amp' and 'precision' are both set; 'amp' is the old name of 'precision' "
                    "(amp=true is precision=auto, amp=false is precision=fp32): set only 'precision'"
                )
            values["precision"] = "auto" if values["amp"] else "fp32"
        params = cls(**values)
        params._validate()
        return params

    def _validate(self) -> None:
        positive = {
            "max_iter": self.max_iter,
            "num_epochs": self.num_epochs,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "checkpoint_period": self.checkpoint_period,
            "processes_per_host": self.processes_per_host,
            "log_period": self.log_period,
        }
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise HyperparameterError(f"hyperparameter {name!r} must be greater than 0, got {value}")
        for name in ("checkpoint_minutes", "eval_period", "num_workers", "training_eval_images"):
            if getattr(self, name) < 0:
                raise HyperparameterError(f"hyperparameter {name!r} must not be negative, got {getattr(self, name)}")
        if len(self.opts) % 2:
            raise HyperparameterError(
                f"hyperparameter 'opts' must hold KEY VALUE pairs, got an odd number of items: {' '.join(self.opts)}"
            )
        for key in self.opts[::2]:
            if not key[:1].isupper():
                raise HyperparameterError(
                    f"hyperparameter 'opts': {key!r} is not a detectron2 config key (like MODEL.ROI_HEADS.NUM_CLASSES)"
                )

    def run_length(self, dataset_size: int, batch_size: int, config_max_iter: int) -> int:
        """Iterations to train: the smaller of ``max_iter`` and ``num_epochs`` when both are given."""
        candidates = []
        if self.max_iter is not None:
            candidates.append(self.max_iter)
        if self.num_epochs is not None:
            candidates.append(max(1, math.ceil(self.num_epochs * dataset_size / batch_size)))
        return min(candidates) if candidates else config_max_iter


def _parse(name: str, text: str) -> Any:
    annotation = {f.name: f.type for f in fields(Hyperparameters)}[name]
    if not isinstance(text, str):
        text = str(text)
    value = text.strip()
    if name == "precision":
        if value.lower() not in SETTINGS:
            raise HyperparameterError(f"hyperparameter 'precision'={text!r}: expected one of {', '.join(SETTINGS)}")
        return value.lower()
    if name == "weights":  # "none" is a value here (from scratch); empty or "default" means not set
        return None if value.lower() in ("", "default") else value
    optional = "None" in annotation
    if optional and value.lower() in ("", "none", "null"):
        return None
    try:
        if annotation.startswith("int"):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if annotation.startswith("float"):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if annotation.startswith("bool"):
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise ValueError
        if annotation.startswith("tuple"):
            return tuple(shlex.split(value))
        if annotation.startswith("str"):
            if not value:
                raise ValueError
            return value
    except ValueError:
        expected = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a non-empty string"}
        kind = next((v for k, v in expected.items() if annotation.startswith(k)), annotation)
        raise HyperparameterError(f"hyperparameter {name!r}={text!r}: expected {kind}") from None
    raise AssertionError(f"unhandled hyperparameter type {annotation} for {name}")
