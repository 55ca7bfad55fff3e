"""The SageMaker container contract, read in one place, and its writer twins.

Every path under ``/opt/ml`` and every environment variable the project honours is read here and
handed to the rest of the package as a plain frozen object. ``SAGEMAKER_BASE_DIR`` (the
sagemaker-training and sagemaker-inference toolkits' own variable) relocates ``/opt/ml`` so tests and
local runs work in a temporary directory.

The layout under the base dir is spelled once, in the constants below: the readers (``from_env``)
and the writers that lay a job out for local runs and tests (``write_training_job``,
``prepare_processing_job``, ``prepare_serving``) both use them.

The training contract's files are read here (so a broken file is named precisely) and then
interpreted by the sagemaker-training toolkit (``sagemaker_training.environment``): hosts, current
host, network interface, the rendezvous host and the channel names. The toolkit is imported lazily,
by ``TrainingEnvironment.from_env`` only: the serving image does not install it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
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


def _weights_cache(environ: Mapping[str, str]) -> Path:
    """DETECTOR_WEIGHTS_CACHE, else ~/.cache/detector/weights (made absolute)."""
    if environ.get("DETECTOR_WEIGHTS_CACHE"):
        return Path(environ["DETECTOR_WEIGHTS_CACHE"]).absolute()
    home = environ.get("HOME") or tempfile.gettempdir()
    return Path(home, ".cache", "detector", "weights").absolute()


def export_environ(values: Mapping[str, str]) -> None:
    """Set ``values`` in this process's environment, where no value is set already (a user's choice
    stands): what child processes started afterwards inherit."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


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


# -- The sagemaker-training toolkit --------------------------------------------------------------------


@contextmanager
def _os_environ_kept():
    """Undo whatever the block does to ``os.environ``: the toolkit sets variables at import
    (``SAGEMAKER_BASE_DIR`` when it finds no ``/opt/ml``) and in its constructor (``CURRENT_HOST``,
    ``SAGEMAKER_JOB_NAME``, ``SAGEMAKER_REGION``)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - saved.keys():
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


def _toolkit():
    """``sagemaker_training.environment``, imported so that its import-time setup touches nothing of ours.

    At import the toolkit computes its paths from ``SAGEMAKER_BASE_DIR``, creates ``<base>/code``
    and, with neither ``/opt/ml`` nor that variable, sets the variable to
    ``~/sagemaker_local/jobs/<time>/opt/ml`` and lays a job out there. Pointed at an empty scratch
    folder, its module-level paths lead nowhere: this module never lets it read a file (see
    ``_Given``) and reads every path from its own base dir."""
    imported = sys.modules.get("sagemaker_training.environment")
    if imported is not None:
        return imported
    try:
        with _os_environ_kept(), tempfile.TemporaryDirectory(prefix="detector-toolkit-") as scratch:
            os.environ["SAGEMAKER_BASE_DIR"] = scratch
            from sagemaker_training import environment
    except ImportError as e:
        raise DetectorError(
            f"the sagemaker-training toolkit is not installed ({e}); install it with pip install 'detector[train]'"
        ) from e
    return environment


class _Given(dict):
    """A mapping the toolkit takes as given even when empty: ``Environment`` treats a falsy argument as
    "not given" and rereads the file from its import-time path."""

    def __bool__(self) -> bool:
        return True


def _toolkit_hyperparameters(hyperparameters: Mapping[str, str]) -> dict[str, object]:
    """The ``sagemaker_*`` hyperparameters, decoded as the toolkit decodes its own.

    The toolkit JSON-decodes every hyperparameter (``"1e-3"`` becomes a float, ``"true"`` a bool,
    ``'"x"'`` the string x). Right for its own settings (the SageMaker SDK JSON-encodes them, e.g.
    ``sagemaker_distribution_instance_groups``), wrong for the project's: those stay strings and
    ``training.hyperparameters`` parses them, so the toolkit never sees them."""
    decoded: dict[str, object] = {}
    for name, value in hyperparameters.items():
        if name.startswith("sagemaker_"):
            try:
                decoded[name] = json.loads(value)
            except ValueError:
                decoded[name] = value
    return decoded


def _interpret_with_toolkit(
    config_dir: Path, resource_config: dict, input_data_config: dict, hyperparameters: Mapping[str, str]
):
    """The toolkit's reading of the three (already read and checked) configuration files.

    Its constructor also runs ``nvidia-smi``, ``neuron-ls`` and ``which smddprun`` / ``smddpmprun``
    and asks boto3 for the region; none of that reaches the result. ``os.environ`` is restored: the
    constructor sets ``CURRENT_HOST``, ``SAGEMAKER_JOB_NAME`` and ``SAGEMAKER_REGION``."""
    toolkit = _toolkit()
    with _os_environ_kept():
        # The region it asks boto3 for is not used here; a profile variable naming a profile this
        # machine lacks would make boto3 raise, so boto3 does not see one.
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            os.environ.pop(name, None)
        try:
            return toolkit.Environment(
                resource_config=_Given(resource_config),
                input_data_config=_Given(input_data_config),
                hyperparameters=_Given(_toolkit_hyperparameters(hyperparameters)),
            )
        except Exception as e:  # noqa: BLE001 - its failures become one clear message naming the files
            raise DetectorError(
                f"{config_dir}: the sagemaker-training toolkit cannot read this training configuration "
                f"({type(e).__name__}: {e})"
            ) from e


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
    # The training job's name (SageMaker sets TRAINING_JOB_NAME); None outside a job.
    job_name: str | None = None
    # Where downloaded starting weights are kept: outside /opt/ml, so they reach neither the model
    # archive nor the checkpoints synced to S3.
    weights_cache: Path = Path("/tmp/detector-weights")

    def distributed_environ(self) -> dict[str, str]:
        """Variables the training processes need: NCCL and gloo use the interface SageMaker names."""
        if not self.network_interface_name:
            return {}
        return {"NCCL_SOCKET_IFNAME": self.network_interface_name, "GLOO_SOCKET_IFNAME": self.network_interface_name}

    @property
    def host_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def is_master_host(self) -> bool:
        return self.host_rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "TrainingEnvironment":
        """The training contract under ``base_dir(environ)``: a function of ``environ`` and those files
        alone (``os.environ`` is left as it was)."""
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
            # SageMaker lists the hosts sorted, and the ranks follow that order; the toolkit does not
            # sort them, so it is handed them sorted.
            hosts = sorted(str(h) for h in raw["hosts"])
            if current_host not in hosts:
                raise DetectorError(f"{resource_path}: current_host {current_host!r} is not in hosts {hosts}")
            resource_config = {**raw, "current_host": current_host, "hosts": hosts}

        toolkit = _interpret_with_toolkit(layout.config_dir, resource_config, input_data_config, hyperparameters)
        hosts = [str(h) for h in toolkit.hosts]
        # The toolkit's rendezvous host is the first host of the distribution instance groups, in the
        # order resourceconfig.json lists them. Every host trains here (world size counts them all),
        # so the rendezvous must be rank 0's host, the first of the sorted hosts: where the two differ
        # (a heterogeneous cluster distributing over some groups) the project's choice stands.
        master_host = str(toolkit.master_hostname)
        if master_host != hosts[0]:
            master_host = hosts[0]

        # The channels the job declares (the toolkit reads their names from inputdataconfig.json), in
        # this base dir: the toolkit's own channel paths come from its import-time base dir. Channel
        # folders that the configuration does not declare count too (docker compose mounts input/data
        # without an inputdataconfig.json); the toolkit knows only declared ones.
        channels = {name: layout.channel_dir(name) for name in toolkit.channel_input_dirs}
        if layout.data_dir.is_dir():
            for entry in sorted(layout.data_dir.iterdir()):
                if entry.is_dir():
                    channels.setdefault(entry.name, entry)

        # The toolkit says "eth0" when resourceconfig.json names no interface: a guess that is wrong on
        # many machines a local run uses. No name is better than a wrong one.
        interface = toolkit.network_interface_name if "network_interface_name" in resource_config else None

        # GPUs: SM_NUM_GPUS when set, else what torch can use. The toolkit counts `nvidia-smi --list-gpus`,
        # which ignores CUDA_VISIBLE_DEVICES and counts GPUs that this torch build cannot use; one
        # training process per GPU calls torch.cuda.set_device, so torch's count is the one that holds.
        num_gpus = _int_env(environ, "SM_NUM_GPUS", None)
        if num_gpus is None:
            num_gpus = _gpu_count()

        return cls(
            base_dir=layout.base_dir,
            hyperparameters=hyperparameters,
            channels=channels,
            current_host=str(toolkit.current_host),
            hosts=hosts,
            network_interface_name=interface,
            num_gpus=num_gpus,
            # On SageMaker every host resolves the others by name; locally the first host is this machine.
            master_addr=environ.get("DETECTOR_MASTER_ADDR") or master_host,
            master_port=_int_env(environ, "DETECTOR_MASTER_PORT", 29500) or 29500,
            job_name=environ.get("TRAINING_JOB_NAME") or None,
            weights_cache=_weights_cache(environ),
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
    precision: str = "auto"  # DETECTOR_PRECISION (see detector.precision)

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
        environ = os.environ if environ is None else environ
        return cls(base_dir=base_dir(environ), precision=precision_env(environ))


def prepare_processing_job(base: Path, model_archive: Path, test_channel: Path) -> ProcessingEnvironment:
    """Lay the evaluation processing job's inputs out under ``base``: the model archive in
    ``processing/model`` and a copy of the test channel in ``processing/test``."""
    env = ProcessingEnvironment(Path(base))
    env.model_input.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_archive, env.model_archive)
    shutil.copytree(test_channel, env.test_input, dirs_exist_ok=True)
    return env


def precision_env(environ: Mapping[str, str]) -> str:
    """DETECTOR_PRECISION: auto (default), fp32, bf16 or fp16, for serving and evaluation."""
    from .precision import SETTINGS

    value = (environ.get("DETECTOR_PRECISION") or "auto").strip().lower()
    if value not in SETTINGS:
        raise DetectorError(f"environment variable DETECTOR_PRECISION={environ['DETECTOR_PRECISION']!r}: expected one of {', '.join(SETTINGS)}")
    return value


# -- Hosting -------------------------------------------------------------------------------------------


def _bounded(name: str, value, low, high=None):
    if value < low or (high is not None and value > high):
        expected = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise DetectorError(f"environment variable {name}={value!r}: expected a value {expected}")
    return value


# How served detections carry a mask model's masks (``masks`` custom attribute, DETECTOR_MASK_FORMAT).
MASK_FORMATS = ("rle", "polygon", "none")


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
    mask_format: str = "rle"
    # Set by `detector serve` for its workers: where they report that the model loaded (or why not).
    runtime_dir: Path | None = None
    precision: str = "auto"  # DETECTOR_PRECISION (see detector.precision)
    extra: dict[str, str] = field(default_factory=dict)
    # realtime (an endpoint), batch (a Batch Transform job: SAGEMAKER_BATCH=true) or async (an
    # asynchronous endpoint: DETECTOR_SERVING_MODE=async); the defaults and bounds of the limits follow it.
    mode: str = "realtime"
    # What GET /execution-parameters answers (Batch Transform asks when the job does not set them).
    max_concurrent_transforms: int | None = None  # None: one per worker
    batch_strategy: str = "MULTI_RECORD"

    @property
    def model_dir(self) -> Path:
        return serving_model_dir(self.base_dir)

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)

    @property
    def offline(self) -> bool:
        """Batch Transform or asynchronous inference: no 6 MB / 60 s real-time bounds."""
        return self.mode != "realtime"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, default_mode: str = "realtime") -> "ServingEnvironment":
        """``default_mode`` applies when neither DETECTOR_SERVING_MODE nor SAGEMAKER_BATCH says otherwise
        (``detector transform`` scores files offline: ``batch``)."""
        environ = os.environ if environ is None else environ
        mode = serving_mode(environ, default_mode)
        limits = MODE_LIMITS[mode]
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
            # multi-model-server reads SAGEMAKER_MODEL_SERVER_TIMEOUT in minutes; SageMaker gives up after 60 s
            # on a real-time endpoint, after up to an hour in a transform job or on an asynchronous endpoint.
            response_timeout_s=number("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", limits.response_timeout_s, 1,
                                      limits.max_response_timeout_s),
            # `detector serve` hands its limit to multi-model-server's launcher and workers under a name of its
            # own: the toolkit would read SAGEMAKER_MAX_PAYLOAD_IN_MB itself and reject a fractional value.
            max_payload_mb=number(PAYLOAD_HANDOVER if environ.get(PAYLOAD_HANDOVER) else "SAGEMAKER_MAX_PAYLOAD_IN_MB",
                                  limits.payload_mb, 0.001, limits.max_payload_mb, parse=_float_env),
            score_threshold=number("DETECTOR_SCORE_THRESHOLD", 0.5, 0.0, 1.0, parse=_float_env),
            max_detections=number("DETECTOR_MAX_DETECTIONS", 100, 1),
            max_image_pixels=number("DETECTOR_MAX_IMAGE_PIXELS", limits.image_pixels, 1),
            max_batch_images=number("DETECTOR_MAX_BATCH_IMAGES", 32, 1),
            max_request_pixels=number("DETECTOR_MAX_REQUEST_PIXELS", limits.request_pixels, 1),
            mode=mode,
            max_concurrent_transforms=_bounded("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", _int_env(
                environ, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", None), 1) if environ.get("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS") else None,
            batch_strategy=_batch_strategy(environ),
            startup_timeout_s=number("SAGEMAKER_STARTUP_TIMEOUT", 600, 1),
            reload_timeout_s=number("DETECTOR_WORKER_RELOAD_TIMEOUT", 180, 1),
            default_accept=environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or "application/json",
            mask_format=_mask_format(environ),
            runtime_dir=Path(environ["DETECTOR_SERVE_RUNTIME_DIR"]) if environ.get("DETECTOR_SERVE_RUNTIME_DIR") else None,
            precision=precision_env(environ),
        )


def _mask_format(environ: Mapping[str, str]) -> str:
    value = (environ.get("DETECTOR_MASK_FORMAT") or "rle").strip().lower()
    if value not in MASK_FORMATS:
        raise DetectorError(f"environment variable DETECTOR_MASK_FORMAT={value!r}: expected one of {', '.join(MASK_FORMATS)}")
    return value


@dataclass(frozen=True)
class ModeLimits:
    """Defaults (and upper bounds, None for none) of the serving limits in one serving mode."""

    payload_mb: float
    max_payload_mb: float | None
    response_timeout_s: int
    max_response_timeout_s: int | None
    image_pixels: int
    request_pixels: int


SERVING_MODES = ("realtime", "batch", "async")
PAYLOAD_HANDOVER = "DETECTOR_SERVE_MAX_PAYLOAD_MB"
MODE_LIMITS = {
    # A real-time endpoint: SageMaker refuses bodies above 6 MB and gives up on a request after 60 s.
    "realtime": ModeLimits(6.0, None, 50, None, 40_000_000, 80_000_000),
    # Batch Transform: MaxPayloadInMB is at most 100; InvocationsTimeoutInSeconds at most 3600.
    "batch": ModeLimits(100.0, 100.0, 3600, 3600, 150_000_000, 300_000_000),
    # Asynchronous inference: inputs up to 1 GB from S3, up to an hour of processing per request.
    "async": ModeLimits(1024.0, 1024.0, 3600, 3600, 150_000_000, 300_000_000),
}
BATCH_STRATEGIES = ("SINGLE_RECORD", "MULTI_RECORD")


def serving_mode(environ: Mapping[str, str], default: str = "realtime") -> str:
    """``DETECTOR_SERVING_MODE`` when set, else ``batch`` when SageMaker sets ``SAGEMAKER_BATCH=true``
    (a transform job), else ``default``."""
    raw = (environ.get("DETECTOR_SERVING_MODE") or "").strip().lower()
    if raw:
        if raw not in SERVING_MODES:
            raise DetectorError(f"environment variable DETECTOR_SERVING_MODE={raw!r}: expected one of {', '.join(SERVING_MODES)}")
        return raw
    batch = (environ.get("SAGEMAKER_BATCH") or "").strip().lower()
    if batch == "":
        return default
    if batch in ("false", "0", "no"):
        return "realtime"
    if batch in ("true", "1", "yes"):
        return "batch"
    raise DetectorError(f"environment variable SAGEMAKER_BATCH={batch!r}: expected true or false")


def _batch_strategy(environ: Mapping[str, str]) -> str:
    # SageMaker spells it MultiRecord in the API and MULTI_RECORD in the container's environment.
    raw = (environ.get("SAGEMAKER_BATCH_STRATEGY") or "MULTI_RECORD").strip()
    value = {"multirecord": "MULTI_RECORD", "singlerecord": "SINGLE_RECORD"}.get(raw.lower().replace("_", ""), raw)
    if value not in BATCH_STRATEGIES:
        raise DetectorError(f"environment variable SAGEMAKER_BATCH_STRATEGY={raw!r}: expected one of {', '.join(BATCH_STRATEGIES)}")
    return value


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
