"""The toolkit handler service in-process, with multi-model-server's own context classes (no Java)."""

import json
import logging
import shutil
import sys

import pytest
from mms.context import Context, RequestProcessor

import sample_images as samples
from detector.environment import ServingEnvironment
from detector.serving.handler_service import INTERNAL_ERROR, HandlerService
from detector.data.synthetic import CATEGORIES

pytestmark = pytest.mark.slow  # uses the tiny model trained once per session


def make_service(base_dir, runtime_dir, **environ):
    settings = ServingEnvironment.from_env(
        {"SAGEMAKER_BASE_DIR": str(base_dir), "DETECTOR_SERVE_RUNTIME_DIR": str(runtime_dir), "DETECTOR_SCORE_THRESHOLD": "0", **environ}
    )
    context = Context("model", str(base_dir / "model"), None, 1, None, "1.1.11")
    return HandlerService(settings), context


@pytest.fixture(scope="module")
def loaded(tiny_model, tmp_path_factory):
    runtime_dir = tmp_path_factory.mktemp("runtime")
    service, context = make_service(tiny_model, runtime_dir)
    service.initialize(context)
    return service, context, runtime_dir


def call(service, context, body, **headers):
    context.request_processor = [RequestProcessor(headers)]
    [response] = service.handle([{"body": body}], context)
    status, _ = context.get_response_status(0)
    return status, context.get_response_content_type(0), response


def test_initialize_reports_a_ready_worker(loaded):
    _, _, runtime_dir = loaded
    assert len(list(runtime_dir.glob("worker-*.ready"))) == 1
    assert not (runtime_dir / "worker-failure").exists()


def test_prediction_keeps_dataset_category_ids(loaded):
    service, context, _ = loaded
    status, content_type, body = call(service, context, samples.png(128, 128), **{"Content-Type": "image/png"})
    assert (status, content_type) == (200, "application/json")
    result = json.loads(body)
    assert result["image"] == {"width": 128, "height": 128}
    names = {c["id"]: c["name"] for c in CATEGORIES}
    assert result["detections"], "the tiny model keeps low-score boxes"
    for detection in result["detections"]:
        assert names[detection["category_id"]] == detection["label"]


def test_headers_are_matched_without_regard_to_case(loaded):
    service, context, _ = loaded
    status, content_type, body = call(
        service, context, samples.png(), **{"content-type": "image/png", "ACCEPT": "application/x-coco",
                                            "x-amzn-sagemaker-custom-attributes": "max_detections=2"}
    )
    assert (status, content_type) == (200, "application/x-coco")
    results = json.loads(body)
    assert 0 < len(results) <= 2 and all(r["image_id"] == 0 for r in results)


def test_request_errors_answer_json_without_traceback(loaded):
    service, context, _ = loaded
    status, content_type, body = call(service, context, b"not an image", **{"Content-Type": "image/png"})
    assert (status, content_type) == (400, "application/json")
    assert json.loads(body)["error"].startswith("image is not an image Pillow can decode")
    status, _, body = call(service, context, b"x", **{"Content-Type": "text/csv"})
    assert status == 415 and "Traceback" not in body.decode()
    status, _, body = call(service, context, samples.png(), **{"Content-Type": "image/png", "Accept": "text/csv"})
    assert status == 406 and "application/x-coco" in json.loads(body)["error"]


def test_unexpected_errors_answer_500_and_log_the_traceback(loaded, monkeypatch, caplog):
    service, context, _ = loaded

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(service._service.handler, "predict_fn", broken)
    with caplog.at_level(logging.ERROR, logger="detector.serving"):
        status, content_type, body = call(service, context, samples.png(), **{"Content-Type": "image/png"})
    assert (status, content_type) == (500, "application/json")
    assert json.loads(body) == {"error": INTERNAL_ERROR}
    assert "secret internal detail" in caplog.text and "Traceback" in caplog.text


def test_a_model_that_cannot_load_fails_the_worker_with_the_reason(tiny_model, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(tiny_model / "model", base / "model")
    (base / "model" / "labels.json").write_text("{broken")
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir()
    service, context = make_service(base, runtime_dir)
    with pytest.raises(Exception, match="labels.json"):
        service.initialize(context)
    assert "labels.json: not valid JSON" in (runtime_dir / "worker-failure").read_text()
    assert not list(runtime_dir.glob("worker-*.ready"))


def test_code_in_the_model_directory_is_never_run(tiny_model, tmp_path, monkeypatch):
    base = tmp_path / "base"
    shutil.copytree(tiny_model / "model", base / "model")
    code = base / "model" / "code"
    code.mkdir()
    (code / "inference.py").write_text("raise SystemExit('model code was imported')\n")
    (code / "requirements.txt").write_text("nonexistent-package-xyz\n")
    monkeypatch.syspath_prepend(str(code))
    service, context = make_service(base, tmp_path)
    service.initialize(context)
    status, _, _ = call(service, context, samples.png(), **{"Content-Type": "image/png"})
    assert status == 200
    assert "inference" not in sys.modules


def test_json_lines_are_answered_in_order_a_model_batch_at_a_time(tiny_model, tmp_path):
    """Batches of at most 2 images or 5000 decoded pixels: the 60x60 image starts a batch of its own."""
    service, context = make_service(tiny_model, tmp_path, DETECTOR_MAX_BATCH_IMAGES="2", DETECTOR_MAX_REQUEST_PIXELS="5000",
                                    SAGEMAKER_BATCH="true")
    service.initialize(context)
    sizes = [(32, 24), (40, 30), (20, 20), (60, 60), (16, 16)]
    lines = [json.dumps({"image": samples.b64(samples.png(w, h))}) for w, h in sizes]
    lines.insert(2, '{"image": "not base64!"}')
    lines.append(json.dumps({"image": samples.b64(samples.png(80, 80))}))  # 6400 pixels: above the limit on its own
    status, content_type, body = call(service, context, ("\n".join(lines) + "\n").encode(), **{"Content-Type": "application/jsonlines"})
    assert (status, content_type) == (200, "application/jsonlines")
    answers = [json.loads(line) for line in body.decode().splitlines()]
    assert len(answers) == 7
    assert answers[2]["error"].startswith("line 3: not valid base64")
    assert "line 7: image (80x80) takes the request to 6400 decoded pixels, above the limit of 5000" in answers[6]["error"]
    good = [a for i, a in enumerate(answers) if i not in (2, 6)]
    assert [(a["image"]["width"], a["image"]["height"]) for a in good] == sizes
    status, _, body = call(service, context, lines[0].encode(), **{"Content-Type": "application/jsonlines", "Accept": "application/x-coco"})
    assert status == 406 and "answered as application/jsonlines" in json.loads(body)["error"]
