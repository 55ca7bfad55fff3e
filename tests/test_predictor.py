"""Predictor: a model directory loaded at a precision; detections always come back in fp32."""

import numpy as np
import pytest
import torch
from PIL import Image

from detector import precision as precision_module
from detector.predictor import Predictor, fp32_instances


def test_fp32_instances_turns_every_float_field_into_fp32():
    from detectron2.structures import Boxes, Instances

    instances = Instances((10, 10))
    instances.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.bfloat16))
    instances.scores = torch.tensor([0.5], dtype=torch.float16)
    instances.pred_classes = torch.tensor([2])
    converted = fp32_instances(instances)
    assert converted.pred_boxes.tensor.dtype == torch.float32 and converted.scores.dtype == torch.float32
    assert converted.pred_classes.dtype == torch.int64


@pytest.mark.slow
def test_bf16_finds_the_boxes_fp32_finds(tiny_model, monkeypatch):
    """Same model and images: nearly every confident fp32 box has a bf16 box on top of it."""
    from detectron2.structures import pairwise_iou

    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)  # bf16 runs on any x86-64 CPU, emulated or not
    model_dir = tiny_model / "model"
    fp32 = Predictor.from_model_dir(model_dir, "cpu", "fp32")
    bf16 = Predictor.from_model_dir(model_dir, "cpu", "auto")
    assert (fp32.precision.name, bf16.precision.name, bf16.precision.channels_last) == ("fp32", "bf16", True)
    images = sorted((tiny_model / "input" / "data" / "testing" / "images").glob("*.png"))[:8]
    best_ious = []
    for path in images:
        image = np.asarray(Image.open(path).convert("RGB"))
        reference, other = fp32.predict_instances([image])[0], bf16.predict_instances([image])[0]
        assert other.pred_boxes.tensor.dtype == torch.float32
        confident = reference[reference.scores >= reference.scores.max() * 0.5]
        if len(confident) and len(other):
            best_ious += pairwise_iou(confident.pred_boxes, other.pred_boxes).max(dim=1).values.tolist()
    assert len(best_ious) >= 20
    # Measured on the tiny model: the 10th percentile IoU is 0.996.
    assert np.percentile(best_ious, 10) > 0.95, sorted(best_ious)[:10]

