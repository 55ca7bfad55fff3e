import json

import pytest

from detector.predictor import Detection
from detector.serving.encoding import COCO_TYPE, JSON_TYPE, encode_predictions, negotiate
from detector.serving.request_errors import NotAcceptable

DETECTIONS = [Detection((1.0, 2.0, 11.5, 22.25), 0.9, 12, "triangle"), Detection((0.0, 0.0, 5.0, 5.0), 0.4, 3, "circle")]


@pytest.mark.parametrize(
    "accept, expected",
    [
        (None, JSON_TYPE),
        ("", JSON_TYPE),
        ("*/*", JSON_TYPE),
        ("application/*", JSON_TYPE),
        ("application/json", JSON_TYPE),
        ("Application/JSON; charset=utf-8", JSON_TYPE),
        (COCO_TYPE, COCO_TYPE),
        ("text/html, application/x-coco;q=0.9, application/json;q=0.5", COCO_TYPE),
        ("application/json;q=0, */*;q=0.1", JSON_TYPE),
    ],
)
def test_negotiate(accept, expected):
    assert negotiate(accept) == expected


def test_negotiate_default_applies_to_wildcards():
    assert negotiate("*/*", default=COCO_TYPE) == COCO_TYPE


@pytest.mark.parametrize("accept", ["text/csv", "application/json;q=0", "image/*"])
def test_unsupported_accept_is_406(accept):
    with pytest.raises(NotAcceptable, match="application/json, application/x-coco") as error:
        negotiate(accept)
    assert error.value.status == 406


def test_single_image_json_schema():
    body = json.loads(encode_predictions([DETECTIONS], [(40, 30)], batch=False, response_type=JSON_TYPE))
    assert body == {
        "detections": [
            {"bbox": [1.0, 2.0, 11.5, 22.25], "score": 0.9, "category_id": 12, "label": "triangle"},
            {"bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.4, "category_id": 3, "label": "circle"},
        ],
        "image": {"width": 40, "height": 30},
    }


def test_batch_json_keeps_request_order():
    body = json.loads(encode_predictions([[], DETECTIONS[:1]], [(10, 20), (30, 40)], batch=True, response_type=JSON_TYPE))
    assert [p["image"] for p in body["predictions"]] == [{"width": 10, "height": 20}, {"width": 30, "height": 40}]
    assert [len(p["detections"]) for p in body["predictions"]] == [0, 1]


def test_coco_results_format():
    body = json.loads(encode_predictions([DETECTIONS[:1], DETECTIONS[1:]], [(1, 1), (1, 1)], batch=True, response_type=COCO_TYPE))
    assert body == [
        {"image_id": 0, "category_id": 12, "bbox": [1.0, 2.0, 10.5, 20.25], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.4},
    ]


def test_json_lines_answer_one_line_per_image_or_record():
    from detector.serving.encoding import JSONLINES_TYPE, encode_json_lines

    assert negotiate("application/jsonlines") == JSONLINES_TYPE
    body = encode_predictions([DETECTIONS, []], [(40, 30), (8, 8)], True, JSONLINES_TYPE)
    lines = body.decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        json.loads(encode_predictions([DETECTIONS], [(40, 30)], False, JSON_TYPE)), {"detections": [], "image": {"width": 8, "height": 8}},
    ]
    records = encode_json_lines([(DETECTIONS, (40, 30)), "line 2: not valid base64", ([], (8, 8))]).decode()
    assert records.endswith("\n") and [json.loads(line) for line in records.splitlines()][1] == {"error": "line 2: not valid base64"}
    assert json.loads(records.splitlines()[0]) == json.loads(lines[0])
