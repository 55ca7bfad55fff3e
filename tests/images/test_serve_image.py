"""The serving image run as SageMaker hosting runs it: `docker run IMAGE serve` with the model mounted at
/opt/ml/model and port 8080 published, asked by a real HTTP client."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import requests
from conftest import OPT_ML, SERVE_IMAGE, Container, assert_correct, copy_model, run_detached, sample_image

from detector.serving.model_server import free_port

pytestmark = pytest.mark.slow

SIX_MB = 6 * 1024 * 1024


class Endpoint:
    def __init__(self, container: Container, port: int):
        self.container = container
        self.url = f"http://127.0.0.1:{port}"

    def ping(self) -> int:
        try:
            return requests.get(f"{self.url}/ping", timeout=5).status_code
        except (requests.ConnectionError, requests.Timeout):
            return 0  # not listening yet (or the proxy's connection closed while nothing listens)

    def invoke(self, body: bytes, content_type: str = "image/png") -> requests.Response:
        return requests.post(f"{self.url}/invocations", data=body, headers={"Content-Type": content_type}, timeout=60)

    def pings_until_healthy(self, timeout: float = 180) -> list[int]:
        """/ping from the moment the container starts, every 0.2 s, until it answers 200."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen.append(self.ping())
            if seen[-1] == 200:
                return seen
            if not self.container.state()["Running"]:
                break
            time.sleep(0.2)
        raise AssertionError(f"/ping never answered 200 (seen {sorted(set(seen))}):\n{self.container.logs()[-5000:]}")


def start(model_dir: Path, *, env: dict[str, str] | None = None, user: str | None = None) -> Endpoint:
    port = free_port()
    container = run_detached(SERVE_IMAGE, ["serve"], mounts={model_dir: f"{OPT_ML}/model:ro"}, env=env or {},
                             ports={port: 8080}, user=user)
    return Endpoint(container, port)


@pytest.fixture(scope="module")
def endpoint(interrupted_training, tmp_path_factory):
    """The trained model served as root, SageMaker's way; /ping watched from the first second."""
    model = copy_model(interrupted_training.model_dir, tmp_path_factory.mktemp("serve") / "model")
    served = start(model)
    served.pings = served.pings_until_healthy()
    # The first 200 means a worker holds the model: a request sent at once is answered, not queued or refused.
    served.first_answer = served.invoke(sample_image_bytes(interrupted_training))
    yield served
    served.container.remove()


def sample_image_bytes(job) -> bytes:
    coco = json.loads((job.base / "input" / "data" / "testing" / "annotations.json").read_text())
    return (job.base / "input" / "data" / "testing" / coco["images"][0]["file_name"]).read_bytes()


def test_ping_is_truthful_from_the_first_second(endpoint):
    assert endpoint.pings[-1] == 200
    assert set(endpoint.pings[:-1]) <= {0, 503}, endpoint.pings
    assert endpoint.first_answer.status_code == 200, endpoint.first_answer.text


def test_invocations_answer_correct_detections(endpoint, demo_data, interrupted_training):
    body, truth = sample_image(demo_data)
    response = endpoint.invoke(body)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert_correct(response.json(), truth, interrupted_training.model_dir, body)


def test_a_body_above_6_mb_is_refused_with_413(endpoint):
    response = endpoint.invoke(b"\x89PNG" + b"\0" * SIX_MB)
    assert response.status_code == 413, response.text
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB=6" in response.json()["error"]
    # The endpoint still answers afterwards.
    assert endpoint.ping() == 200


def test_the_management_api_is_not_on_the_serving_port(endpoint):
    response = requests.get(f"{endpoint.url}/models", timeout=10)
    assert response.status_code == 404, response.text
    assert "error" in response.json()


def test_the_image_has_java_and_multi_model_server_and_serves_as_root(endpoint):
    assert endpoint.container.exec("id", "-u").stdout.strip() == "0"  # SageMaker's expectation (docs/images.md)
    processes = endpoint.container.exec("ps", "-eo", "args").stdout
    if "java" not in processes:  # minimal images may lack ps: read /proc instead
        processes = endpoint.container.exec("sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").stdout
    assert "java" in processes and "com.amazonaws.ml.mms" in processes, processes[-2000:]


def test_docker_stop_ends_the_server_within_seconds(interrupted_training, tmp_path):
    served = start(copy_model(interrupted_training.model_dir, tmp_path / "model"))
    try:
        served.pings_until_healthy()
        seconds = served.container.stop(grace_s=30)
        code = served.container.wait()
    finally:
        served.container.remove()
    assert seconds < 10, f"docker stop took {seconds:.1f} s (SageMaker kills after 30 s)"
    assert code == 0, f"exit {code}"


def test_the_unprivileged_user_serves_a_model_trained_as_root(interrupted_training, demo_data, tmp_path):
    """docker-compose.yml's `user: detector`: uid 10001 reads the model the training image wrote as root."""
    served = start(copy_model(interrupted_training.model_dir, tmp_path / "model"), user="detector")
    try:
        served.pings_until_healthy()
        assert served.container.exec("id", "-un").stdout.strip() == "detector"
        body, truth = sample_image(demo_data)
        response = served.invoke(body)
        assert response.status_code == 200, response.text
        assert_correct(response.json(), truth, interrupted_training.model_dir, body)
    finally:
        served.container.remove()


def test_batch_transform_mode_comes_from_the_environment(interrupted_training, tmp_path):
    served = start(copy_model(interrupted_training.model_dir, tmp_path / "model"),
                   env={"SAGEMAKER_BATCH": "true", "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD"})
    try:
        served.pings_until_healthy()
        parameters = requests.get(f"{served.url}/execution-parameters", timeout=10).json()
        assert parameters == {"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 100}
        # A request above the real-time 6 MB limit is a transform job's normal record.
        big = noise_png(1800, 1400)
        assert len(big) > SIX_MB
        response = served.invoke(big)
        assert response.status_code == 200, response.text
        assert response.json()["image"] == {"width": 1800, "height": 1400}
        assert "serving mode batch" in served.container.logs()
    finally:
        served.container.remove()


def noise_png(width: int, height: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def test_a_model_that_cannot_load_never_answers_ping_200(interrupted_training, tmp_path):
    model = copy_model(interrupted_training.model_dir, tmp_path / "model")
    weights = model / "model_final.pth"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])  # truncated: not a loadable file
    served = start(model)
    try:
        pings = []
        deadline = time.monotonic() + 120
        while served.container.state()["Running"] and time.monotonic() < deadline:
            pings.append(served.ping())
            time.sleep(0.2)
        assert 200 not in pings, pings
        state = served.container.state()
        assert not state["Running"] and state["ExitCode"] == 1, state
        assert f"{OPT_ML}/model/model_final.pth" in served.container.logs()
    finally:
        served.container.remove()
