"""COCO box and mask metrics as fractions that are never NaN, and the evaluation step's document."""

import io
import json
import math
import re

import numpy as np
import pytest

from detector.data.coco import CocoDataset, load_coco
from detector.evaluation.metrics import (
    SUMMARY_NAMES,
    CocoMetrics,
    _fraction,
    coco_box_metrics,
    coco_mask_metrics,
    encode_masks,
    instances_to_coco_results,
    print_metric_lines,
)
from detector.evaluation.report import evaluation_document
from detector.model_dir import Category, LabelMap
from detector.pipeline_spec import TESTING_AP_PATH

# Non-contiguous ids, like the synthetic data; category 12 has no ground truth box.
CATEGORIES = [Category(7, "square"), Category(3, "circle"), Category(12, "triangle")]
LABELS = LabelMap.from_categories(CATEGORIES)
IMAGES = [
    {"id": 1, "file_name": "a.png", "width": 200, "height": 200},
    {"id": 2, "file_name": "b.png", "width": 200, "height": 200},
]
# COCO buckets by area: small < 32², medium < 96², large above; there is no large box here.
ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20]},  # small
    {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 50, 50]},  # medium
    {"id": 3, "image_id": 2, "category_id": 3, "bbox": [100, 100, 25, 25]},  # small
]


def dataset(tmp_path, annotations=ANNOTATIONS, categories=CATEGORIES) -> CocoDataset:
    """Through the validating loader, so the test data is data the evaluation really gets."""
    path = tmp_path / "annotations.json"
    path.write_text(
        json.dumps(
            {"images": IMAGES, "annotations": annotations, "categories": [{"id": c.id, "name": c.name} for c in categories]}
        )
    )
    return load_coco(path, check_files=False)


def detection(ann: dict, score: float = 0.9, **change) -> dict:
    return {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": list(ann["bbox"]), "score": score, **change}


def assert_fractions_or_none(metrics: CocoMetrics):
    values = {**metrics.summary(), **{f"per_class_ap[{k}]": v for k, v in metrics.per_class_ap.items()}}
    bad = {name: v for name, v in values.items() if v is not None and not (isinstance(v, float) and 0.0 <= v <= 1.0)}
    assert not bad, f"metrics must be fractions in [0, 1] or None, never NaN: {bad}"


@pytest.mark.parametrize(
    "value, expected",
    [
        (-1, None),  # pycocotools: no ground truth in this bucket
        (-1.0, None),
        (-0.5, None),
        (float("nan"), None),
        (float("inf"), None),
        (float("-inf"), None),
        (None, None),
        (np.float64("nan"), None),
        (1.5, 1.0),
        (1.0, 1.0),
        (0.0, 0.0),
        (0.25, 0.25),
        (np.float64(0.75), 0.75),
    ],
)
def test_fraction(value, expected):
    result = _fraction(value)
    assert result == expected
    if expected is not None:
        assert type(result) is float


def test_perfect_detections(tmp_path):
    metrics = coco_box_metrics(dataset(tmp_path), [detection(a) for a in ANNOTATIONS], LABELS)
    assert metrics.summary() == pytest.approx({"ap": 1.0, "ap50": 1.0, "ap75": 1.0, "aps": 1.0, "apm": 1.0, "apl": None})
    assert metrics.apl is None, "no large ground truth box: no large-object AP (pycocotools says -1)"
    assert metrics.per_class_ap == pytest.approx({3: 1.0, 7: 1.0, 12: None})
    assert metrics.num_images == 2 and metrics.num_detections == 3
    assert_fractions_or_none(metrics)


def test_pr_curves_per_category_at_iou_50(tmp_path):
    metrics = coco_box_metrics(dataset(tmp_path), [detection(a) for a in ANNOTATIONS], LABELS)
    assert set(metrics.pr_curves) == {3, 7, 12}
    recall, precision = metrics.pr_curves[3]
    assert len(recall) == len(precision) == 101 and recall[0] == 0.0 and recall[-1] == 1.0
    assert precision == pytest.approx([1.0] * 101)
    assert metrics.pr_curves[12][1] == [0.0] * 101, "no ground truth: a flat curve, not -1"


def test_half_of_a_class_found_and_a_class_missed(tmp_path):
    found = [detection(ANNOTATIONS[0])]  # one of the two circles; the square is missed
    metrics = coco_box_metrics(dataset(tmp_path), found, LABELS)
    # precision 1.0 at recall thresholds 0.00..0.50 (51 of 101), 0 beyond
    assert metrics.per_class_ap[3] == pytest.approx(51 / 101)
    assert metrics.per_class_ap[7] == 0.0
    assert metrics.per_class_ap[12] is None
    assert metrics.ap == pytest.approx((51 / 101 + 0.0) / 2), "AP averages the classes that have ground truth"
    assert_fractions_or_none(metrics)


def test_false_positives_of_a_class_without_ground_truth_give_none_not_nan(tmp_path):
    results = [detection(a) for a in ANNOTATIONS] + [detection(ANNOTATIONS[0], score=0.95, category_id=12)]
    metrics = coco_box_metrics(dataset(tmp_path), results, LABELS)
    assert metrics.per_class_ap == pytest.approx({3: 1.0, 7: 1.0, 12: None})
    assert_fractions_or_none(metrics)


def test_wrong_boxes_score_zero(tmp_path):
    results = [detection(a, bbox=[150, 150, 40, 40]) for a in ANNOTATIONS]
    metrics = coco_box_metrics(dataset(tmp_path), results, LABELS)
    assert metrics.ap == 0.0 and metrics.ap50 == 0.0 and metrics.ap75 == 0.0
    assert metrics.per_class_ap == {3: 0.0, 7: 0.0, 12: None}
    assert_fractions_or_none(metrics)


def test_no_results_give_zeros_where_there_was_something_to_find(tmp_path):
    metrics = coco_box_metrics(dataset(tmp_path), [], LABELS)
    # Small and medium boxes exist, large ones do not: the same None as with wrong detections.
    assert metrics.summary() == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "aps": 0.0, "apm": 0.0, "apl": None}
    wrong = coco_box_metrics(dataset(tmp_path), [detection(a, bbox=[150, 150, 40, 40]) for a in ANNOTATIONS], LABELS)
    assert metrics.summary() == wrong.summary()
    assert metrics.per_class_ap == wrong.per_class_ap == {3: 0.0, 7: 0.0, 12: None}
    assert metrics.num_images == 2 and metrics.num_detections == 0 and metrics.pr_curves == {}
    assert_fractions_or_none(metrics)


def test_size_buckets_without_ground_truth_are_none(tmp_path):
    large_only = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 150, 150]}]
    metrics = coco_box_metrics(dataset(tmp_path, large_only), [detection(large_only[0])], LABELS)
    assert metrics.ap == pytest.approx(1.0) and metrics.apl == pytest.approx(1.0)
    assert metrics.aps is None and metrics.apm is None
    assert metrics.per_class_ap == pytest.approx({3: 1.0, 7: None, 12: None})


def test_coco_dataset_built_directly(tmp_path):
    direct = CocoDataset(tmp_path / "direct.json", IMAGES, ANNOTATIONS, sorted(CATEGORIES, key=lambda c: c.id))
    metrics = coco_box_metrics(direct, [detection(a) for a in ANNOTATIONS], LABELS)
    assert metrics.ap == pytest.approx(1.0) and metrics.per_class_ap == pytest.approx({3: 1.0, 7: 1.0, 12: None})
    assert "area" not in direct.annotations[0], "the dataset's annotations are not modified"


def metrics_with(**change) -> CocoMetrics:
    values = dict(
        ap=0.12345678, ap50=0.5, ap75=0.0, aps=None, apm=0.3333333333, apl=None,
        per_class_ap={3: 0.987654321, 7: None, 12: 0.0}, num_images=4, num_detections=17,
    )
    return CocoMetrics(**{**values, **change})


def test_evaluation_document_leaves_out_buckets_without_ground_truth():
    document = evaluation_document(metrics_with(), LABELS)
    assert document["metrics"] == {
        "testing_ap": {"value": 0.123457},
        "testing_ap50": {"value": 0.5},
        "testing_ap75": {"value": 0.0},
        "testing_apm": {"value": 0.333333},
    }
    assert document["num_images"] == 4 and document["num_detections"] == 17


def test_evaluation_document_per_class_ap_in_label_order_with_null():
    document = evaluation_document(metrics_with(), LABELS)
    assert document["per_class_ap"] == [
        {"category_id": 3, "name": "circle", "ap": 0.987654},
        {"category_id": 7, "name": "square", "ap": None},
        {"category_id": 12, "name": "triangle", "ap": 0.0},
    ]


def test_evaluation_document_is_strict_json_the_pipeline_gate_can_read(tmp_path):
    metrics = coco_box_metrics(dataset(tmp_path), [detection(ANNOTATIONS[0])], LABELS)
    document = json.loads(json.dumps(evaluation_document(metrics, LABELS), allow_nan=False))
    node = document
    for key in TESTING_AP_PATH.split("."):
        node = node[key]
    assert node == round(metrics.ap, 6)
    assert "testing_apl" not in document["metrics"]
    assert [e["ap"] for e in document["per_class_ap"]] == [round(51 / 101, 6), 0.0, None]


def test_evaluation_document_prefix():
    assert set(evaluation_document(metrics_with(), LABELS, prefix="training")["metrics"]) == {
        "training_ap", "training_ap50", "training_ap75", "training_apm",
    }


def test_print_metric_lines():
    stream = io.StringIO()
    print_metric_lines("testing", metrics_with(ap=0.1234564, ap50=1.0, ap75=0.0), stream)
    assert stream.getvalue() == "testing_ap 0.123456\ntesting_ap50 1.000000\ntesting_ap75 0.000000\n"
    # what the pipeline's metric definition captures
    assert re.search(r"testing_ap ([0-9\.]+)", stream.getvalue()).group(1) == "0.123456"
    assert not math.isnan(float(stream.getvalue().split()[1]))


def test_print_metric_lines_defaults_to_stdout(capsys):
    print_metric_lines("training", metrics_with())
    assert capsys.readouterr().out.splitlines() == ["training_ap 0.123457", "training_ap50 0.500000", "training_ap75 0.000000"]


# -- mask metrics -------------------------------------------------------------------------------------


def square_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


MASK_ANNOTATIONS = [
    {**ann, "segmentation": square_polygon(*ann["bbox"]), "area": ann["bbox"][2] * ann["bbox"][3]} for ann in ANNOTATIONS
]


def rle_of(polygons, height=200, width=200):
    from pycocotools import mask as mask_util

    mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, height, width)))
    return encode_masks(mask[None].astype(bool))[0]


def test_mask_metrics_of_the_ground_truth_are_one(tmp_path):
    data = dataset(tmp_path, MASK_ANNOTATIONS)
    results = [detection(ann, segmentation=rle_of(ann["segmentation"])) for ann in MASK_ANNOTATIONS]
    masks = coco_mask_metrics(data, results, LABELS)
    assert masks.ap == masks.ap50 == masks.ap75 == pytest.approx(1.0)
    assert coco_box_metrics(data, results, LABELS).ap == pytest.approx(1.0)
    # pycocotools edits the results it is given; the callers' results stay as they were
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score", "segmentation"}


def test_mask_metrics_judge_the_masks_not_the_boxes(tmp_path):
    data = dataset(tmp_path, MASK_ANNOTATIONS)
    # Perfect boxes, masks covering only the left half of each object: IoU 0.5.
    results = [
        detection(ann, segmentation=rle_of(square_polygon(ann["bbox"][0], ann["bbox"][1], ann["bbox"][2] / 2, ann["bbox"][3])))
        for ann in MASK_ANNOTATIONS
    ]
    assert coco_box_metrics(data, results, LABELS).ap == pytest.approx(1.0)
    masks = coco_mask_metrics(data, results, LABELS)
    assert masks.ap75 == 0.0 and masks.ap50 == pytest.approx(1.0) and masks.ap < 0.2
    assert_fractions_or_none(masks)


def test_no_detections_give_zero_mask_ap_never_nan(tmp_path):
    masks = coco_mask_metrics(dataset(tmp_path, MASK_ANNOTATIONS), [], LABELS)
    assert masks.ap == masks.ap50 == masks.ap75 == 0.0
    assert_fractions_or_none(masks)


def test_mask_metric_lines_and_the_evaluation_document_carry_both(tmp_path):
    data = dataset(tmp_path, MASK_ANNOTATIONS)
    results = [detection(ann, segmentation=rle_of(ann["segmentation"])) for ann in MASK_ANNOTATIONS]
    boxes, masks = coco_box_metrics(data, results, LABELS), coco_mask_metrics(data, results, LABELS)
    stream = io.StringIO()
    print_metric_lines("testing_mask", masks, stream)
    assert stream.getvalue().splitlines() == ["testing_mask_ap 1.000000", "testing_mask_ap50 1.000000", "testing_mask_ap75 1.000000"]
    document = json.loads(json.dumps(evaluation_document(boxes, LABELS, mask_metrics=masks), allow_nan=False))
    assert document["metrics"]["testing_ap"] == {"value": 1.0} and document["metrics"]["testing_mask_ap"] == {"value": 1.0}
    assert {"testing_mask_ap50", "testing_mask_ap75", "testing_mask_aps", "testing_mask_apm"} <= set(document["metrics"])
    assert [c["category_id"] for c in document["per_class_mask_ap"]] == [3, 7, 12]
    assert "per_class_mask_ap" not in evaluation_document(boxes, LABELS)


def test_instances_with_masks_become_rle_results():
    import torch
    from detectron2.structures import Boxes, Instances
    from pycocotools import mask as mask_util

    instances = Instances((20, 30))
    instances.pred_boxes = Boxes(torch.tensor([[2.0, 3.0, 12.0, 9.0]]))
    instances.scores = torch.tensor([0.8])
    instances.pred_classes = torch.tensor([1])
    mask = torch.zeros(1, 20, 30, dtype=torch.bool)
    mask[0, 3:9, 2:12] = True
    instances.pred_masks = mask
    (result,) = instances_to_coco_results(5, instances, LABELS)
    assert result["category_id"] == 7 and result["segmentation"]["size"] == [20, 30]
    assert isinstance(result["segmentation"]["counts"], str)
    assert (mask_util.decode({**result["segmentation"], "counts": result["segmentation"]["counts"].encode()}) == mask[0].numpy()).all()
