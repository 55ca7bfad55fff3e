"""`detector serve` as a Batch Transform job runs it (SAGEMAKER_BATCH=true and the job's settings), over HTTP."""

import json

import pytest
import requests

import sample_images as samples
from helpers import serving

pytestmark = pytest.mark.slow

PAYLOAD_MB = 20
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-batch") / "serve.log"
    with serving(tiny_model, log, SAGEMAKER_BATCH="true", SAGEMAKER_MAX_PAYLOAD_IN_MB=str(PAYLOAD_MB),
                 SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS=str(TIMEOUT_S), SAGEMAKER_MAX_CONCURRENT_TRANSFORMS="2",
                 SAGEMAKER_BATCH_STRATEGY="MULTI_RECORD", DETECTOR_SCORE_THRESHOLD="0") as url:
        yield url, log


def invoke(url, body, content_type, **headers):
    return requests.post(f"{url}/invocations", data=body, headers={"Content-Type": content_type, **headers}, timeout=300)


def test_execution_parameters_answer_the_jobs_settings(server):
    url, _ = server
    response = requests.get(f"{url}/execution-parameters", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": PAYLOAD_MB}


def test_json_lines_are_answered_line_by_line_in_order(server):
    url, _ = server
    sizes = [(64, 48), (128, 96), (50, 90), (40, 40)]
    lines = [json.dumps({"image": samples.b64(samples.png(w, h))}) for w, h in sizes]
    lines.insert(1, json.dumps({"image": samples.b64(b"not an image")}))
    response = invoke(url, ("\n".join(lines) + "\n").encode(), "application/jsonlines", Accept="application/jsonlines")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/jsonlines"
    answers = [json.loads(line) for line in response.text.splitlines()]
    assert len(answers) == len(lines)
    assert answers[1] == {"error": "line 2: image is not an image Pillow can decode (12 bytes)"}
    del answers[1]
    assert [(a["image"]["width"], a["image"]["height"]) for a in answers] == sizes
    assert all(a["detections"] for a in answers)


def test_payload_limit_and_timeout_come_from_the_environment(server):
    url, log = server
    body = b"\0" * (PAYLOAD_MB * 1024 * 1024 + 1)
    response = invoke(url, body, "application/x-npy")
    assert response.status_code == 413
    assert f"(SAGEMAKER_MAX_PAYLOAD_IN_MB={PAYLOAD_MB})" in response.json()["error"]
    text = log.read_text()
    assert f"serving mode batch: requests up to {PAYLOAD_MB} MB" in text and f"response timeout {TIMEOUT_S} s" in text


def test_a_large_image_is_accepted_in_batch_mode(server):
    url, _ = server
    body = samples.large_jpeg()
    assert 6 * 1024 * 1024 < len(body) < PAYLOAD_MB * 1024 * 1024
    response = invoke(url, body, "image/jpeg")
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 8000, "height": 6000}
