"""The detectron2 config of a training run: model configs, the schedule, ``opts`` and the checks."""

import re

import pytest

from detector.errors import DetectorError

from detector.errors import HyperparameterError
from detector.training.config import (
    TEST_DATASET,
    TRAIN_DATASET,
    build_training_config,
    load_model_config,
    package_configs,
)
from detector.training.hyperparameters import Hyperparameters

SMALL_MODEL = "detector/faster_rcnn_R_18_FPN_128px.yaml"
# The packaged config's own schedule (see src/detector/training/configs/faster_rcnn_R_18_FPN_128px.yaml).
SMALL_MAX_ITER, SMALL_STEPS, SMALL_WARMUP, SMALL_BATCH = 1000, (750, 920), 100, 8


def params(**raw) -> Hyperparameters:
    return Hyperparameters.from_strings({"model": SMALL_MODEL, **{k: str(v) for k, v in raw.items()}})


def build(hyperparameters: Hyperparameters, tmp_path, num_classes=3, dataset_size=80, use_gpu=False):
    return build_training_config(hyperparameters, num_classes, dataset_size, use_gpu, tmp_path / "output")


def test_packaged_config_loads_on_its_zoo_base():
    cfg = load_model_config(SMALL_MODEL)
    assert SMALL_MODEL in package_configs()
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.FPN.OUT_CHANNELS == 128
    # yaml strings such as "(128,)" are decoded like detectron2's own configs
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (128,)
    assert cfg.SOLVER.MAX_ITER == SMALL_MAX_ITER and tuple(cfg.SOLVER.STEPS) == SMALL_STEPS
    assert cfg.SOLVER.WARMUP_ITERS == SMALL_WARMUP and cfg.SOLVER.IMS_PER_BATCH == SMALL_BATCH
    assert cfg.MODEL.WEIGHTS == "" and not cfg.MODEL.MASK_ON


def test_config_keeps_its_schedule_when_the_run_length_is_not_set(tmp_path):
    cfg = build(params(), tmp_path)
    assert cfg.SOLVER.MAX_ITER == SMALL_MAX_ITER
    assert tuple(cfg.SOLVER.STEPS) == SMALL_STEPS and cfg.SOLVER.WARMUP_ITERS == SMALL_WARMUP


@pytest.mark.parametrize(
    "raw, dataset_size, max_iter",
    [
        ({"max_iter": 100}, 80, 100),
        # 5 epochs of 160 images in batches of 8
        ({"num_epochs": 5}, 160, 100),
        ({"num_epochs": 5, "batch_size": 16}, 320, 100),
        # the smaller of the two
        ({"max_iter": 100, "num_epochs": 50}, 160, 100),
        ({"max_iter": 5000, "num_epochs": 5}, 160, 100),
    ],
)
def test_steps_scale_to_the_same_fractions_of_the_run(tmp_path, raw, dataset_size, max_iter):
    cfg = build(params(**raw), tmp_path, dataset_size=dataset_size)
    assert cfg.SOLVER.MAX_ITER == max_iter
    assert tuple(cfg.SOLVER.STEPS) == (75, 92), "750/1000 and 920/1000 of the run"
    assert cfg.SOLVER.WARMUP_ITERS == 10, "warmup is capped at a tenth of a shortened run"


def test_longer_run_scales_steps_and_keeps_the_warmup(tmp_path):
    cfg = build(params(max_iter=4000), tmp_path)
    assert cfg.SOLVER.MAX_ITER == 4000
    assert tuple(cfg.SOLVER.STEPS) == (3000, 3680)
    assert cfg.SOLVER.WARMUP_ITERS == SMALL_WARMUP


@pytest.mark.parametrize("max_iter", [1, 2, 3])
def test_very_short_runs_keep_only_steps_below_the_run_length(tmp_path, max_iter):
    cfg = build(params(max_iter=max_iter), tmp_path)
    assert cfg.SOLVER.MAX_ITER == max_iter
    assert all(1 <= s < max_iter for s in cfg.SOLVER.STEPS), tuple(cfg.SOLVER.STEPS)
    assert list(cfg.SOLVER.STEPS) == sorted(set(cfg.SOLVER.STEPS))
    assert cfg.SOLVER.WARMUP_ITERS == 1


def test_zoo_schedule_scales_too(tmp_path):
    # faster_rcnn_R_50_FPN_3x: 270000 iterations, drops at 210000 and 250000, 1000 warmup iterations
    zoo = Hyperparameters.from_strings({"model": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "max_iter": "2700"})
    cfg = build(zoo, tmp_path)
    assert cfg.SOLVER.MAX_ITER == 2700 and tuple(cfg.SOLVER.STEPS) == (2100, 2500)
    assert cfg.SOLVER.WARMUP_ITERS == 270
    # The zoo config's ImageNet backbone, as a URL: downloaded when training starts, not here.
    assert cfg.MODEL.WEIGHTS == "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/R-50.pkl"
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2 and cfg.MODEL.RESNETS.NORM == "FrozenBN", "frozen layers hold pretrained values"


def test_zoo_config_from_scratch_trains_every_layer(tmp_path):
    zoo = Hyperparameters.from_strings({"model": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "max_iter": "2700", "weights": "none"})
    cfg = build(zoo, tmp_path)
    assert cfg.MODEL.WEIGHTS == "" and cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.MODEL.RESNETS.NORM == "BN"
    cleared = Hyperparameters.from_strings({"model": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "max_iter": "2700", "opts": 'MODEL.WEIGHTS ""'})
    assert build(cleared, tmp_path).MODEL.WEIGHTS == ""


def test_explicit_steps_in_opts_win_over_the_scaled_ones(tmp_path):
    cfg = build(params(max_iter=100, opts="SOLVER.STEPS (30,60) SOLVER.WARMUP_ITERS 5"), tmp_path)
    assert tuple(cfg.SOLVER.STEPS) == (30, 60) and cfg.SOLVER.WARMUP_ITERS == 5


@pytest.mark.parametrize(
    "raw",
    [
        {"max_iter": 100, "opts": "SOLVER.STEPS (50,100)"},
        {"max_iter": 100, "opts": "SOLVER.STEPS (150,)"},
        # opts shortening the run do not rescale the config's steps (750, 920)
        {"opts": "SOLVER.MAX_ITER 500"},
    ],
)
def test_steps_at_or_beyond_the_run_length_are_refused(tmp_path, raw):
    with pytest.raises(HyperparameterError, match=r"SOLVER\.STEPS .* must all be below the run length") as info:
        build(params(**raw), tmp_path)
    assert "max_iter / num_epochs" in str(info.value)


@pytest.mark.parametrize(
    "opts, fragment",
    [
        ("MODEL.NOT_A_KEY 1", "Non-existent key: MODEL.NOT_A_KEY"),
        ("SOLVER.MAX_ITER many", "Type mismatch"),
        ("SOLVER.STEPS 7", "Type mismatch"),
    ],
)
def test_bad_opts_name_the_hyperparameter(tmp_path, opts, fragment):
    with pytest.raises(HyperparameterError, match=r"^hyperparameter 'opts': ") as info:
        build(params(max_iter=100, opts=opts), tmp_path)
    assert fragment in str(info.value)


def test_odd_opts_are_refused_by_the_hyperparameters_and_by_the_config(tmp_path):
    with pytest.raises(HyperparameterError, match="'opts' must hold KEY VALUE pairs"):
        params(opts="SOLVER.BASE_LR")
    # built without from_strings' validation, the config still refuses them
    with pytest.raises(HyperparameterError, match=r"^hyperparameter 'opts': "):
        build(Hyperparameters(model=SMALL_MODEL, max_iter=100, opts=("SOLVER.BASE_LR",)), tmp_path)


@pytest.mark.parametrize("max_iter", ["0", "-5"])
def test_non_positive_run_length_is_refused(tmp_path, max_iter):
    with pytest.raises(HyperparameterError, match=rf"run length must be positive, got SOLVER\.MAX_ITER={max_iter}$"):
        build(params(opts=f"SOLVER.MAX_ITER {max_iter}"), tmp_path)


def test_max_iter_hyperparameter_zero_never_reaches_the_config():
    with pytest.raises(HyperparameterError, match="'max_iter' must be greater than 0"):
        params(max_iter=0)


@pytest.mark.parametrize("model", [SMALL_MODEL, "COCO-Detection/retinanet_R_50_FPN_1x.yaml"])
def test_num_classes_is_set_for_roi_heads_and_retinanet(tmp_path, model):
    cfg = build(Hyperparameters.from_strings({"model": model, "max_iter": "10"}), tmp_path, num_classes=5)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 5 and cfg.MODEL.RETINANET.NUM_CLASSES == 5


@pytest.mark.parametrize("use_gpu, device", [(False, "cpu"), (True, "cuda")])
def test_device_follows_use_gpu(tmp_path, use_gpu, device):
    assert build(params(max_iter=10), tmp_path, use_gpu=use_gpu).MODEL.DEVICE == device


@pytest.mark.parametrize(
    "precision, use_gpu, native_bf16, enabled",
    [
        ("auto", True, False, True),  # fp16 on the GPU
        ("auto", False, True, True),  # bf16 on a CPU with AMX
        ("auto", False, False, False),  # fp32 elsewhere
        ("fp32", True, True, False),
        ("bf16", False, True, True),
    ],
)
def test_amp_flag_follows_the_precision(tmp_path, monkeypatch, precision, use_gpu, native_bf16, enabled):
    monkeypatch.setattr("detector.precision.cpu_has_native_bf16", lambda: native_bf16)
    cfg = build(params(max_iter=10, precision=precision), tmp_path, use_gpu=use_gpu)
    assert cfg.SOLVER.AMP.ENABLED is enabled


@pytest.mark.parametrize("amp, expected", [("true", "auto"), ("false", "fp32")])
def test_amp_is_the_old_name_of_precision(amp, expected):
    assert Hyperparameters.from_strings({"amp": amp}).precision == expected


def test_fp16_on_a_cpu_is_refused_with_the_hyperparameter_named(tmp_path):
    with pytest.raises(DetectorError, match=r"hyperparameter 'precision'='fp16' needs a CUDA GPU; on CPUs use 'bf16'"):
        build(params(max_iter=10, precision="fp16"), tmp_path, use_gpu=False)


def test_hyperparameters_reach_the_config_and_it_is_frozen(tmp_path):
    raw = dict(max_iter=50, batch_size=4, learning_rate=0.005, checkpoint_period=7, eval_period=9, seed=3, num_workers=0)
    cfg = build(params(**raw), tmp_path)
    assert cfg.SOLVER.IMS_PER_BATCH == 4 and cfg.SOLVER.BASE_LR == 0.005
    assert cfg.SOLVER.CHECKPOINT_PERIOD == 7 and cfg.TEST.EVAL_PERIOD == 9
    assert cfg.SEED == 3 and cfg.DATALOADER.NUM_WORKERS == 0
    assert tuple(cfg.DATASETS.TRAIN) == (TRAIN_DATASET,) and tuple(cfg.DATASETS.TEST) == (TEST_DATASET,)
    assert cfg.OUTPUT_DIR == str(tmp_path / "output")
    assert cfg.is_frozen()


def test_opts_override_the_hyperparameters(tmp_path):
    cfg = build(params(max_iter=50, learning_rate=0.005, opts="SOLVER.BASE_LR 0.5 MODEL.ROI_HEADS.NUM_CLASSES 9"), tmp_path)
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 9


def test_yaml_file_model_keeps_weights_that_exist_locally(tmp_path):
    weights = tmp_path / "init.pth"
    weights.write_bytes(b"")
    config = tmp_path / "model.yaml"
    config.write_text(f"MODEL:\n  WEIGHTS: {weights}\nSOLVER:\n  MAX_ITER: 40\n  STEPS: (30,)\n")
    cfg = build(Hyperparameters.from_strings({"model": str(config)}), tmp_path)
    assert cfg.MODEL.WEIGHTS == str(weights)
    assert cfg.SOLVER.MAX_ITER == 40 and tuple(cfg.SOLVER.STEPS) == (30,)


def test_unknown_packaged_config_lists_the_available_ones():
    with pytest.raises(HyperparameterError, match=re.escape("'model'='detector/nope.yaml': no such packaged config")) as info:
        load_model_config("detector/nope.yaml")
    assert f"available: {SMALL_MODEL}" in str(info.value)


@pytest.mark.parametrize("model", ["COCO-Detection/faster_rcnn_R_50_FPN_9x.yaml", "no/such/file.yaml"])
def test_unknown_model_lists_the_kinds_of_config(model):
    with pytest.raises(HyperparameterError, match=re.escape(f"'model'={model!r} is neither a detectron2 model-zoo config")) as info:
        load_model_config(model)
    assert SMALL_MODEL in str(info.value) and "existing yaml file" in str(info.value)


@pytest.mark.parametrize("model", ["COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml"])
def test_zoo_configs_with_keypoints_are_refused(model):
    with pytest.raises(HyperparameterError, match="needs keypoints; this project trains box detectors and Mask R-CNN"):
        load_model_config(model)


MASK_MODEL = "detector/mask_rcnn_R_18_FPN_128px.yaml"


@pytest.mark.parametrize("model", ["COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", MASK_MODEL])
def test_mask_rcnn_configs_load(model):
    cfg = load_model_config(model)
    assert cfg.MODEL.MASK_ON and cfg.MODEL.ROI_HEADS.NAME == "StandardROIHeads"


def test_packaged_mask_config_is_the_small_box_model_with_a_light_mask_head():
    assert MASK_MODEL in package_configs()
    box, mask = load_model_config(SMALL_MODEL), load_model_config(MASK_MODEL)
    assert mask.MODEL.RESNETS.DEPTH == box.MODEL.RESNETS.DEPTH == 18
    assert tuple(mask.INPUT.MIN_SIZE_TRAIN) == tuple(box.INPUT.MIN_SIZE_TRAIN) and mask.SOLVER.MAX_ITER == box.SOLVER.MAX_ITER
    assert mask.MODEL.ROI_MASK_HEAD.CONV_DIM == 64 and mask.MODEL.ROI_MASK_HEAD.NUM_CONV == 2


def test_a_yaml_file_based_on_a_mask_config_loads_too(tmp_path):
    from detectron2 import model_zoo

    config = tmp_path / "my_mask_rcnn.yaml"
    config.write_text(f"_BASE_: {model_zoo.get_config_file('COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml')}\n")
    assert load_model_config(str(config)).MODEL.MASK_ON


@pytest.mark.parametrize("rle_masks, expected", [(False, "polygon"), (True, "bitmask")])
def test_rle_masks_make_a_mask_model_read_bitmasks(tmp_path, rle_masks, expected):
    hyperparameters = Hyperparameters.from_strings({"model": MASK_MODEL, "max_iter": "10"})
    cfg = build_training_config(hyperparameters, 3, 80, False, tmp_path / "output", rle_masks=rle_masks)
    assert cfg.INPUT.MASK_FORMAT == expected
    # box models are left alone
    assert build_training_config(params(max_iter=10), 3, 80, False, tmp_path / "o", rle_masks=True).INPUT.MASK_FORMAT == "polygon"
