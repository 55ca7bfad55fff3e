import pytest

from detector.serving.options import InferenceOptions, parse_custom_attributes
from detector.serving.request_errors import BadRequest

DEFAULTS = InferenceOptions(score_threshold=0.5, max_detections=100)


@pytest.mark.parametrize("header", [None, "", "  "])
def test_no_attributes_keep_the_defaults(header):
    assert parse_custom_attributes(header, DEFAULTS) == DEFAULTS


def test_attributes_override_the_defaults():
    assert parse_custom_attributes("score_threshold=0.25, max_detections=7", DEFAULTS) == InferenceOptions(0.25, 7)
    assert parse_custom_attributes("max_detections=3;", DEFAULTS) == InferenceOptions(0.5, 3)


@pytest.mark.parametrize("value, expected", [("rle", "rle"), ("polygon", "polygon"), ("none", "none"), ("Polygon", "polygon")])
def test_masks_attribute_chooses_the_mask_encoding(value, expected):
    assert parse_custom_attributes(f"masks={value},max_detections=5", DEFAULTS) == InferenceOptions(0.5, 5, expected)
    assert DEFAULTS.masks == "rle"


@pytest.mark.parametrize(
    "header, message",
    [
        ("score_threshold", "is not name=value"),
        ("=0.5", "is not name=value"),
        ("threshold=0.5", "unknown attribute 'threshold'; supported: masks, max_detections, score_threshold"),
        ("masks=bitmap", "masks='bitmap', expected rle or polygon or none"),
        ("score_threshold=high", "score_threshold='high', expected a number between 0 and 1"),
        ("score_threshold=1.5", "expected a number between 0 and 1"),
        ("max_detections=0", "max_detections='0', expected a whole number of at least 1"),
        ("max_detections=2.5", "expected a whole number"),
    ],
)
def test_malformed_attributes_name_the_problem(header, message):
    with pytest.raises(BadRequest, match="X-Amzn-SageMaker-Custom-Attributes") as error:
        parse_custom_attributes(header, DEFAULTS)
    assert message in error.value.message
    assert error.value.status == 400
