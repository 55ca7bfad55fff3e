import json

import numpy as np

import pytest

from detector.predictor import Detection
from detector.serving.encoding import COCO_TYPE, JSON_TYPE, encode_predictions, mask_to_polygons, mask_to_rle, negotiate
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


# -- masks ------------------------------------------------------------------------------------------


def drawn_mask(width=120, height=90):
    """A disc with a square hole, and a separate triangle: two outer contours and one hole."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 60, 70), fill=1)
    draw.rectangle((30, 35, 38, 43), fill=0)
    draw.polygon([(80, 20), (110, 80), (70, 80)], fill=1)
    return np.asarray(image, dtype=bool)


def decode_polygons(polygons, height, width):
    from pycocotools import mask as mask_util

    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, height, width))).astype(bool)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


MASK = drawn_mask()
MASKED = [Detection((10.0, 10.0, 110.0, 80.0), 0.9, 12, "triangle", MASK), Detection((0.0, 0.0, 5.0, 5.0), 0.4, 3, "circle", np.zeros_like(MASK))]


def test_rle_segmentation_decodes_to_the_mask_in_image_pixels():
    from pycocotools import mask as mask_util

    body = json.loads(encode_predictions([MASKED], [(120, 90)], False, JSON_TYPE))
    first, empty = body["detections"]
    assert first["segmentation"]["size"] == [90, 120] and isinstance(first["segmentation"]["counts"], str)
    assert (mask_util.decode(first["segmentation"]) == MASK).all()
    assert not mask_util.decode(empty["segmentation"]).any()


def test_rle_is_exactly_what_pycocotools_encodes():
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(1)
    masks = [rng.random((int(h), int(w))) < rng.random() for h, w in rng.integers(1, 30, size=(200, 2))]
    masks += [np.zeros((5, 7), dtype=bool), np.ones((5, 7), dtype=bool), MASK]
    for mask in masks:
        expected = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))["counts"].decode("ascii")
        assert mask_to_rle(mask) == {"size": list(mask.shape), "counts": expected}


def test_polygons_are_the_simplified_outer_contours():
    polygons = mask_to_polygons(MASK)
    assert len(polygons) == 2 and all(len(p) % 2 == 0 and len(p) >= 6 for p in polygons)
    assert sum(len(p) for p in polygons) // 2 < 215, "simplified: half the 430 vertices contourpy traces, or fewer"
    filled = MASK.copy()
    filled[35:44, 30:39] = True  # polygons carry no holes
    assert iou(decode_polygons(polygons, *MASK.shape), filled) > 0.95
    xs, ys = np.array([v for p in polygons for v in p[0::2]]), np.array([v for p in polygons for v in p[1::2]])
    assert xs.min() >= 9.5 and xs.max() <= 111.5 and ys.min() >= 9.5 and ys.max() <= 81.5
    assert mask_to_polygons(np.zeros((4, 4), dtype=bool)) == []


def test_a_mask_touching_the_image_border_still_closes():
    mask = np.zeros((30, 40), dtype=bool)
    mask[0:12, 25:40] = True
    (polygon,) = mask_to_polygons(mask)
    assert iou(decode_polygons([polygon], 30, 40), mask) > 0.9


@pytest.mark.parametrize("response_type", [JSON_TYPE, COCO_TYPE])
def test_mask_format_chooses_rle_polygon_or_none(response_type):
    def entries(mask_format):
        body = json.loads(encode_predictions([MASKED], [(120, 90)], False, response_type, mask_format))
        return body if response_type == COCO_TYPE else body["detections"]

    assert isinstance(entries("rle")[0]["segmentation"], dict)
    polygons = entries("polygon")
    assert isinstance(polygons[0]["segmentation"], list) and polygons[1]["segmentation"] == []
    assert all("segmentation" not in entry for entry in entries("none"))
    # The rest of each entry is the same whatever the mask format.
    assert [{k: v for k, v in e.items() if k != "segmentation"} for e in entries("rle")] == entries("none")


def test_box_models_never_answer_a_segmentation():
    for mask_format in ("rle", "polygon"):
        body = json.loads(encode_predictions([DETECTIONS], [(64, 48)], False, JSON_TYPE, mask_format))
        assert all("segmentation" not in d for d in body["detections"])
        assert all("segmentation" not in d for d in json.loads(encode_predictions([DETECTIONS], [(64, 48)], False, COCO_TYPE, mask_format)))


# -- a real `detector serve` of the tiny mask model --------------------------------------------------

# Mean over the drawn shapes of the test images of the best IoU of a served mask: 0.21 measured on
# 2026-12-01 for the tiny mask model (30 iterations from scratch, 2-core Xeon), the same at twice the
# image size; 0.006 after 16 iterations. Untrained, or misplaced masks (wrong scale, transposed) stay
# near 0.
MIN_MEAN_BEST_IOU = 0.1


@pytest.fixture(scope="module")
def mask_server(tiny_mask_model, tmp_path_factory):
    from helpers import serving

    base, _ = tiny_mask_model
    log = tmp_path_factory.mktemp("mask_serve") / "serve.log"
    with serving(base, log, DETECTOR_SCORE_THRESHOLD="0") as url:
        yield url, base


def upscaled_test_images(base, scale=2):
    """The testing channel's images at twice their size (so masks must come back in original-image
    pixels, not the model's 128 px) with their drawn shapes scaled alike."""
    import io

    from PIL import Image
    from pycocotools.coco import COCO
    import contextlib

    channel = base / "input" / "data" / "testing"
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(channel / "annotations.json"))
    for image in coco.dataset["images"]:
        with Image.open(channel / image["file_name"]) as original:
            big = original.convert("RGB").resize((image["width"] * scale, image["height"] * scale), Image.NEAREST)
        buffer = io.BytesIO()
        big.save(buffer, format="PNG")
        shapes = [np.kron(coco.annToMask(ann), np.ones((scale, scale), dtype=np.uint8)).astype(bool)
                  for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))]
        yield buffer.getvalue(), big.size, shapes


def invoke(url, body, masks=None, accept=JSON_TYPE):
    import requests

    headers = {"Content-Type": "image/png", "Accept": accept}
    if masks:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = f"masks={masks}"
    response = requests.post(f"{url}/invocations", data=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_served_rle_masks_decode_to_the_image_lie_in_their_boxes_and_cover_the_shapes(mask_server):
    from pycocotools import mask as mask_util

    url, base = mask_server
    best = []
    for body, (width, height), shapes in upscaled_test_images(base):
        detections = invoke(url, body)["detections"]
        assert detections and len(detections) <= 20
        masks = []
        for d in detections:
            segmentation = d["segmentation"]
            assert set(segmentation) == {"size", "counts"} and isinstance(segmentation["counts"], str)
            mask = mask_util.decode(segmentation).astype(bool)
            assert mask.shape == (height, width)
            ys, xs = np.nonzero(mask)
            if len(xs):
                x1, y1, x2, y2 = d["bbox"]
                assert xs.min() >= np.floor(x1) - 1 and xs.max() <= np.ceil(x2) + 1
                assert ys.min() >= np.floor(y1) - 1 and ys.max() <= np.ceil(y2) + 1
            masks.append(mask)
        best += [max(iou(m, shape) for m in masks) for shape in shapes]
    print(f"mean best IoU {np.mean(best):.3f} over {len(best)} shapes")
    assert np.mean(best) > MIN_MEAN_BEST_IOU


@pytest.mark.slow
def test_served_masks_as_polygons_none_and_in_coco_results(mask_server):
    url, base = mask_server
    body, (width, height), _ = next(upscaled_test_images(base))
    rle = invoke(url, body)["detections"]
    polygons = invoke(url, body, masks="polygon")["detections"]
    assert [d["bbox"] for d in polygons] == [d["bbox"] for d in rle]
    assert all(isinstance(d["segmentation"], list) for d in polygons) and any(d["segmentation"] for d in polygons)
    for d in polygons:
        for polygon in d["segmentation"]:
            assert len(polygon) >= 6 and len(polygon) % 2 == 0
            assert all(-1 <= x <= width + 1 for x in polygon[0::2]) and all(-1 <= y <= height + 1 for y in polygon[1::2])
    assert all("segmentation" not in d for d in invoke(url, body, masks="none")["detections"])
    coco = invoke(url, body, accept=COCO_TYPE)
    assert [r["segmentation"] for r in coco] == [d["segmentation"] for d in rle]
    assert all(set(r) == {"image_id", "category_id", "bbox", "score", "segmentation"} for r in coco)


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
