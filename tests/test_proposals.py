"""detector.proposals: the RPN's proposals for a batch found in threads, the same as detectron2's."""

import copy
import threading

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.modeling.proposal_generator import rpn as detectron2_rpn
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage

from detector.proposals import ThreadedRPN, _slices, use_threaded_proposals


def _rpn():
    cfg = get_cfg()
    cfg.MODEL.RPN.IN_FEATURES = ["p3", "p4"]
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16], [32]]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200, 50
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST, cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 100, 30
    torch.manual_seed(0)
    return build_proposal_generator(cfg, {"p3": ShapeSpec(channels=8, stride=8), "p4": ShapeSpec(channels=8, stride=16)})


def _batch(count: int):
    generator = torch.Generator().manual_seed(count)
    sizes = [(128 - 8 * i, 120 + 4 * i) for i in range(count)]
    images = ImageList(torch.zeros(count, 3, 128, 136), sizes)
    features = {"p3": torch.randn(count, 8, 16, 17, generator=generator), "p4": torch.randn(count, 8, 8, 9, generator=generator)}
    targets = []
    for size in sizes:
        instances = Instances(size)
        instances.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 100.0, 90.0]]))
        targets.append(instances)
    return images, features, targets


def _proposals(rpn, count: int, training: bool, autocast: bool):
    rpn.train(training)
    images, features, targets = _batch(count)
    with EventStorage(0), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):  # (losses log to the storage)
        proposals, _ = rpn(images, features, targets if training else None)
    return proposals


def test_slices_cover_the_batch_in_order():
    assert _slices(8, 2) == [(0, 4), (4, 8)]
    assert _slices(5, 2) == [(0, 2), (2, 5)]
    assert _slices(3, 8) == [(0, 1), (1, 2), (2, 3)]
    assert _slices(1, 4) == [(0, 1)]
    for count, parts in ((7, 3), (16, 5), (2, 2)):
        slices = _slices(count, parts)
        assert slices[0][0] == 0 and slices[-1][1] == count
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(slices, slices[1:]))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("count", [1, 5])
def test_same_proposals_as_detectron2(training, autocast, count, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    theirs = _rpn()
    ours = copy.deepcopy(theirs)
    assert use_threaded_proposals(ours) == 1
    expected = _proposals(theirs, count, training, autocast)
    got = _proposals(ours, count, training, autocast)
    assert len(got) == count
    for a, b in zip(got, expected):
        assert a.image_size == b.image_size
        assert torch.equal(a.proposal_boxes.tensor, b.proposal_boxes.tensor)
        assert torch.equal(a.objectness_logits, b.objectness_logits)


def test_a_batch_is_split_across_threads(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    calls = []
    find = detectron2_rpn.find_top_rpn_proposals

    def spy(proposals, logits, image_sizes, *args):
        calls.append((threading.current_thread().name, len(image_sizes), torch.is_autocast_enabled("cpu"), torch.is_grad_enabled()))
        return find(proposals, logits, image_sizes, *args)

    monkeypatch.setattr(detectron2_rpn, "find_top_rpn_proposals", spy)
    rpn = _rpn()
    use_threaded_proposals(rpn)
    _proposals(rpn, 5, training=True, autocast=True)
    assert sorted(size for _, size, _, _ in calls) == [2, 3]
    assert all(name.startswith("rpn-proposals") for name, *_ in calls)
    assert all(autocast and not grad for _, _, autocast, grad in calls)  # the caller's autocast, no grad
    calls.clear()
    _proposals(rpn, 1, training=False, autocast=False)
    assert [(name, size) for name, size, *_ in calls] == [(threading.current_thread().name, 1)]  # one image: in place


def test_use_threaded_proposals_changes_only_rpns_and_survives_a_copy():
    rpn = _rpn()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), rpn)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_threaded_proposals(model) == 1
    assert type(rpn) is ThreadedRPN
    assert use_threaded_proposals(model) == 0
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert type(copy.deepcopy(model)[1]) is ThreadedRPN
