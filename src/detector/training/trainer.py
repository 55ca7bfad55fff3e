"""One training process: detectron2's training loop with Spot-safe checkpoints and COCO metrics.

Runs as the only process (one CPU or GPU) or as one rank of a ``torch.distributed`` job started by
:mod:`detector.launch`. Only rank 0 writes checkpoints, metrics lines and the model directory.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass

import numpy as np

from ..data import loaders as data_module
from .checkpoint import CheckpointStore, fingerprint_digest
from ..data.coco import CocoDataset, find_annotation_file, load_coco, require_categories_within
from .config import TEST_DATASET, TRAIN_DATASET, build_training_config
from ..environment import TrainingEnvironment
from ..errors import InputDataError
from ..evaluation.metrics import CocoMetrics, coco_box_metrics, predict_dataset, print_metric_lines
from .hyperparameters import Hyperparameters
from ..model_dir import LabelMap, save_model
from .stop import EXIT_CODE_STOPPED, StopRequest, TrainingInterrupted

logger = logging.getLogger("detector.train")

# Config keys that do not change what is trained: a resumed job may change them freely.
_RESUME_NEUTRAL_KEYS = (
    "OUTPUT_DIR",
    "MODEL.DEVICE",
    "SOLVER.CHECKPOINT_PERIOD",
    "TEST.EVAL_PERIOD",
    "DATALOADER.NUM_WORKERS",
    "VIS_PERIOD",
    "CUDNN_BENCHMARK",
)


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Channels:
    training: CocoDataset
    testing: CocoDataset | None
    labels: LabelMap


def load_channels(env: TrainingEnvironment, params: Hyperparameters) -> Channels:
    if "training" not in env.channels:
        raise InputDataError(
            f"no 'training' channel: expected COCO data in {env.base_dir / 'input' / 'data' / 'training'}"
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
    fingerprint["training data"] = fingerprint_digest(
        {"images": channels.training.images, "annotations": channels.training.annotations}
    )
    fingerprint["categories"] = [[c.id, c.name] for c in channels.labels.categories]
    return json.loads(json.dumps(fingerprint, default=str))


def _rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _hooks_module():
    from detectron2.engine import HookBase

    class CheckpointAndStopHook(HookBase):
        """Saves every N iterations, every M minutes, at the end, and on a stop request."""

        def __init__(self, store, state_fn, period, minutes, stop: StopRequest, rank: Rank, max_iter: int):
            self.store, self.state_fn, self.period = store, state_fn, period
            self.seconds = minutes * 60 if minutes > 0 else None
            self.stop, self.rank, self.max_iter = stop, rank, max_iter
            self.last_save = time.monotonic()

        def after_step(self):
            completed = self.trainer.iter + 1
            flags = [
                self.stop.is_set(),
                self.seconds is not None and time.monotonic() - self.last_save >= self.seconds,
            ]
            if self.rank.world_size > 1:
                flags = _any_rank(flags)
            stop, time_due = flags
            if stop or time_due or completed == self.max_iter or completed % self.period == 0:
                self.save(completed, reason="stop request" if stop else None)
            if stop:
                raise TrainingInterrupted(completed)

        def save(self, completed: int, reason: str | None = None):
            started = time.monotonic()
            state = self.state_fn()  # a collective when distributed: every rank takes part
            if self.rank.is_main:
                path = self.store.save(completed, state)
                logger.info(
                    "Saved checkpoint %s%s in %.2f s", path.name, f" ({reason})" if reason else "", time.monotonic() - started
                )
            self.last_save = time.monotonic()
            _barrier(self.rank)

    class PeriodicEvalHook(HookBase):
        def __init__(self, period: int, max_iter: int, evaluate_fn):
            self.period, self.max_iter, self.evaluate_fn = period, max_iter, evaluate_fn

        def after_step(self):
            completed = self.trainer.iter + 1
            if self.period and completed % self.period == 0 and completed != self.max_iter:
                self.evaluate_fn()

    return CheckpointAndStopHook, PeriodicEvalHook


def _any_rank(flags: list[bool]) -> list[bool]:
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def _barrier(rank: Rank) -> None:
    if rank.world_size > 1:
        from detectron2.utils import comm

        comm.synchronize()


class Training:
    """Builds everything for one process and runs it; see :meth:`run`."""

    def __init__(self, env: TrainingEnvironment, params: Hyperparameters, rank: Rank, stop: StopRequest):
        self.env, self.params, self.rank, self.stop = env, params, rank, stop
        self.channels = load_channels(env, params)
        self.cfg = build_training_config(
            params,
            num_classes=self.channels.labels.num_classes,
            dataset_size=len(self.channels.training.images),
            use_gpu=env.num_gpus > 0,
            output_dir=env.checkpoint_dir,
        )
        if self.cfg.SOLVER.IMS_PER_BATCH % rank.world_size:
            raise InputDataError(
                f"hyperparameter 'batch_size'={self.cfg.SOLVER.IMS_PER_BATCH} must be divisible by the number "
                f"of training processes ({rank.world_size})"
            )
        self.labels = self.channels.labels
        self.train_records = data_module.to_detectron2_dicts(self.channels.training, self.labels)
        data_module.register_dataset(TRAIN_DATASET, self.train_records, self.labels, str(self.channels.training.json_path))
        self.test_records = None
        if self.channels.testing is not None:
            self.test_records = data_module.to_detectron2_dicts(self.channels.testing, self.labels)
            data_module.register_dataset(TEST_DATASET, self.test_records, self.labels, str(self.channels.testing.json_path))
        self.store = CheckpointStore(env.checkpoint_dir)
        self.fingerprint = training_fingerprint(self.cfg, self.channels)

    def run(self) -> int:
        import torch
        from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
        from detectron2.modeling import build_model
        from detectron2.solver import build_lr_scheduler, build_optimizer
        from detectron2.solver.lr_scheduler import LRMultiplier
        from detectron2.utils.env import seed_all_rng
        from detectron2.utils.events import CommonMetricPrinter

        cfg, rank = self.cfg, self.rank
        max_iter = cfg.SOLVER.MAX_ITER
        if self.params.reset_checkpoints and rank.is_main and self.store.files():
            logger.warning("reset_checkpoints is set: discarding %d checkpoint(s) in %s", len(self.store.files()), self.store.directory)
            self.store.clear()
        _barrier(rank)
        checkpoint = self.store.latest()
        if checkpoint is not None:
            self.store.check_compatible(checkpoint, self.fingerprint)

        seed_all_rng(cfg.SEED + rank.rank)
        model = build_model(cfg)
        optimizer = build_optimizer(cfg, model)
        start_iter = 0
        if checkpoint is not None:
            state = checkpoint.state
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_iter = checkpoint.iteration
            rng = state.get("rng", {}).get(str(rank.rank))
            if rng is not None:
                _restore_rng_state(rng)
            logger.info("Resuming from %s at iteration %d of %d", checkpoint.path, start_iter, max_iter)
        else:
            logger.info("No checkpoint in %s: starting at iteration 0 of %d", self.store.directory, max_iter)
        scheduler = build_lr_scheduler(cfg, optimizer)
        if start_iter:
            scheduler = LRMultiplier(optimizer, scheduler._multiplier, max_iter, last_iter=start_iter - 1)

        train_model = model
        if rank.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [rank.local_rank] if cfg.MODEL.DEVICE == "cuda" else None
            train_model = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

        loader = data_module.build_train_loader(cfg, self.train_records, rank.rank, rank.world_size, start_iter)
        trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(train_model, loader, optimizer)
        if checkpoint is not None and isinstance(trainer, AMPTrainer) and "grad_scaler" in checkpoint.state:
            trainer.grad_scaler.load_state_dict(checkpoint.state["grad_scaler"])

        def state_fn() -> dict:
            rng_states = _gather_rng_states(rank)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "fingerprint": json.dumps(self.fingerprint, sort_keys=True),
                "rng": rng_states,
            }
            if isinstance(trainer, AMPTrainer):
                state["grad_scaler"] = trainer.grad_scaler.state_dict()
            return state

        CheckpointAndStopHook, PeriodicEvalHook = _hooks_module()
        training_hooks = [
            hooks.IterationTimer(),
            hooks.LRScheduler(optimizer, scheduler),
            CheckpointAndStopHook(
                self.store, state_fn, cfg.SOLVER.CHECKPOINT_PERIOD, self.params.checkpoint_minutes, self.stop, rank, max_iter
            ),
            PeriodicEvalHook(cfg.TEST.EVAL_PERIOD, max_iter, lambda: self.evaluate(model, final=False)),
        ]
        if rank.is_main:
            training_hooks.append(hooks.PeriodicWriter([CommonMetricPrinter(max_iter)], period=self.params.log_period))
        trainer.register_hooks(training_hooks)

        started = time.monotonic()
        if start_iter < max_iter:
            try:
                trainer.train(start_iter, max_iter)
            except TrainingInterrupted as interrupted:
                logger.warning(
                    "%s received: checkpoint saved after iteration %d; a restarted job resumes from it",
                    self.stop.signal_name or "Stop request",
                    interrupted.iteration,
                )
                return EXIT_CODE_STOPPED
        train_seconds = time.monotonic() - started
        del loader, trainer
        # The final checkpoint is saved: a restarted job only redoes the evaluation below.
        self.stop.exit_on_signal()

        metrics = self.evaluate(model, final=True)
        if rank.is_main:
            metrics["iterations"] = max_iter
            metrics["train_seconds_this_run"] = round(train_seconds, 1)
            save_model(self.env.model_dir, model.state_dict(), cfg.dump(), self.labels, metrics)
            logger.info("Model written to %s", self.env.model_dir)
        _barrier(rank)
        return 0

    def evaluate(self, model, final: bool) -> dict:
        """COCO metrics on both channels; prints the metric lines on rank 0."""
        results = {}
        for prefix, dataset, records in (
            ("training", self.channels.training, self.train_records),
            ("testing", self.channels.testing, self.test_records),
        ):
            if dataset is None:
                continue
            loader = data_module.build_test_loader(self.cfg, records)
            detections = predict_dataset(model, loader, self.labels)
            if self.rank.is_main:
                metrics = coco_box_metrics(dataset, detections, self.labels)
                print_metric_lines(prefix, metrics)
                results[prefix] = _metrics_json(metrics)
        return results


def _metrics_json(metrics: CocoMetrics) -> dict:
    return {
        **metrics.summary(),
        "per_class_ap": {str(k): v for k, v in metrics.per_class_ap.items()},
        "num_images": metrics.num_images,
        "num_detections": metrics.num_detections,
    }


def _gather_rng_states(rank: Rank) -> dict:
    if rank.world_size == 1:
        return {"0": _rng_state()}
    from detectron2.utils import comm

    states = comm.gather(_rng_state(), dst=0)
    return {str(i): s for i, s in enumerate(states)} if rank.is_main else {}


def configure_logging(rank: Rank) -> None:
    from detectron2.utils.logger import setup_logger

    level = logging.INFO if rank.is_main else logging.WARNING
    for name in ("detectron2", "detector", "fvcore"):
        setup_logger(name=name, distributed_rank=rank.rank, abbrev_name=name[:2]).setLevel(level)
    logging.getLogger("fvcore").setLevel(logging.WARNING)


def train_process(env: TrainingEnvironment, params: Hyperparameters, rank: Rank, stop: StopRequest) -> int:
    configure_logging(rank)
    training = Training(env, params, rank, stop)
    stop.install()
    return training.run()

