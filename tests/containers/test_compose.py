"""docker-compose.yml: valid against the Compose Specification's JSON schema, and wired like SageMaker."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "compose_spec" / "compose-spec.json"
LOCAL = "${DETECTOR_LOCAL_DIR:-./local}"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def mounts(service: dict) -> dict[str, tuple[str, str]]:
    """container path -> (host path, mode)."""
    result = {}
    for volume in service["volumes"]:
        # The host side may hold ":" itself (${VAR:-default}); the container side is an absolute path.
        match = re.fullmatch(r"(.+?):(/[^:]*)(?::(ro|rw))?", volume)
        assert match, f"unexpected volume syntax {volume!r}"
        host, container, mode = match.groups()
        result[container] = (host, mode or "rw")
    return result


def test_compose_file_is_valid_against_the_compose_specification(validator, compose):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda doc: doc["services"]["train"].update(shm_sise="16gb"),
        lambda doc: doc["services"]["serve"].update(ports="8080:8080"),
        lambda doc: doc["services"]["train"]["deploy"]["resources"]["reservations"].update(devices="all"),
    ],
    ids=["misspelt-key", "ports-not-a-list", "devices-not-a-list"],
)
def test_the_schema_rejects_broken_variants(validator, compose, mutate):
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert list(validator.iter_errors(broken)), "the schema should have rejected this document"


def test_services_use_the_two_images_built_from_their_dockerfiles(compose):
    services = compose["services"]
    assert {"train", "serve"} <= services.keys()
    for name in ("train", "serve"):
        service = services[name]
        assert service["command"] == [name]
        assert service["build"] == {"context": ".", "dockerfile": "containers/Dockerfile", "target": name}
        assert (REPO / service["build"]["dockerfile"]).is_file()
        assert service["platform"] == "linux/amd64"
    assert services["train"]["image"] == "${TRAIN_IMAGE:-detector-train:local}"
    assert services["serve"]["image"] == "${SERVE_IMAGE:-detector-serve:local}"


@pytest.mark.parametrize("name", ["train", "serve"])
def test_gpu_services_reserve_nvidia_gpus_and_shared_memory(compose, name):
    service = compose["services"][name]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert service["shm_size"].endswith("gb")


def test_train_mounts_the_sagemaker_layout_from_the_local_folder(compose):
    train = compose["services"]["train"]
    assert mounts(train) == {
        "/opt/ml/input/config/hyperparameters.json": (f"{LOCAL}/hyperparameters.json", "ro"),
        "/opt/ml/input/data": (f"{LOCAL}/data", "ro"),
        "/opt/ml/checkpoints": (f"{LOCAL}/checkpoints", "rw"),
        "/opt/ml/model": (f"{LOCAL}/model", "rw"),
        "/opt/ml/output": (f"{LOCAL}/output", "rw"),
    }
    assert train["stop_grace_period"] == "120s"  # SageMaker's SIGTERM-to-SIGKILL window


def test_serve_reads_the_trained_model_and_answers_on_8080_with_a_ping_healthcheck(compose):
    serve = compose["services"]["serve"]
    assert mounts(serve) == {"/opt/ml/model": (f"{LOCAL}/model", "ro")}
    assert mounts(compose["services"]["train"])["/opt/ml/model"][0] == mounts(serve)["/opt/ml/model"][0]
    assert serve["ports"] == ["127.0.0.1:${SERVE_PORT:-8080}:8080"]
    test = serve["healthcheck"]["test"]
    assert test[0] == "CMD" and "http://127.0.0.1:8080/ping" in test[-1]
    assert serve["user"] == "detector"


def test_healthcheck_command_is_valid_python(compose):
    test = compose["services"]["serve"]["healthcheck"]["test"]
    assert test[1:3] == ["python", "-c"]
    compile(test[3], "<healthcheck>", "exec")


def test_synth_helper_writes_the_data_channels_the_trainer_reads(compose):
    synth = compose["services"]["synth"]
    assert synth["profiles"] == ["tools"], "must not start with a plain `docker compose up`"
    assert synth["command"][:2] == ["synth", "/opt/ml/input/data"]
    assert mounts(synth) == {"/opt/ml/input/data": (f"{LOCAL}/data", "rw")}
    from detector.cli import _available, build_parser

    build_parser(_available()).parse_args(synth["command"])


def test_local_hyperparameters_are_strings_the_trainer_accepts():
    from detector.training.config import package_configs
    from detector.training.hyperparameters import Hyperparameters

    raw = json.loads((REPO / "local" / "hyperparameters.json").read_text())
    assert all(isinstance(value, str) for value in raw.values()), "SageMaker sends every value as a string"
    params = Hyperparameters.from_strings(raw)
    if params.model.startswith("detector/"):
        assert params.model in package_configs()


def test_local_data_and_models_stay_out_of_git():
    ignore = (REPO / "local" / ".gitignore").read_text().splitlines()
    assert ignore[ignore.index("*") :] == ["*", "!.gitignore", "!hyperparameters.json"]


def test_no_top_level_name_so_docker_compose_1_29_reads_the_file(compose):
    # Debian 12's docker-compose (1.29, the only Compose packaged there) refuses a top-level `name`.
    assert "name" not in compose


@pytest.mark.parametrize("name", ["train", "serve", "synth"])
def test_cpu_services_mirror_the_gpu_ones_without_gpus_on_the_cpu_images(compose, name):
    services = compose["services"]
    gpu, cpu = services[name], services[f"{name}-cpu"]
    assert cpu["profiles"] == ["cpu"], "CPU services start only when the cpu profile or their name is given"
    assert "deploy" not in cpu and "build" not in cpu, "no GPU reservation; the CPU images come from build_push.sh"
    image = "TRAIN_IMAGE_CPU:-detector-train:cpu" if name in ("train", "synth") else "SERVE_IMAGE_CPU:-detector-serve:cpu"
    assert cpu["image"] == "${" + image + "}"
    assert mounts(cpu) == mounts(gpu)
    assert cpu["command"] == gpu["command"]
    for key in ("user", "ports", "healthcheck", "stop_grace_period"):
        assert cpu.get(key) == gpu.get(key), key
    # memlock -1 fails where root lacks CAP_SYS_RESOURCE, and only GPU/RDMA transfers need it.
    assert "ulimits" not in cpu
