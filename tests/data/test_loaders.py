"""Validated COCO channels as detectron2 dataset dicts: the masks reach the model as drawn."""

import pytest

from detector.data.coco import has_rle_masks, load_coco
from detector.data.loaders import to_detectron2_dicts
from detector.data.synthetic import generate
from detector.model_dir import LabelMap

MASK_MODEL = "detector/mask_rcnn_R_18_FPN_128px.yaml"


@pytest.fixture(scope="module")
def mask_dataset(tmp_path_factory):
    return load_coco(generate(tmp_path_factory.mktemp("masks"), num_images=6, image_size=128, seed=4, masks=True))


def test_records_keep_polygons_and_compress_uncompressed_rle(mask_dataset):
    records = to_detectron2_dicts(mask_dataset, LabelMap.from_categories(mask_dataset.categories))
    segmentations = [ann["segmentation"] for record in records for ann in record["annotations"]]
    assert len(segmentations) == len(mask_dataset.annotations)
    assert any(isinstance(s, list) for s in segmentations)
    rles = [s for s in segmentations if isinstance(s, dict)]
    assert rles and all(isinstance(s["counts"], (str, bytes)) for s in rles)


def test_box_records_have_no_segmentation(tmp_path):
    dataset = load_coco(generate(tmp_path, num_images=2, image_size=64, seed=4))
    records = to_detectron2_dicts(dataset, LabelMap.from_categories(dataset.categories))
    assert all("segmentation" not in ann for record in records for ann in record["annotations"])


def test_the_training_mapper_gives_the_drawn_masks(mask_dataset, tmp_path):
    """What the mask head trains on: detectron2's DatasetMapper on the records, with the config training uses."""
    from detectron2.data import DatasetMapper
    from pycocotools import mask as mask_util

    from detector.training.config import build_training_config
    from detector.training.hyperparameters import Hyperparameters

    labels = LabelMap.from_categories(mask_dataset.categories)
    params = Hyperparameters.from_strings({"model": MASK_MODEL, "max_iter": "10", "opts": "INPUT.RANDOM_FLIP none"})
    cfg = build_training_config(params, 3, 6, False, tmp_path / "out", rle_masks=has_rle_masks(mask_dataset))
    assert cfg.INPUT.MASK_FORMAT == "bitmask"
    mapper = DatasetMapper(cfg, is_train=True)
    by_id = {ann["id"]: ann for ann in mask_dataset.annotations}
    for record in to_detectron2_dicts(mask_dataset, labels):
        instances = mapper(record)["instances"]
        expected = [by_id[a["id"]] for a in mask_dataset.annotations if a["image_id"] == record["image_id"]]
        assert len(instances) == len(expected)
        for mask, ann in zip(instances.gt_masks.tensor.numpy(), expected):
            segmentation = ann["segmentation"]
            if isinstance(segmentation, list):
                rle = mask_util.merge(mask_util.frPyObjects(segmentation, 128, 128))
            elif isinstance(segmentation["counts"], list):
                rle = mask_util.frPyObjects(segmentation, 128, 128)
            else:
                rle = segmentation
            truth = mask_util.decode(rle).astype(bool)
            assert (mask & truth).sum() / (mask | truth).sum() > 0.97


def _mask_batch(mask_dataset, tmp_path, workers=0):
    from detector.training.config import build_training_config
    from detector.training.hyperparameters import Hyperparameters

    params = Hyperparameters.from_strings({"model": MASK_MODEL, "max_iter": "10", "opts": "INPUT.RANDOM_FLIP none"})
    cfg = build_training_config(params, 3, 6, False, tmp_path / "out", rle_masks=has_rle_masks(mask_dataset))
    cfg.defrost()
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SOLVER.IMS_PER_BATCH = 3
    return cfg, to_detectron2_dicts(mask_dataset, LabelMap.from_categories(mask_dataset.categories))


def _assert_same_batch(got, expected):
    import torch

    assert type(got) is list and len(got) == len(expected)
    for have, want in zip(got, expected):
        assert have.keys() == want.keys()
        assert torch.equal(have["image"], want["image"]) and have["image"].dtype == want["image"].dtype
        a, b = have["instances"], want["instances"]
        assert a.image_size == b.image_size and a.get_fields().keys() == b.get_fields().keys()
        assert torch.equal(a.gt_boxes.tensor, b.gt_boxes.tensor) and torch.equal(a.gt_classes, b.gt_classes)
        assert type(a.gt_masks) is type(b.gt_masks) and torch.equal(a.gt_masks.tensor, b.gt_masks.tensor)
        assert {k: v for k, v in have.items() if k not in ("image", "instances")} == {
            k: v for k, v in want.items() if k not in ("image", "instances")
        }


def test_a_workers_batch_arrives_whole_with_its_tensors_in_one_buffer(mask_dataset, tmp_path):
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch
    from detectron2.data import DatasetMapper

    from detector.data.loaders import SharedBatch

    cfg, records = _mask_batch(mask_dataset, tmp_path)
    batch = [DatasetMapper(cfg, is_train=True)(dict(r)) for r in records[:3]]
    odd = {
        "scalar": torch.tensor(2.5, dtype=torch.float64), "empty": torch.zeros(0, 4), "flags": torch.tensor([True, False, True]),
        "half": torch.arange(5, dtype=torch.float16), "strided": torch.arange(12).view(3, 4).t(), "tuple": (torch.ones(3, dtype=torch.int32), "text"),
    }
    back = pickle.loads(ForkingPickler.dumps(SharedBatch(batch + [odd])))
    _assert_same_batch(back[:3], batch)
    for key in ("scalar", "empty", "flags", "half", "strided"):
        assert back[3][key].dtype == odd[key].dtype and torch.equal(back[3][key], odd[key]), key
    assert torch.equal(back[3]["tuple"][0], odd["tuple"][0]) and back[3]["tuple"][1] == "text"
    tensors = [d["image"] for d in back[:3]] + [d["instances"].gt_masks.tensor for d in back[:3]] + [back[3]["half"]]
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1  # one buffer, one shared-memory file


def test_loader_workers_give_the_main_process_the_same_batches(mask_dataset, tmp_path):
    from detector.data.loaders import build_test_loader, build_train_loader

    cfg, records = _mask_batch(mask_dataset, tmp_path, workers=0)
    in_process = build_train_loader(cfg, records, 0, 1, start_iter=0)
    expected = [batch for _, batch in zip(range(3), in_process)]
    cfg.DATALOADER.NUM_WORKERS = 2
    got = [batch for _, batch in zip(range(3), build_train_loader(cfg, records, 0, 1, start_iter=0))]
    for have, want in zip(got, expected):
        _assert_same_batch(have, want)
    test_batches = list(build_test_loader(cfg, records, batch_size=4))
    assert [type(b) for b in test_batches] == [list, list] and sum(map(len, test_batches)) == len(records)
