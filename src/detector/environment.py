"""The SageMaker container contract, read in one place, and its writer twins.

Every path under ``/opt/ml`` and every environment variable the project honours is read here and
handed to the rest of the package as a plain frozen object. ``SAGEMAKER_BASE_DIR`` (the
sagemaker-training and sagemaker-inference toolkits' own variable) relocates ``/opt/ml`` so tests and
local runs work in a temporary directory.

The layout under the base dir is spelled once, in the constants below: the readers (``from_env``)
and the writers that lay a job out for local runs and tests (``write_training_job``,
``prepare_processing_job``, ``prepare_serving``) both use them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .errors import DetectorError

DEFAULT_BASE_DIR = "/opt/ml"

# -- The layout under the base dir, relative to it ---------------------------------------------------
CONFIG_DIR = Path("input", "config")
HYPERPARAMETERS_FILE = CONFIG_DIR / "hyperparameters.json"
INPUT_DATA_CONFIG_FILE = CONFIG_DIR / "inputdataconfig.json"
RESOURCE_CONFIG_FILE = CONFIG_DIR / "resourceconfig.json"
DATA_DIR = Path("input", "data")  # one folder per channel
MODEL_DIR = Path("model")  # training writes it, SageMaker archives it; hosting extracts the archive here
CHECKPOINT_DIR = Path("checkpoints")
OUTPUT_DIR = Path("output")
OUTPUT_DATA_DIR = OUTPUT_DIR / "data"
TRAINING_FAILURE_FILE = OUTPUT_DIR / "failure"  # a training job's failure reason
PROCESSING_FAILURE_FILE = OUTPUT_DIR / "message"  # a processing job's failure reason
PROCESSING_DIR = Path("processing")
PROCESSING_MODEL_DIR = PROCESSING_DIR / "model"
PROCESSING_TEST_DIR = PROCESSING_DIR / "test"
PROCESSING_EVALUATION_DIR = PROCESSING_DIR / "evaluation"
MODEL_ARCHIVE = "model.tar.gz"

# What a training job without resourceconfig.json (a local run) is: one host.
DEFAULT_HOST = "algo-1"


def base_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``/opt/ml``, or ``SAGEMAKER_BASE_DIR`` made absolute against the working directory.

    Absolute because it is handed on: multi-model-server, for one, looks a relative model path up
    under its model store ``/`` instead of the working directory."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR).absolute()


def training_failure_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where a training job's failure reason goes; known before the rest of the contract is read."""
    return TrainingLayout(base_dir(environ)).failure_file


def serving_model_dir(base: Path) -> Path:
    """The model directory of a hosting container whose base dir is ``base``."""
    return Path(base) / MODEL_DIR


def _read_json(path: Path, what: str) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DetectorError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    except OSError as e:
        raise DetectorError(f"{path}: cannot read {what} ({e.strerror})") from e


def _write_json(path: Path, data: object, sort_keys: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n", encoding="utf-8")


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


# -- Training ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingLayout:
    """Where a SageMaker training job's files are under ``base_dir``."""

    base_dir: Path

    @property
    def config_dir(self) -> Path:
        return self.base_dir / CONFIG_DIR

    @property
    def hyperparameters_file(self) -> Path:
        return self.base_dir / HYPERPARAMETERS_FILE

    @property
    def input_data_config_file(self) -> Path:
        return self.base_dir / INPUT_DATA_CONFIG_FILE

    @property
    def resource_config_file(self) -> Path:
        return self.base_dir / RESOURCE_CONFIG_FILE

    @property
    def data_dir(self) -> Path:
        return self.base_dir / DATA_DIR

    def channel_dir(self, name: str) -> Path:
        return self.data_dir / name

    @property
    def model_dir(self) -> Path:
        return self.base_dir / MODEL_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.base_dir / CHECKPOINT_DIR

    @property
    def output_dir(self) -> Path:
        return self.base_dir / OUTPUT_DIR

    @property
    def output_data_dir(self) -> Path:
        return self.base_dir / OUTPUT_DATA_DIR

    @property
    def failure_file(self) -> Path:
        return self.base_dir / TRAINING_FAILURE_FILE


@dataclass(frozen=True)
class TrainingEnvironment(TrainingLayout):
    """What a SageMaker training job hands the container (``docker run IMAGE train``)."""

    hyperparameters: dict[str, str]
    channels: dict[str, Path]
    current_host: str
    hosts: list[str]
    network_interface_name: str | None
    num_gpus: int
    master_addr: str
    master_port: int

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def is_master_host(self) -> bool:
        return self.host_rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "TrainingEnvironment":
        environ = os.environ if environ is None else environ
        layout = TrainingLayout(base_dir(environ))

        hyperparameters: dict[str, str] = {}
        hp_path = layout.hyperparameters_file
        if hp_path.exists():
            raw = _read_json(hp_path, "the hyperparameters file")
            if not isinstance(raw, dict):
                raise DetectorError(f"{hp_path}: expected a JSON object of name to string value")
            # SageMaker sends every value as a string; a hand-written file may not.
            hyperparameters = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}

        input_data_config: dict = {}
        channel_config = layout.input_data_config_file
        if channel_config.exists():
            raw = _read_json(channel_config, "the input data configuration")
            if isinstance(raw, dict):
                input_data_config = {str(name): value for name, value in raw.items()}

        resource_config: dict = {"current_host": DEFAULT_HOST, "hosts": [DEFAULT_HOST]}
        resource_path = layout.resource_config_file
        if resource_path.exists():
            raw = _read_json(resource_path, "the resource configuration")
            if not isinstance(raw, dict) or "current_host" not in raw or "hosts" not in raw:
                raise DetectorError(f"{resource_path}: expected an object with 'current_host' and 'hosts'")
            current_host = str(raw["current_host"])
            hosts = sorted(str(h) for h in raw["hosts"])
            if current_host not in hosts:
                raise DetectorError(f"{resource_path}: current_host {current_host!r} is not in hosts {hosts}")
            resource_config = {**raw, "current_host": current_host, "hosts": hosts}

        current_host = resource_config["current_host"]
        hosts = resource_config["hosts"]
        interface = resource_config.get("network_interface_name")
        master_host = hosts[0]

        channels = {name: layout.channel_dir(name) for name in input_data_config}
        if layout.data_dir.is_dir():
            for entry in sorted(layout.data_dir.iterdir()):
                if entry.is_dir():
                    channels.setdefault(entry.name, entry)

        num_gpus = _int_env(environ, "SM_NUM_GPUS", None)
        if num_gpus is None:
            num_gpus = _gpu_count()

        return cls(
            base_dir=layout.base_dir,
            hyperparameters=hyperparameters,
            channels=channels,
            current_host=current_host,
            hosts=hosts,
            network_interface_name=interface,
            num_gpus=num_gpus,
            # On SageMaker every host resolves the others by name; locally the first host is this machine.
            master_addr=environ.get("DETECTOR_MASTER_ADDR") or master_host,
            master_port=_int_env(environ, "DETECTOR_MASTER_PORT", 29500) or 29500,
        )


def write_hyperparameters(base: Path, hyperparameters: Mapping[str, object]) -> Path:
    """``hyperparameters.json`` under ``base`` as SageMaker writes it: every value a string."""
    path = TrainingLayout(Path(base)).hyperparameters_file
    _write_json(path, {str(name): str(value) for name, value in hyperparameters.items()}, sort_keys=True)
    return path


def write_training_job(
    base: Path,
    hyperparameters: Mapping[str, object],
    channels: Mapping[str, Path | None] | Iterable[str] = (),
    *,
    hosts: Iterable[str] = (DEFAULT_HOST,),
    current_host: str | None = None,
    network_interface_name: str | None = None,
) -> Path:
    """Lay a SageMaker training job out under ``base``; ``TrainingEnvironment.from_env`` reads it back.

    ``channels`` maps a channel name to the folder to copy into ``input/data/<name>`` (not copied
    again when that folder exists, so a rerun keeps the first copy), or to None, or is a list of
    names: those channels' folders are only created (filled by the caller). Every channel is
    declared in ``inputdataconfig.json``; ``resourceconfig.json`` lists ``hosts`` as given."""
    layout = TrainingLayout(Path(base))
    sources = dict(channels) if isinstance(channels, Mapping) else {name: None for name in channels}
    hosts = [str(h) for h in hosts]
    current_host = hosts[0] if current_host is None else current_host
    if current_host not in hosts:
        raise ValueError(f"current_host {current_host!r} is not in hosts {hosts}")
    for name, source in sources.items():
        target = layout.channel_dir(name)
        if source is None:
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            shutil.copytree(source, target)
    write_hyperparameters(layout.base_dir, hyperparameters)
    _write_json(layout.input_data_config_file, {name: {"TrainingInputMode": "File"} for name in sources})
    resource_config: dict[str, object] = {"current_host": current_host, "hosts": hosts}
    if network_interface_name is not None:
        resource_config["network_interface_name"] = network_interface_name
    _write_json(layout.resource_config_file, resource_config)
    return layout.base_dir


# -- Processing (evaluation) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessingEnvironment:
    """Default locations of a SageMaker processing job (the evaluation step)."""

    base_dir: Path

    @property
    def processing_dir(self) -> Path:
        return self.base_dir / PROCESSING_DIR

    @property
    def model_input(self) -> Path:
        return self.base_dir / PROCESSING_MODEL_DIR

    @property
    def model_archive(self) -> Path:
        return self.model_input / MODEL_ARCHIVE

    @property
    def test_input(self) -> Path:
        return self.base_dir / PROCESSING_TEST_DIR

    @property
    def evaluation_output(self) -> Path:
        return self.base_dir / PROCESSING_EVALUATION_DIR

    @property
    def failure_file(self) -> Path:
        # SageMaker shows the reason a processing container writes here.
        return self.base_dir / PROCESSING_FAILURE_FILE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ProcessingEnvironment":
        return cls(base_dir=base_dir(environ))


def prepare_processing_job(base: Path, model_archive: Path, test_channel: Path) -> ProcessingEnvironment:
    """Lay the evaluation processing job's inputs out under ``base``: the model archive in
    ``processing/model`` and a copy of the test channel in ``processing/test``."""
    env = ProcessingEnvironment(Path(base))
    env.model_input.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_archive, env.model_archive)
    shutil.copytree(test_channel, env.test_input, dirs_exist_ok=True)
    return env


# -- Hosting -------------------------------------------------------------------------------------------


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
        return serving_model_dir(self.base_dir)

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


def prepare_serving(base: Path, model_archive: Path) -> Path:
    """Lay a hosting container's model out under ``base``: ``model.tar.gz`` extracted (safely) into the
    model directory, as SageMaker does before ``serve`` starts. Returns that directory."""
    from .model_dir import extract_model_archive

    return extract_model_archive(model_archive, serving_model_dir(base))


# -- Child processes -----------------------------------------------------------------------------------


def environ_with(overrides: Mapping[str, str], remove: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a child process: this process's, plus ``overrides``, less ``remove``."""
    return {k: v for k, v in {**os.environ, **overrides}.items() if k not in remove}


def path_list(name: str, *first: str) -> str:
    """``first`` ahead of the entries of this process's path-list variable ``name`` (``PATH``,
    ``PYTHONPATH``), for a child's environment; empty entries are left out."""
    return os.pathsep.join(p for p in (*first, os.environ.get(name, "")) if p)
