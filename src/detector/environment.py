"""The SageMaker container contract, read in one place.

Every path under ``/opt/ml`` and every environment variable the project honours is read here and
handed to the rest of the package as a plain frozen object. ``SAGEMAKER_BASE_DIR`` (the
sagemaker-training and sagemaker-inference toolkits' own variable) relocates ``/opt/ml`` so tests and
local runs work in a temporary directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from .errors import DetectorError

DEFAULT_BASE_DIR = "/opt/ml"


def base_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``/opt/ml``, or ``SAGEMAKER_BASE_DIR`` made absolute against the working directory.

    Absolute because it is handed on: multi-model-server, for one, looks a relative model path up
    under its model store ``/`` instead of the working directory."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR).absolute()


def training_failure_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where a training job's failure reason goes; known before the rest of the contract is read."""
    return base_dir(environ) / "output" / "failure"


def _read_json(path: Path, what: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DetectorError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    except OSError as e:
        raise DetectorError(f"{path}: cannot read {what} ({e.strerror})") from e


def _gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _int_env(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DetectorError(f"environment variable {name}={raw!r}: expected a whole number") from None


def _float_env(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise DetectorError(f"environment variable {name}={raw!r}: expected a number") from None


@dataclass(frozen=True)
class TrainingEnvironment:
    """What a SageMaker training job hands the container (``docker run IMAGE train``)."""

    base_dir: Path
    hyperparameters: dict[str, str]
    channels: dict[str, Path]
    current_host: str
    hosts: list[str]
    network_interface_name: str | None
    num_gpus: int
    master_addr: str
    master_port: int

    @property
    def config_dir(self) -> Path:
        return self.base_dir / "input" / "config"

    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.base_dir / "checkpoints"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return training_failure_file({"SAGEMAKER_BASE_DIR": str(self.base_dir)})

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def is_master_host(self) -> bool:
        return self.host_rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "TrainingEnvironment":
        environ = os.environ if environ is None else environ
        root = base_dir(environ)
        config_dir = root / "input" / "config"

        hyperparameters: dict[str, str] = {}
        hp_path = config_dir / "hyperparameters.json"
        if hp_path.exists():
            raw = _read_json(hp_path, "the hyperparameters file")
            if not isinstance(raw, dict):
                raise DetectorError(f"{hp_path}: expected a JSON object of name to string value")
            # SageMaker sends every value as a string; a hand-written file may not.
            hyperparameters = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}

        data_dir = root / "input" / "data"
        channels: dict[str, Path] = {}
        channel_config = config_dir / "inputdataconfig.json"
        if channel_config.exists():
            raw = _read_json(channel_config, "the input data configuration")
            if isinstance(raw, dict):
                channels = {name: data_dir / name for name in raw}
        if data_dir.is_dir():
            for entry in sorted(data_dir.iterdir()):
                if entry.is_dir():
                    channels.setdefault(entry.name, entry)

        current_host, hosts, interface = "algo-1", ["algo-1"], None
        resource_path = config_dir / "resourceconfig.json"
        if resource_path.exists():
            raw = _read_json(resource_path, "the resource configuration")
            if not isinstance(raw, dict) or "current_host" not in raw or "hosts" not in raw:
                raise DetectorError(f"{resource_path}: expected an object with 'current_host' and 'hosts'")
            current_host = str(raw["current_host"])
            hosts = sorted(str(h) for h in raw["hosts"])
            interface = raw.get("network_interface_name")
            if current_host not in hosts:
                raise DetectorError(f"{resource_path}: current_host {current_host!r} is not in hosts {hosts}")

        num_gpus = _int_env(environ, "SM_NUM_GPUS", None)
        if num_gpus is None:
            num_gpus = _gpu_count()

        return cls(
            base_dir=root,
            hyperparameters=hyperparameters,
            channels=channels,
            current_host=current_host,
            hosts=hosts,
            network_interface_name=interface,
            num_gpus=num_gpus,
            # On SageMaker every host resolves the others by name; locally the first host is this machine.
            master_addr=environ.get("DETECTOR_MASTER_ADDR") or hosts[0],
            master_port=_int_env(environ, "DETECTOR_MASTER_PORT", 29500) or 29500,
        )


@dataclass(frozen=True)
class ProcessingEnvironment:
    """Default locations of a SageMaker processing job (the evaluation step)."""

    base_dir: Path

    @property
    def processing_dir(self) -> Path:
        return self.base_dir / "processing"

    @property
    def model_input(self) -> Path:
        return self.processing_dir / "model"

    @property
    def test_input(self) -> Path:
        return self.processing_dir / "test"

    @property
    def evaluation_output(self) -> Path:
        return self.processing_dir / "evaluation"

    @property
    def failure_file(self) -> Path:
        # SageMaker shows the reason a processing container writes here.
        return self.base_dir / "output" / "message"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ProcessingEnvironment":
        return cls(base_dir=base_dir(environ))


def _bounded(name: str, value, low, high=None):
    if value < low or (high is not None and value > high):
        expected = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise DetectorError(f"environment variable {name}={value!r}: expected a value {expected}")
    return value


@dataclass(frozen=True)
class ServingEnvironment:
    """Settings of the hosting container (``docker run IMAGE serve``) and of ``detector predict``."""

    base_dir: Path
    port: int
    num_gpus: int
    workers: int
    response_timeout_s: int
    max_payload_mb: float
    score_threshold: float
    max_detections: int
    max_image_pixels: int
    max_batch_images: int = 32
    # Decoded pixels of one request, all its images together (each costs 3 bytes and more in the model).
    max_request_pixels: int = 80_000_000
    startup_timeout_s: int = 600
    # After the last worker holding the model dies: how long a replacement may take to load it.
    reload_timeout_s: int = 180
    default_accept: str = "application/json"
    # Set by `detector serve` for its workers: where they report that the model loaded (or why not).
    runtime_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ServingEnvironment":
        environ = os.environ if environ is None else environ
        num_gpus = _gpu_count()
        workers = _int_env(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", None)
        if workers is None:
            workers = num_gpus if num_gpus > 0 else 1

        def number(name: str, default, low, high=None, parse=_int_env):
            return _bounded(name, parse(environ, name, default), low, high)

        return cls(
            base_dir=base_dir(environ),
            port=number("SAGEMAKER_BIND_TO_PORT", 8080, 1, 32766),  # multi-model-server refuses higher ports
            num_gpus=num_gpus,
            workers=_bounded("SAGEMAKER_MODEL_SERVER_WORKERS", workers, 1),
            # multi-model-server reads SAGEMAKER_MODEL_SERVER_TIMEOUT in minutes; SageMaker gives up after 60 s.
            response_timeout_s=number("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", 50, 1),
            max_payload_mb=number("SAGEMAKER_MAX_PAYLOAD_IN_MB", 6.0, 0.001, parse=_float_env),
            score_threshold=number("DETECTOR_SCORE_THRESHOLD", 0.5, 0.0, 1.0, parse=_float_env),
            max_detections=number("DETECTOR_MAX_DETECTIONS", 100, 1),
            max_image_pixels=number("DETECTOR_MAX_IMAGE_PIXELS", 40_000_000, 1),
            max_batch_images=number("DETECTOR_MAX_BATCH_IMAGES", 32, 1),
            max_request_pixels=number("DETECTOR_MAX_REQUEST_PIXELS", 80_000_000, 1),
            startup_timeout_s=number("SAGEMAKER_STARTUP_TIMEOUT", 600, 1),
            reload_timeout_s=number("DETECTOR_WORKER_RELOAD_TIMEOUT", 180, 1),
            default_accept=environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or "application/json",
            runtime_dir=Path(environ["DETECTOR_SERVE_RUNTIME_DIR"]) if environ.get("DETECTOR_SERVE_RUNTIME_DIR") else None,
        )


def environ_with(overrides: Mapping[str, str], remove: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a child process: this process's, plus ``overrides``, less ``remove``."""
    return {k: v for k, v in {**os.environ, **overrides}.items() if k not in remove}
