"""One training process: detectron2's training loop with Spot-safe checkpoints and COCO metrics.

Runs as the only process (one CPU or GPU) or as one rank of a ``torch.distributed`` job started by
:mod:`detector.training.launch`. Only rank 0 writes checkpoints, metrics lines and the model directory.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from ..data.coco import CocoDataset, find_annotation_file, has_rle_masks, load_coco, require_categories_within, require_masks
from ..data.loaders import build_test_loader, build_train_loader, register_dataset, to_detectron2_dicts
from ..environment import TrainingEnvironment
from ..errors import CheckpointError, InputDataError
from ..evaluation.metrics import CocoMetrics, coco_box_metrics, coco_mask_metrics, predict_dataset, print_metric_lines
from ..model_dir import LabelMap, save_model
from .checkpoint import CheckpointStore, fingerprint_digest
from .config import TEST_DATASET, TRAIN_DATASET, build_training_config, training_precision
from .distributed import Rank, all_gather, barrier
from .hooks import CheckpointHook, PeriodicEvalHook
from ..precision import flush_denormals, inference_copy, prepare_model
from .hyperparameters import Hyperparameters
from .state import TrainingState
from .weights import identity as weights_identity
from .weights import load_weights, local_weights
from .stop import EXIT_CODE_STOPPED, StopRequest, TrainingInterrupted

logger = logging.getLogger("detector.train")

# Config keys that do not change what is trained: a resumed job may change them freely.
_RESUME_NEUTRAL_KEYS = (
    "OUTPUT_DIR",
    "MODEL.DEVICE",
    "MODEL.WEIGHTS",  # where the starting weights live; the fingerprint's "starting weights" is what they are
    "SOLVER.CHECKPOINT_PERIOD",
    "TEST.EVAL_PERIOD",
    "DATALOADER.NUM_WORKERS",
    "VIS_PERIOD",
    "CUDNN_BENCHMARK",
    "SOLVER.AMP.ENABLED",  # the precision: fp32 master weights resume under any precision
)


@dataclass(frozen=True)
class Channels:
    training: CocoDataset
    testing: CocoDataset | None
    labels: LabelMap


def load_channels(env: TrainingEnvironment, params: Hyperparameters) -> Channels:
    if "training" not in env.channels:
        raise InputDataError(
            f"no 'training' channel: expected COCO data in {env.channel_dir('training')}"
        )
    training = load_coco(find_annotation_file(env.channels["training"], "training", params.training_annotations))
    testing = None
    if "testing" in env.channels:
        testing = load_coco(find_annotation_file(env.channels["testing"], "testing", params.testing_annotations))
        require_categories_within(testing, [c.id for c in training.categories], "the training channel's")
    return Channels(training, testing, LabelMap.from_categories(training.categories))


def _flatten(node, prefix: str = "") -> dict:
    flat = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


def training_fingerprint(cfg, channels: Channels) -> dict:
    fingerprint = {k: v for k, v in _flatten(cfg).items() if k not in _RESUME_NEUTRAL_KEYS}
    fingerprint["starting weights"] = weights_identity(cfg.MODEL.WEIGHTS) or "none (from scratch)"
    fingerprint["training data"] = fingerprint_digest(
        {"images": channels.training.images, "annotations": channels.training.annotations}
    )
    fingerprint["categories"] = [[c.id, c.name] for c in channels.labels.categories]
    return json.loads(json.dumps(fingerprint, default=str))


class Trainer:
    """One training process, in named steps that each later feature extends in one place.

    ``__init__`` reads the channels and builds the config; :meth:`run` then goes through
    :meth:`build_model`, :meth:`build_optimizer`, :meth:`build_scheduler`, :meth:`resume_or_load`,
    :meth:`build_train_loader`, :meth:`build_hooks`, :meth:`train`, :meth:`evaluate` and
    :meth:`save_model`. The resumable state is one :class:`TrainingState`.
    """

    def __init__(self, env: TrainingEnvironment, params: Hyperparameters, rank: Rank, stop: StopRequest):
        self.env, self.params, self.rank, self.stop = env, params, rank, stop
        self.channels = load_channels(env, params)
        self.labels = self.channels.labels
        self.cfg = build_training_config(
            params,
            num_classes=self.labels.num_classes,
            dataset_size=len(self.channels.training.images),
            use_gpu=env.num_gpus > 0,
            output_dir=env.checkpoint_dir,
            channels=env.channels,
            world_size=rank.world_size,
            rle_masks=has_rle_masks(self.channels.training),
        )
        if self.cfg.MODEL.MASK_ON:
            for dataset in (self.channels.training, self.channels.testing):
                if dataset is not None:
                    require_masks(dataset, f"hyperparameter 'model'={params.model!r} (a mask model)")
        if self.cfg.SOLVER.IMS_PER_BATCH % rank.world_size:
            raise InputDataError(
                f"hyperparameter 'batch_size'={self.cfg.SOLVER.IMS_PER_BATCH} must be divisible by the number "
                f"of training processes ({rank.world_size})"
            )
        self.train_records = to_detectron2_dicts(self.channels.training, self.labels)
        register_dataset(TRAIN_DATASET, self.train_records, self.labels, str(self.channels.training.json_path))
        # training_ap on a fixed sample: the whole channel can take hours at the end of a long job.
        self.train_eval_dataset = self.channels.training.sample(params.training_eval_images, params.seed)
        self.train_eval_records = self.train_records
        if self.train_eval_dataset is not self.channels.training:
            self.train_eval_records = to_detectron2_dicts(self.train_eval_dataset, self.labels)
            logger.info(
                "training_ap is measured on a fixed sample of %d of the %d training images (hyperparameter training_eval_images)",
                len(self.train_eval_records), len(self.train_records),
            )
        self.test_records = None
        if self.channels.testing is not None:
            self.test_records = to_detectron2_dicts(self.channels.testing, self.labels)
            register_dataset(TEST_DATASET, self.test_records, self.labels, str(self.channels.testing.json_path))
        self.precision = training_precision(params, use_gpu=env.num_gpus > 0)
        self.store = CheckpointStore(env.checkpoint_dir)
        self.fingerprint = training_fingerprint(self.cfg, self.channels)
        self.max_iter = self.cfg.SOLVER.MAX_ITER

    # -- build steps ---------------------------------------------------------------------------

    def build_model(self):
        from detectron2.modeling import build_model
        from detectron2.utils.env import seed_all_rng

        seed_all_rng(self.cfg.SEED + self.rank.rank)
        return prepare_model(build_model(self.cfg), self.precision)

    def build_optimizer(self, model):
        from .optimizer import build_optimizer

        return build_optimizer(self.cfg, model)

    def build_scheduler(self, optimizer):
        from detectron2.solver import build_lr_scheduler

        return build_lr_scheduler(self.cfg, optimizer)

    def build_grad_scaler(self):
        """The grad scaler when the precision needs one (fp16), else None."""
        if not self.precision.needs_grad_scaler:
            return None
        import torch

        return torch.amp.GradScaler("cuda")

    def build_train_loader(self, start_iter: int):
        return build_train_loader(self.cfg, self.train_records, self.rank.rank, self.rank.world_size, start_iter)

    def build_hooks(self, state: TrainingState) -> list:
        from detectron2.engine import hooks
        from detectron2.utils.events import CommonMetricPrinter

        training_hooks = [
            hooks.IterationTimer(),
            hooks.LRScheduler(state.optimizer, state.scheduler),
            # Before the checkpoint hook: a stop request ends the evaluation, then that hook saves and stops.
            PeriodicEvalHook(self.cfg.TEST.EVAL_PERIOD, self.max_iter, lambda: self.evaluate(state.model)),
            CheckpointHook(self.store, state, self.cfg.SOLVER.CHECKPOINT_PERIOD, self.params.checkpoint_minutes, self.stop, self.max_iter),
        ]
        if self.rank.is_main:
            training_hooks.append(hooks.PeriodicWriter([CommonMetricPrinter(self.max_iter)], period=self.params.log_period))
        return training_hooks

    # -- resume, train, evaluate, save ---------------------------------------------------------

    def resume_or_load(self, state: TrainingState) -> int:
        """Restore the newest usable checkpoint of this job into ``state``, else load the starting
        weights; returns the start iteration. Every rank starts from rank 0's choice."""
        if self.params.reset_checkpoints and self.rank.local_rank == 0:  # every host has its own copy
            self.store.reset_once(self.env.job_name)
        barrier(self.rank)
        checkpoint = self.store.latest()
        iterations = all_gather(self.rank, -1 if checkpoint is None else checkpoint.iteration)
        if len(set(iterations)) > 1:
            chosen = iterations[0]
            logger.warning("The hosts' checkpoints differ (iterations %s); every rank uses rank 0's: %s", iterations, chosen)
            checkpoint = None if chosen < 0 else self.store.load(chosen)
            if chosen >= 0 and checkpoint is None:
                raise CheckpointError(
                    f"host {self.env.current_host} has no readable checkpoint_{chosen:08d}.pth in {self.store.directory}, "
                    f"which rank 0 resumes from (it has {[i for i, _ in self.store.files()] or 'none'})"
                )
        if checkpoint is None:
            logger.info("No checkpoint in %s: starting at iteration 0 of %d", self.store.directory, self.max_iter)
            self.load_starting_weights(state.model)
            return 0
        self.store.check_compatible(checkpoint, self.fingerprint)
        start_iter = state.load_state_dict(checkpoint.state)
        logger.info("Resuming from %s at iteration %d of %d", checkpoint.path, start_iter, self.max_iter)
        return start_iter

    def load_starting_weights(self, model) -> None:
        """The pretrained weights named by ``MODEL.WEIGHTS`` (downloaded once per host), or none."""
        source = self.cfg.MODEL.WEIGHTS
        if not source:
            logger.info("Training from scratch: no starting weights")
            return
        if self.rank.local_rank == 0:
            local_weights(source, self.env.weights_cache)  # the download, once per host
        barrier(self.rank)
        load_weights(model, local_weights(source, self.env.weights_cache), source, self.labels)

    def train(self, state: TrainingState, start_iter: int) -> bool:
        """detectron2's training loop from ``start_iter``; False when a stop request ended it (checkpoint saved)."""
        from .loop import PrecisionTrainer

        train_model = state.model
        if self.rank.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.rank.local_rank] if self.cfg.MODEL.DEVICE == "cuda" else None
            train_model = DistributedDataParallel(state.model, device_ids=device_ids, broadcast_buffers=False)
        loader = self.build_train_loader(start_iter)
        trainer = PrecisionTrainer(train_model, loader, state.optimizer, self.precision, state.grad_scaler)
        trainer.register_hooks(self.build_hooks(state))
        try:
            trainer.train(start_iter, self.max_iter)
        except TrainingInterrupted as interrupted:
            logger.warning(
                "%s received: checkpoint saved after iteration %d; a restarted job resumes from it",
                self.stop.signal_name or "Stop request",
                interrupted.iteration,
            )
            return False
        return True

    def evaluate(self, model) -> dict:
        """COCO metrics on the testing channel and a fixed sample of the training channel; prints the
        metric lines on rank 0. Raises EvaluationInterrupted on a stop request."""
        results = {}
        model = inference_copy(model, self.precision)  # the arithmetic of the served model, not the trained one's
        for prefix, dataset, records in (
            ("training", self.train_eval_dataset, self.train_eval_records),
            ("testing", self.channels.testing, self.test_records),
        ):
            if dataset is None:
                continue
            detections = predict_dataset(
                model, build_test_loader(self.cfg, records), self.labels, self.stop.is_set, self.precision
            )
            if self.rank.is_main:
                metrics = coco_box_metrics(dataset, detections, self.labels)
                print_metric_lines(prefix, metrics)
                results[prefix] = _metrics_json(metrics)
                if self.cfg.MODEL.MASK_ON:
                    mask_metrics = coco_mask_metrics(dataset, detections, self.labels)
                    print_metric_lines(f"{prefix}_mask", mask_metrics)
                    results[f"{prefix}_mask"] = _metrics_json(mask_metrics)
        return results

    def save_model(self, model, metrics: dict) -> None:
        if self.rank.is_main:
            save_model(self.env.model_dir, model.state_dict(), self.cfg.dump(), self.labels, metrics)
            logger.info("Model written to %s", self.env.model_dir)
        barrier(self.rank)

    def run(self) -> int:
        logger.info("Precision: %s", self.precision.describe())
        model = self.build_model()
        optimizer = self.build_optimizer(model)
        state = TrainingState(
            model, optimizer, self.build_scheduler(optimizer), self.fingerprint, self.rank, grad_scaler=self.build_grad_scaler()
        )
        start_iter = self.resume_or_load(state)
        started = time.monotonic()
        if start_iter < self.max_iter and not self.train(state, start_iter):
            return EXIT_CODE_STOPPED
        train_seconds = time.monotonic() - started
        # The final checkpoint is saved: a restarted job only redoes the evaluation below.
        self.stop.exit_on_signal()
        metrics = self.evaluate(model)
        metrics["iterations"] = self.max_iter
        metrics["train_seconds_this_run"] = round(train_seconds, 1)
        metrics["precision"] = self.precision.as_json()
        self.save_model(model, metrics)
        return 0


def _metrics_json(metrics: CocoMetrics) -> dict:
    return {
        **metrics.summary(),
        "per_class_ap": {str(k): v for k, v in metrics.per_class_ap.items()},
        "num_images": metrics.num_images,
        "num_detections": metrics.num_detections,
    }


def configure_logging(rank: Rank) -> None:
    from detectron2.utils.logger import setup_logger

    level = logging.INFO if rank.is_main else logging.WARNING
    for name in ("detectron2", "detector", "fvcore"):
        setup_logger(name=name, distributed_rank=rank.rank, abbrev_name=name[:2]).setLevel(level)
    logging.getLogger("fvcore").setLevel(logging.WARNING)


def train_process(env: TrainingEnvironment, params: Hyperparameters, rank: Rank, stop: StopRequest) -> int:
    # First, before torch starts its threads: they copy this thread's floating-point mode.
    if flush_denormals("cuda" if env.num_gpus > 0 else "cpu"):
        logger.debug("Denormal floats are flushed to zero")
    configure_logging(rank)
    trainer = Trainer(env, params, rank, stop)
    stop.install()
    return trainer.run()

