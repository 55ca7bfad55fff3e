"""The built images, run by a real engine: fixtures shared by tests/images.

Collected only with ``pytest --images`` (``make images-test``, which builds the images first); the
engine is the one ``docker`` reaches (DOCKER_HOST, as ``scripts/engine.sh up`` prints it), the images
are ``$DETECTOR_TRAIN_IMAGE`` and ``$DETECTOR_SERVE_IMAGE`` (default ``detector-train:cpu`` and
``detector-serve:cpu``). A missing engine or image fails the tests: nothing here is skipped.

One training run in the training image (``interrupted_training``: stopped with ``docker stop`` in the
middle, then resumed) makes the model that the evaluation, serving, Compose and SDK tests use.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TRAIN_IMAGE = os.environ.get("DETECTOR_TRAIN_IMAGE", "detector-train:cpu")
SERVE_IMAGE = os.environ.get("DETECTOR_SERVE_IMAGE", "detector-serve:cpu")
LABEL = "detector-images-test"
OPT_ML = "/opt/ml"
# The demo's model and data (detector pipeline --local), trained long enough to answer correctly.
ITERATIONS = 300
STOP_AFTER_ITERATION = 60


def docker_command() -> list[str]:
    return [os.environ.get("DOCKER") or "docker"]


def docker(*args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([*docker_command(), *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session", autouse=True)
def engine() -> None:
    """The engine answers and both images are in its store; containers this session started are removed after it."""
    info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    assert info.returncode == 0, (
        f"no container engine answers ({info.stderr.strip()}): run `eval \"$(scripts/engine.sh up)\"` first, "
        "or `make images-test`, which starts one and builds the images"
    )
    for image in (TRAIN_IMAGE, SERVE_IMAGE):
        found = docker("image", "inspect", image, check=False, timeout=30)
        assert found.returncode == 0, f"image {image} is not in the engine's store: build it with `make images-test`"
    yield
    leftover = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if leftover:
        docker("rm", "-f", *leftover, check=False)


@dataclass
class Container:
    """A container started detached by a test; removed when the test session ends."""

    name: str
    started: float = field(default_factory=time.monotonic)

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)

    def wait(self, timeout: float = 600) -> int:
        """Exit status once it has stopped."""
        return int(docker("wait", self.name, timeout=timeout).stdout.strip())

    def stop(self, grace_s: int = 30) -> float:
        """``docker stop`` (SIGTERM, then SIGKILL after ``grace_s``); seconds it took."""
        start = time.monotonic()
        docker("stop", "-t", str(grace_s), self.name, timeout=grace_s + 60)
        return time.monotonic() - start

    def exec(self, *command: str, user: str | None = None) -> subprocess.CompletedProcess:
        return docker("exec", *(["--user", user] if user else []), self.name, *command, check=False)

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def run_detached(image: str, args: list[str], *, mounts: dict[Path, str] = {}, env: dict[str, str] = {},
                 ports: dict[int, int] = {}, user: str | None = None, extra: list[str] = ()) -> Container:
    """``docker run -d`` with bind mounts (host path -> container path, ``:ro`` suffix allowed)."""
    name = f"detector-test-{uuid.uuid4().hex[:10]}"
    command = ["run", "-d", "--name", name, "--label", LABEL, "--shm-size", "1g"]
    for host, container in mounts.items():
        command += ["-v", f"{Path(host).resolve()}:{container}"]
    for key, value in env.items():
        command += ["-e", f"{key}={value}"]
    for host_port, container_port in ports.items():
        command += ["-p", f"127.0.0.1:{host_port}:{container_port}"]
    if user:
        command += ["--user", user]
    docker(*command, *extra, image, *args)
    return Container(name)


def run_to_end(image: str, args: list[str], timeout: float = 900, **kwargs) -> tuple[int, str]:
    """Run a container to its end; (exit status, its output)."""
    container = run_detached(image, args, **kwargs)
    try:
        code = container.wait(timeout)
        return code, container.logs()
    finally:
        container.remove()


def demo_hyperparameters(**overrides) -> dict[str, str]:
    """What `detector pipeline --local` trains on its demo data, with ``overrides``."""
    from detector import pipeline_spec as spec
    from detector.local.runner import DEMO_HYPERPARAMETERS, LOCAL_HYPERPARAMETERS, LOCAL_PARAMETER_DEFAULTS

    parameters = {**spec.defaults("/unused"), **LOCAL_PARAMETER_DEFAULTS}
    values = {p.hyperparameter: str(parameters[p.name]) for p in spec.PARAMETERS if p.hyperparameter}
    return {**LOCAL_HYPERPARAMETERS, **DEMO_HYPERPARAMETERS, **values, **{k: str(v) for k, v in overrides.items()}}


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, Path]:
    """The demo's synthetic channels (`detector pipeline --local`): training and testing."""
    from detector.data.synthetic import generate_channels
    from detector.local.runner import DEMO_DATA

    return generate_channels(tmp_path_factory.mktemp("demo-data"), DEMO_DATA["train_images"], DEMO_DATA["test_images"],
                             DEMO_DATA["image_size"], DEMO_DATA["seed"])


def training_job(root: Path, data: dict[str, Path], **hyperparameters) -> Path:
    """A SageMaker-shaped /opt/ml for a training job under ``root`` (the layout writers)."""
    from detector import environment

    return environment.write_training_job(root, demo_hyperparameters(**hyperparameters), data)


def training_mounts(base: Path) -> dict[Path, str]:
    """The folders SageMaker mounts into a training container, each on its own (not /opt/ml whole)."""
    from detector.environment import TrainingLayout

    layout = TrainingLayout(base)
    for folder in (layout.model_dir, layout.checkpoint_dir, layout.output_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        layout.config_dir: f"{OPT_ML}/input/config:ro",
        layout.data_dir: f"{OPT_ML}/input/data:ro",
        layout.model_dir: f"{OPT_ML}/model",
        layout.checkpoint_dir: f"{OPT_ML}/checkpoints",
        layout.output_dir: f"{OPT_ML}/output",
    }


def wait_for_log(container: Container, pattern: str, timeout: float, predicate=None) -> str:
    """The container's output once ``pattern`` matches it (and ``predicate(matches)`` holds, if given)."""
    import re

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = container.logs()
        matches = re.findall(pattern, logs)
        if matches and (predicate is None or predicate(matches)):
            return logs
        if not container.state()["Running"]:
            break
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not in the container's output:\n{container.logs()[-5000:]}")


@dataclass
class InterruptedTraining:
    base: Path
    first_log: str
    first_exit: int
    stop_seconds: float
    checkpoints_after_stop: list[str]
    pid1: str
    second_log: str
    second_exit: int

    @property
    def model_dir(self) -> Path:
        return self.base / "model"


@pytest.fixture(scope="session")
def interrupted_training(tmp_path_factory, demo_data) -> InterruptedTraining:
    """`docker run IMAGE train` on the demo data, `docker stop` (SIGTERM) after iteration
    STOP_AFTER_ITERATION, then the same job again, resuming from /opt/ml/checkpoints to the end.

    Periodic checkpoints are off (checkpoint_period above max_iter), so the only checkpoint the stop can
    leave is the one `detector train` writes on SIGTERM."""
    base = training_job(tmp_path_factory.mktemp("train-job"), demo_data, max_iter=ITERATIONS,
                        checkpoint_period=10 * ITERATIONS, log_period=5)
    mounts = training_mounts(base)
    first = run_detached(TRAIN_IMAGE, ["train"], mounts=mounts)
    try:
        wait_for_log(first, r"\biter: (\d+)", 600, lambda iters: max(map(int, iters)) >= STOP_AFTER_ITERATION)
        pid1 = first.exec("cat", "/proc/1/cmdline").stdout.replace("\0", " ").strip()
        stop_seconds = first.stop(grace_s=60)
        first_exit = first.wait()
        first_log = first.logs()
    finally:
        first.remove()
    checkpoints = sorted(p.name for p in (base / "checkpoints").iterdir())
    second_exit, second_log = run_to_end(TRAIN_IMAGE, ["train"], mounts=mounts)
    return InterruptedTraining(base, first_log, first_exit, stop_seconds, checkpoints, pid1, second_log, second_exit)


@pytest.fixture(scope="session")
def model_archive(interrupted_training, tmp_path_factory) -> Path:
    """The trained model as SageMaker uploads it: model.tar.gz of /opt/ml/model."""
    assert interrupted_training.second_exit == 0, interrupted_training.second_log[-5000:]
    from detector.model_dir import write_model_archive

    return write_model_archive(interrupted_training.model_dir, tmp_path_factory.mktemp("model-archive") / "model.tar.gz")


def copy_model(model_dir: Path, into: Path) -> Path:
    shutil.copytree(model_dir, into)
    return into


# --- what a correct answer is ----------------------------------------------------------------------


def sample_image(demo_data: dict[str, Path]) -> tuple[bytes, list[dict]]:
    """The first testing image as PNG bytes, and its ground-truth annotations (COCO)."""
    coco = json.loads((demo_data["testing"] / "annotations.json").read_text())
    image = coco["images"][0]
    boxes = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    return (demo_data["testing"] / image["file_name"]).read_bytes(), boxes


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two [x1, y1, x2, y2] boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def assert_correct(answer: dict, truth: list[dict], model_dir: Path, image: bytes) -> None:
    """The served answer is the model's own (the same model run in this process: same boxes, scores and
    categories), and every ground-truth object is found by a detection with IoU >= 0.5."""
    expected = in_process_answer(model_dir, image)
    served = answer["detections"]
    assert [d["category_id"] for d in served] == [d["category_id"] for d in expected], (served, expected)
    for got, want in zip(served, expected):
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1.0), (got, want)
        assert got["score"] == pytest.approx(want["score"], abs=0.02), (got, want)
    for obj in truth:
        x, y, w, h = obj["bbox"]
        best = max((iou(d["bbox"], [x, y, x + w, y + h]) for d in served), default=0.0)
        assert best >= 0.5, f"object {obj['bbox']} (category {obj['category_id']}) not found: {served}"


_PREDICTORS: dict[Path, object] = {}


def in_process_answer(model_dir: Path, image: bytes) -> list[dict]:
    """What `detector serve`'s handler answers for ``image``, from the model loaded here (default settings)."""
    import numpy as np
    from PIL import Image

    from detector.predictor import Predictor
    from detector.serving.encoding import image_result

    if model_dir not in _PREDICTORS:
        _PREDICTORS[model_dir] = Predictor.from_model_dir(model_dir, device="cpu")
    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    (detections,) = _PREDICTORS[model_dir].predict([pixels], score_threshold=0.5, max_detections=100)
    return image_result(detections, pixels.shape[1], pixels.shape[0])["detections"]
