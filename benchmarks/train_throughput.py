#!/usr/bin/env python3
"""Training throughput of `detector train` against detectron2's own DefaultTrainer, side by side.

Both train the same config on the same synthetic data for the same number of iterations, each in a
fresh process, alternating over several rounds. Throughput is read from the line detectron2's
IterationTimer prints for both ("Overall training speed: N iterations in T (S s / it)"), which
leaves out the first iterations (start-up, kernel selection). Prints images/s and the ratio.

CPU (default): the small R18-FPN 128 px model, batch 8.
GPU (--gpu):   R50-FPN at the zoo's 800 px, batch 16; `detector train` with AMP, DefaultTrainer fp32.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEED = re.compile(r"Overall training speed: (\d+) iterations in [0-9:]+ \(([0-9.]+) s / it\)")

DEFAULT_TRAINER = r"""
import json, sys
from pathlib import Path
from detectron2.engine import DefaultTrainer
from detector.data import loaders as data_module
from detector.training.config import TRAIN_DATASET, build_training_config
from detector.environment import TrainingEnvironment
from detector.training.hyperparameters import Hyperparameters
from detector.training.trainer import configure_logging, load_channels, Rank

env = TrainingEnvironment.from_env()
params = Hyperparameters.from_strings(env.hyperparameters)
channels = load_channels(env, params)
cfg = build_training_config(params, channels.labels.num_classes, len(channels.training.images), env.num_gpus > 0, Path(sys.argv[1]))
cfg.defrost(); cfg.DATASETS.TEST = (); cfg.SOLVER.AMP.ENABLED = False; cfg.freeze()
records = data_module.to_detectron2_dicts(channels.training, channels.labels)
data_module.register_dataset(TRAIN_DATASET, records, channels.labels, str(channels.training.json_path))
configure_logging(Rank())
from detectron2.utils.events import CommonMetricPrinter


class Trainer(DefaultTrainer):
    def build_writers(self):  # detector train prints the same metrics; no tensorboard here
        return [CommonMetricPrinter(self.max_iter)]


Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
trainer = Trainer(cfg)
trainer.resume_or_load(resume=False)
trainer.train()
"""


def prepare(root: Path, hyperparameters: dict, images: int, size: int) -> None:
    from detector.data.synthetic import generate_channels
    from detector.environment import TrainingLayout, write_training_job

    write_training_job(root, hyperparameters, ["training", "testing"])
    generate_channels(TrainingLayout(root).data_dir, images, 8, size, seed=0)


def run(kind: str, root: Path) -> float:
    for stale in ("checkpoints", "model", "d2_output"):
        subprocess.run(["rm", "-rf", str(root / stale)], check=True)
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root), "PYTHONPATH": str(REPO / "src")}
    if kind == "detector":
        cmd = [sys.executable, "-m", "detector", "train"]
    else:
        cmd = [sys.executable, "-c", DEFAULT_TRAINER, str(root / "d2_output")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    match = SPEED.search(result.stdout + result.stderr)
    if result.returncode != 0 or not match:
        sys.exit(f"{kind} failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
    return float(match.group(2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="R50-FPN, batch 16, AMP for detector train")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="data loader workers (default: 2 CPU, 8 GPU)")
    args = parser.parse_args()

    if args.gpu:
        iters, batch, size, images = args.iters or 100, 16, 1066, 128
        hyperparameters = {"model": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "batch_size": "16", "amp": "true"}
        workers = args.workers or 8
    else:
        iters, batch, size, images = args.iters or 40, 8, 256, 96
        hyperparameters = {"model": "detector/faster_rcnn_R_18_FPN_128px.yaml", "batch_size": "8", "amp": "false"}
        workers = args.workers or 2
    hyperparameters.update(
        {"max_iter": str(iters), "checkpoint_period": str(iters), "num_workers": str(workers), "checkpoint_minutes": "0"}
    )
    results: dict[str, list[float]] = {"detector": [], "DefaultTrainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root, hyperparameters, images, size)
        for round_number in range(args.rounds):
            for kind in ("DefaultTrainer", "detector") if round_number % 2 == 0 else ("detector", "DefaultTrainer"):
                seconds_per_iter = run(kind, root)
                results[kind].append(batch / seconds_per_iter)
                print(f"round {round_number + 1} {kind:>14}: {batch / seconds_per_iter:7.2f} images/s", flush=True)
    ours, theirs = statistics.median(results["detector"]), statistics.median(results["DefaultTrainer"])
    print(f"detector train : {ours:.2f} images/s (median of {args.rounds})")
    print(f"DefaultTrainer : {theirs:.2f} images/s (median of {args.rounds})")
    print(f"ratio          : {ours / theirs:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
