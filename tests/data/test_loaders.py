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
