"""The evaluation step on a mask model: `detector evaluate` as the processing job runs it."""

import json

import pytest
from PIL import Image

from detector.pipeline_spec import EVALUATION_FILE, EVALUATION_PLOT

pytestmark = pytest.mark.slow


def test_evaluate_reproduces_the_mask_ap_training_printed(tiny_mask_model, tiny_mask_evaluation):
    base, _ = tiny_mask_model
    output, log = tiny_mask_evaluation
    document = json.loads((output / EVALUATION_FILE).read_text())
    trained = json.loads((base / "model" / "metrics.json").read_text())
    # Same model, same data, same evaluation path: the mask AP training printed (6 decimals) and no other.
    assert document["metrics"]["testing_mask_ap"]["value"] == round(trained["testing_mask"]["ap"], 6)
    assert document["metrics"]["testing_ap"]["value"] == round(trained["testing"]["ap"], 6)
    assert f"testing_mask_ap {trained['testing_mask']['ap']:.6f}" in log
    for name in ("ap50", "ap75"):
        assert f"testing_mask_{name} " in log and 0.0 <= document["metrics"][f"testing_mask_{name}"]["value"] <= 1.0
    assert [c["category_id"] for c in document["per_class_mask_ap"]] == [3, 7, 12]
    with Image.open(output / EVALUATION_PLOT) as plot:
        assert plot.format == "PNG" and plot.width >= 800
