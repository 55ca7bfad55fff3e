"""Build the detectron2 config of a training run from the hyperparameters.

Order of precedence, lowest first: the model config (a detectron2 model-zoo path such as
``COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml``, a config shipped with this package such as
``detector/faster_rcnn_R_18_FPN_128px.yaml``, or a yaml file path), then the hyperparameters
(batch size, learning rate, run length), then ``opts`` (``KEY VALUE`` pairs, like detectron2's tools).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import yaml

from ..errors import HyperparameterError
from ..precision import Precision, resolve
from .hyperparameters import Hyperparameters
from .weights import resolve_source

logger = logging.getLogger("detector.train")

PACKAGE_CONFIG_PREFIX = "detector/"
PACKAGE_CONFIG_DIR = Path(__file__).parent / "configs"
TRAIN_DATASET = "detector_training"
TEST_DATASET = "detector_testing"


def package_configs() -> list[str]:
    return sorted(PACKAGE_CONFIG_PREFIX + p.name for p in PACKAGE_CONFIG_DIR.glob("*.yaml"))


def load_model_config(model: str):
    """The detectron2 CfgNode named by the ``model`` hyperparameter (box detectors and Mask R-CNN)."""
    cfg = _read_model_config(model)
    if cfg.MODEL.KEYPOINT_ON:
        raise HyperparameterError(
            f"hyperparameter 'model'={model!r} needs keypoints; this project trains box detectors and Mask R-CNN"
        )
    return cfg


def _read_model_config(model: str):
    from detectron2 import model_zoo
    from detectron2.config import CfgNode, get_cfg

    cfg = get_cfg()
    if model.startswith(PACKAGE_CONFIG_PREFIX):
        path = PACKAGE_CONFIG_DIR / model[len(PACKAGE_CONFIG_PREFIX):]
        if not path.is_file():
            raise HyperparameterError(
                f"hyperparameter 'model'={model!r}: no such packaged config; available: {', '.join(package_configs())}"
            )
        overrides = yaml.safe_load(path.read_text())
        base = overrides.pop("_BASE_")
        cfg.merge_from_file(model_zoo.get_config_file(base))
        cfg.merge_from_other_cfg(CfgNode(overrides))
        return cfg
    if Path(model).is_file():
        cfg.merge_from_file(model)
        return cfg
    try:
        cfg.merge_from_file(model_zoo.get_config_file(model))
    except RuntimeError:
        raise HyperparameterError(
            f"hyperparameter 'model'={model!r} is neither a detectron2 model-zoo config "
            f"(like COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml), a packaged config "
            f"({', '.join(package_configs())}) nor an existing yaml file"
        ) from None
    return cfg


def training_precision(params: Hyperparameters, use_gpu: bool) -> Precision:
    """The precision the ``precision`` hyperparameter means on this machine."""
    return resolve(params.precision, "cuda" if use_gpu else "cpu", "hyperparameter 'precision'")


def build_training_config(
    params: Hyperparameters,
    num_classes: int,
    dataset_size: int,
    use_gpu: bool,
    output_dir: Path,
    channels: Mapping[str, Path] | None = None,
    world_size: int = 1,
    rle_masks: bool = False,
):
    """The complete, frozen config of a training run.

    ``rle_masks``: the training data has RLE masks, which detectron2 reads only as bitmasks, so a mask
    model's ``INPUT.MASK_FORMAT`` becomes ``bitmask``.

    ``MODEL.WEIGHTS`` ends up as where training starts (a URL, an absolute path, or "" for from
    scratch; see :mod:`detector.training.weights`); nothing is downloaded here."""
    cfg = load_model_config(params.model)
    zoo_max_iter = cfg.SOLVER.MAX_ITER
    zoo_steps = tuple(cfg.SOLVER.STEPS)

    cfg.MODEL.DEVICE = "cuda" if use_gpu else "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.DATASETS.TRAIN = (TRAIN_DATASET,)
    cfg.DATASETS.TEST = (TEST_DATASET,)
    if params.batch_size is not None:
        cfg.SOLVER.IMS_PER_BATCH = params.batch_size
    if params.learning_rate is not None:
        cfg.SOLVER.BASE_LR = params.learning_rate
    max_iter = params.run_length(dataset_size, cfg.SOLVER.IMS_PER_BATCH, zoo_max_iter)
    if max_iter != zoo_max_iter:
        # Keep the schedule's shape: learning-rate drops at the same fractions of the run.
        scaled = {max(1, round(s * max_iter / zoo_max_iter)) for s in zoo_steps}
        cfg.SOLVER.STEPS = tuple(sorted(s for s in scaled if s < max_iter))
        cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max(1, max_iter // 10))
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.CHECKPOINT_PERIOD = params.checkpoint_period
    # What detectron2's own tools read; detector train runs the precision itself (training/loop.py).
    cfg.SOLVER.AMP.ENABLED = training_precision(params, use_gpu).mixed
    cfg.TEST.EVAL_PERIOD = params.eval_period
    cfg.DATALOADER.NUM_WORKERS = params.num_workers
    cfg.SEED = params.seed
    cfg.OUTPUT_DIR = str(output_dir)
    if params.opts:
        try:
            cfg.merge_from_list(list(params.opts))
        except (KeyError, ValueError, AssertionError, TypeError) as e:
            raise HyperparameterError(f"hyperparameter 'opts': {e}") from None
    # Where training starts: the hyperparameter, else MODEL.WEIGHTS set in opts, else the pretrained
    # channel, else the model config's own MODEL.WEIGHTS.
    if params.weights is not None:
        cfg.MODEL.WEIGHTS = resolve_source(params.weights, "", {})
    else:
        in_opts = "MODEL.WEIGHTS" in params.opts[::2]
        cfg.MODEL.WEIGHTS = resolve_source(None, cfg.MODEL.WEIGHTS, {} if in_opts else dict(channels or {}))
    if not cfg.MODEL.WEIGHTS:
        adjust_for_scratch(cfg, use_gpu and world_size > 1)
    if cfg.MODEL.MASK_ON and rle_masks and cfg.INPUT.MASK_FORMAT != "bitmask":
        logger.info("The training data has RLE masks: INPUT.MASK_FORMAT %s -> bitmask", cfg.INPUT.MASK_FORMAT)
        cfg.INPUT.MASK_FORMAT = "bitmask"
    if cfg.SOLVER.MAX_ITER <= 0:
        raise HyperparameterError(f"the run length must be positive, got SOLVER.MAX_ITER={cfg.SOLVER.MAX_ITER}")
    if any(step >= cfg.SOLVER.MAX_ITER for step in cfg.SOLVER.STEPS):
        raise HyperparameterError(
            f"SOLVER.STEPS {tuple(cfg.SOLVER.STEPS)} must all be below the run length {cfg.SOLVER.MAX_ITER} "
            "(set with max_iter / num_epochs)"
        )
    cfg.freeze()
    return cfg


def adjust_for_scratch(cfg, several_gpus: bool) -> list[str]:
    """From scratch, nothing may stay frozen at its random initial value: the backbone trains from
    its first layer, and frozen batch norm becomes trainable (SyncBN across several GPUs, else BN).
    Returns the changes, which are also logged."""
    changes = []
    if cfg.MODEL.BACKBONE.FREEZE_AT > 0:
        changes.append(f"MODEL.BACKBONE.FREEZE_AT {cfg.MODEL.BACKBONE.FREEZE_AT} -> 0")
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
    norm = "SyncBN" if several_gpus else "BN"
    for key in ("RESNETS", "FPN"):
        node = getattr(cfg.MODEL, key)
        if node.NORM == "FrozenBN":
            changes.append(f"MODEL.{key}.NORM FrozenBN -> {norm}")
            node.NORM = norm
    if changes:
        logger.info(
            "Training from scratch: no layer may stay frozen at random values, so %s. Set weights (or the "
            "pretrained channel) to fine-tune instead", "; ".join(changes),
        )
    return changes
