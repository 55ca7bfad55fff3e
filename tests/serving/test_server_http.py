"""`detector serve` as a real process: multi-model-server, the toolkit and the handler over HTTP."""

import json

import numpy as np
import pytest
import requests

import sample_images as samples
from helpers import serving
from detector.data.synthetic import CATEGORIES

pytestmark = pytest.mark.slow

MAX_PIXELS = 2_000_000
MAX_REQUEST_PIXELS = 2_500_000
NAMES = {c["id"]: c["name"] for c in CATEGORIES}


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(tiny_model, log, DETECTOR_SCORE_THRESHOLD="0", DETECTOR_MAX_IMAGE_PIXELS=str(MAX_PIXELS),
                 DETECTOR_MAX_BATCH_IMAGES="8", DETECTOR_MAX_REQUEST_PIXELS=str(MAX_REQUEST_PIXELS)) as url:
        yield url


def invoke(url, body, content_type, **headers):
    return requests.post(f"{url}/invocations", data=body, headers={"Content-Type": content_type, **headers}, timeout=60)


def check_image_result(result, width, height):
    assert set(result) == {"detections", "image"}
    assert result["image"] == {"width": width, "height": height}
    assert result["detections"], "the tiny model keeps low-score boxes (score threshold 0)"
    scores = [d["score"] for d in result["detections"]]
    assert scores == sorted(scores, reverse=True)
    for d in result["detections"]:
        assert set(d) == {"bbox", "score", "category_id", "label"}
        x1, y1, x2, y2 = d["bbox"]
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert 0 <= d["score"] <= 1
        assert NAMES[d["category_id"]] == d["label"]  # the dataset's own, non-contiguous ids


def test_ping(server):
    response = requests.get(f"{server}/ping", timeout=5)
    assert response.status_code == 200 and response.json()["status"] == "Healthy"


@pytest.mark.parametrize(
    "body, content_type, size",
    [
        (samples.jpeg(160, 120), "image/jpeg", (160, 120)),
        (samples.png(100, 140), "image/png", (100, 140)),
        (samples.png(90, 60, mode="L"), "image/png", (90, 60)),
        (samples.png(90, 60, mode="RGBA"), "application/x-image", (90, 60)),
        (samples.exif_rotated_jpeg(96, 64), "image/jpeg", (64, 96)),
        (samples.json_single(samples.png(70, 50)), "application/json", (70, 50)),
        (samples.npy(samples.rgb_array(80, 40)), "application/x-npy", (80, 40)),
    ],
    ids=["jpeg", "png", "grayscale", "rgba", "exif-rotated", "base64-json", "npy"],
)
def test_one_image(server, body, content_type, size):
    response = invoke(server, body, content_type)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    check_image_result(response.json(), *size)


def test_batch_answers_in_request_order(server):
    response = invoke(server, samples.json_batch(samples.png(64, 48), samples.jpeg(128, 128), samples.png(50, 90)), "application/json")
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    for result, size in zip(predictions, [(64, 48), (128, 128), (50, 90)], strict=True):
        check_image_result(result, *size)


def test_custom_attributes(server):
    attributes = {"X-Amzn-SageMaker-Custom-Attributes": "max_detections=2"}
    assert len(invoke(server, samples.png(), "image/png", **attributes).json()["detections"]) == 2
    everything = invoke(server, samples.png(), "image/png").json()["detections"]
    threshold = sorted(d["score"] for d in everything)[len(everything) // 2]
    attributes = {"X-Amzn-SageMaker-Custom-Attributes": f"score_threshold={threshold}"}
    kept = invoke(server, samples.png(), "image/png", **attributes).json()["detections"]
    assert 0 < len(kept) < len(everything) and all(d["score"] >= threshold for d in kept)


def test_coco_results(server):
    response = invoke(server, samples.json_batch(samples.png(), samples.png()), "application/json", Accept="application/x-coco")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/x-coco"
    results = response.json()
    assert {r["image_id"] for r in results} == {0, 1}
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} and r["category_id"] in NAMES for r in results)


def test_payload_up_to_the_limit_is_accepted(server):
    array = samples.rgb_array(1400, 1400)  # random pixels: the PNG stays close to 5.9 MB
    body = samples.npy(array)
    assert 5.5e6 < len(body) < 6 * 1024 * 1024
    response = invoke(server, body, "application/x-npy")
    assert response.status_code == 200, response.text
    assert response.json()["image"] == {"width": 1400, "height": 1400}


GOOD = samples.b64(samples.png(16, 16))
ERROR_CASES = {
    "unsupported content type": (b"a,b", "text/csv", {}, 415, "content type 'text/csv' is not supported"),
    "unsupported accept": (samples.png(), "image/png", {"Accept": "text/csv"}, 406, "accept type 'text/csv' is not supported"),
    "empty body": (b"", "image/png", {}, 400, "request body is empty"),
    "undecodable image": (b"\x89PNG garbage", "image/png", {}, 400, "is not an image Pillow can decode"),
    "bad base64": (b'{"image": "%%%"}', "application/json", {}, 400, "image: not valid base64"),
    "bad json": (b'{"image": ', "application/json", {}, 400, "request body is not valid JSON"),
    "wrong array shape": (samples.npy(np.zeros((4, 4), np.uint8)), "application/x-npy", {}, 400, "expected HxWx3 uint8"),
    "too many pixels": (samples.png(2000, 1001, mode="L"), "image/png", {}, 400, f"2000x1001 = 2002000 pixels, above the limit of {MAX_PIXELS}"),
    "malformed attributes": (samples.png(), "image/png", {"X-Amzn-SageMaker-Custom-Attributes": "max_detections=lots"}, 400,
                             "max_detections='lots', expected a whole number"),
    "one bad image in a batch": (json.dumps({"instances": [{"image": GOOD}, {"image": GOOD}, {"image": "!"}]}).encode(),
                                 "application/json", {}, 400, "instances[2].image: not valid base64"),
    "batch too large": (samples.json_batch(*[samples.png(8, 8)] * 9), "application/json", {}, 400, "9 instances, above the limit of 8"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_answer_a_status_and_a_json_message(server, case):
    body, content_type, headers, status, message = ERROR_CASES[case]
    response = invoke(server, body, content_type, **headers)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert message in response.json()["error"]
    assert "Traceback" not in response.text


def test_payload_above_the_limit_is_413(server):
    body = b"\0" * (6 * 1024 * 1024 + 1)
    try:
        status = invoke(server, body, "application/x-npy").status_code
    except requests.ConnectionError:
        pytest.fail("the server closed the connection instead of answering 413")
    assert status == 413


def test_payload_above_the_limit_has_a_json_body_naming_the_limit(server):
    response = invoke(server, b"\0" * (6 * 1024 * 1024 + 1), "application/x-npy")
    assert response.status_code == 413
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {
        "error": f"request body is {6 * 1024 * 1024 + 1} bytes, above the limit of {6 * 1024 * 1024} bytes (SAGEMAKER_MAX_PAYLOAD_IN_MB=6)"
    }


def test_a_small_request_that_decodes_to_too_many_pixels_is_413(server):
    solid = samples.encode(samples.Image.new("RGB", (1000, 1000), (10, 200, 30)), "PNG")
    response = invoke(server, samples.json_batch(solid, solid, solid), "application/json")
    assert response.status_code == 413
    assert f"above the limit of {MAX_REQUEST_PIXELS} pixels per request (DETECTOR_MAX_REQUEST_PIXELS)" in response.json()["error"]
    assert invoke(server, samples.json_batch(solid, solid), "application/json").status_code == 200


def test_still_healthy_after_hundreds_of_malformed_requests(server):
    cases = list(ERROR_CASES.values())
    with requests.Session() as session:
        for i in range(300):
            body, content_type, headers, status, _ = cases[i % len(cases)]
            response = session.post(f"{server}/invocations", data=body, headers={"Content-Type": content_type, **headers}, timeout=60)
            assert response.status_code == status
    assert requests.get(f"{server}/ping", timeout=5).json()["status"] == "Healthy"
    response = invoke(server, samples.png(), "image/png")
    assert response.status_code == 200
    check_image_result(response.json(), 96, 64)


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/models"), ("GET", "/models/model"), ("POST", "/models?url=/tmp/x.mar"), ("PUT", "/models/model?min_worker=3"),
     ("DELETE", "/models/model")],
)
def test_management_api_is_not_on_the_serving_port(server, method, path):
    response = requests.request(method, f"{server}{path}", timeout=10)
    assert response.status_code in (404, 405)
    assert "not found" in response.json()["error"]
    assert requests.get(f"{server}/ping", timeout=5).json()["status"] == "Healthy"


def test_execution_parameters_answer_the_real_time_defaults(server):
    response = requests.get(f"{server}/execution-parameters", timeout=5)
    assert response.json() == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


def test_a_large_image_is_refused_in_real_time_mode_naming_the_limit(server):
    body = samples.large_jpeg()
    response = invoke(server, body, "image/jpeg")
    assert response.status_code == 413
    assert response.json()["error"] == (
        f"request body is {len(body)} bytes, above the limit of {6 * 1024 * 1024} bytes (SAGEMAKER_MAX_PAYLOAD_IN_MB=6)")
