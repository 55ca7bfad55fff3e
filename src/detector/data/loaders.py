"""Validated COCO channels as detectron2 datasets and data loaders."""

from __future__ import annotations

from .coco import CocoDataset
from ..model_dir import LabelMap
from .sampler import ResumableBatchSampler


def to_detectron2_dicts(dataset: CocoDataset, labels: LabelMap) -> list[dict]:
    """detectron2's standard dataset dicts, with contiguous class indices from ``labels``."""
    from detectron2.structures import BoxMode

    index_of = {category_id: i for i, category_id in enumerate(labels.dataset_ids)}
    grouped = dataset.annotations_by_image()
    records = []
    for image in dataset.images:
        records.append(
            {
                "file_name": str(dataset.image_path(image)),
                "image_id": image["id"],
                "height": image["height"],
                "width": image["width"],
                "annotations": [
                    {
                        "bbox": list(ann["bbox"]),
                        "bbox_mode": BoxMode.XYWH_ABS,
                        "category_id": index_of[ann["category_id"]],
                        "iscrowd": int(ann.get("iscrowd", 0)),
                        **({"segmentation": _segmentation(ann["segmentation"])} if "segmentation" in ann else {}),
                    }
                    for ann in grouped[image["id"]]
                ],
            }
        )
    return records


def _segmentation(segmentation):
    """Polygons as they are; RLE compressed (detectron2 decodes compressed RLE only)."""
    if isinstance(segmentation, dict) and isinstance(segmentation["counts"], list):
        from pycocotools import mask as mask_util

        return mask_util.frPyObjects(segmentation, *segmentation["size"])
    return segmentation


def register_dataset(name: str, records: list[dict], labels: LabelMap, json_file: str) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(
        thing_classes=labels.names,
        thing_dataset_id_to_contiguous_id={cid: i for i, cid in enumerate(labels.dataset_ids)},
        json_file=json_file,
        evaluator_type="coco",
    )


def _as_list(batch: list):
    """The collate function: the batch as it is, or, in a loader worker, a :class:`SharedBatch`."""
    import torch

    return SharedBatch(batch) if torch.utils.data.get_worker_info() is not None else batch


# Tensors in a SharedBatch's buffer start at multiples of this many bytes, so each can be viewed in its dtype.
_ALIGN = 64


class SharedBatch:
    """A loader worker's batch, sent to the training process with all its tensors in one buffer.

    torch sends each tensor of a worker's result through its own shared-memory file and file descriptor.
    A detection batch holds about 3 tensors per image (the image, its boxes, its classes, more with
    masks), and receiving 8 images' worth took 8-12 ms of each step on 2 cores, against 3.5-4 ms with
    one buffer (a ready batch, 2026-12-02). Pickling a SharedBatch copies its tensors into one uint8
    buffer and pickles the rest of the batch as it is; unpickling gives back the batch itself (the same
    types, values, dtypes and shapes), each tensor a view of that buffer."""

    def __init__(self, batch):
        self.batch = batch

    def __reduce__(self):
        import io
        import pickle

        import torch

        tensors: list = []
        structure = io.BytesIO()
        pickler = pickle.Pickler(structure, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.persistent_id = lambda obj: (tensors.append(obj) or len(tensors) - 1) if isinstance(obj, torch.Tensor) else None
        pickler.dump(self.batch)
        layout, size = [], 0
        for tensor in tensors:
            nbytes = tensor.numel() * tensor.element_size()
            layout.append((size, nbytes, tensor.dtype, tuple(tensor.shape)))
            size += -(-nbytes // _ALIGN) * _ALIGN
        buffer = torch.empty(size, dtype=torch.uint8)
        for tensor, (offset, nbytes, _, _) in zip(tensors, layout):
            if nbytes:
                buffer[offset : offset + nbytes].copy_(tensor.detach().contiguous().reshape(-1).view(torch.uint8))
        return _unpack_batch, (structure.getvalue(), buffer, layout)


def _unpack_batch(structure: bytes, buffer, layout):
    import io
    import pickle

    tensors = [buffer[offset : offset + nbytes].view(dtype).view(shape) for offset, nbytes, dtype, shape in layout]
    unpickler = pickle.Unpickler(io.BytesIO(structure))
    unpickler.persistent_load = lambda index: tensors[index]
    return unpickler.load()


def _worker_init(worker_id: int) -> None:
    import random

    import numpy as np
    import torch

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(cfg, records: list[dict], rank: int, world_size: int, start_iter: int):
    """Training batches for this rank, resuming the global batch order at ``start_iter``."""
    import torch
    from detectron2.data import DatasetMapper
    from detectron2.data.common import DatasetFromList, MapDataset

    sampler = ResumableBatchSampler(
        [r["width"] >= r["height"] for r in records],
        batch_size=cfg.SOLVER.IMS_PER_BATCH,
        seed=cfg.SEED,
        rank=rank,
        world_size=world_size,
        start_batch=start_iter,
    )
    dataset = MapDataset(DatasetFromList(records, copy=False), DatasetMapper(cfg, is_train=True))
    # Augmentation randomness differs per resume, the data order does not.
    generator = torch.Generator()
    generator.manual_seed(cfg.SEED * 1_000_003 + start_iter * 97 + rank)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=_as_list,
        worker_init_fn=_worker_init,
        generator=generator,
        persistent_workers=False,
    )


# Images per model call in evaluation: training's testing_ap and `detector evaluate` use the same batches.
EVAL_BATCH_SIZE = 8


def build_test_loader(cfg, records: list[dict], batch_size: int = EVAL_BATCH_SIZE):
    """Inference over this rank's shard of ``records`` in original coordinates, ``batch_size`` images per
    model call. The images go in order of size (then id), so each batch pads little: the same records
    always make the same batches, whichever command evaluates them."""
    import torch
    from detectron2.data import DatasetMapper
    from detectron2.data.common import DatasetFromList, MapDataset
    from detectron2.data.samplers import InferenceSampler

    ordered = sorted(records, key=lambda r: (r["height"] * r["width"], r["height"], r["width"], r["image_id"]))
    dataset = MapDataset(DatasetFromList(ordered, copy=False), DatasetMapper(cfg, is_train=False))
    # InferenceSampler gives each rank a contiguous share, so batches stay sorted by size on every rank.
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=torch.utils.data.BatchSampler(InferenceSampler(len(dataset)), batch_size, drop_last=False),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=_as_list,
    )
