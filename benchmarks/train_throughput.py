#!/usr/bin/env python3
"""Training throughput of `detector train` against detectron2's own DefaultTrainer, side by side.

All train the same config (learning-rate schedule included) on the same synthetic data with the
same loader workers for the same number of iterations, each in a fresh process, alternating over
several rounds:

  DefaultTrainer       detectron2's own trainer in fp32, as shipped
  DefaultTrainer+FTZ   the same with torch.set_flush_denormal(True) first (CPU)
  AMPTrainer           detectron2's trainer with SOLVER.AMP.ENABLED, fp16 autocast (GPU)
  detector train       precision=auto (bf16 + channels-last on CPUs with AMX / AVX-512 BF16, fp16 on GPUs)

Throughput is read from the line detectron2's IterationTimer prints for all of them ("Overall
training speed: N iterations in T (S s / it)"), which leaves out the first iterations (start-up,
kernel selection). Prints images/s, both ratios, and a torch.profiler summary of one iteration of
`detector train`'s step (after warm-up) with where its time went.

CPU (default): the small R18-FPN 128 px model, batch 8.
GPU (--gpu):   R50-FPN at 800 x 1066 px, batch 16. ``--json FILE`` also writes every round and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, child_environ

sys.path.insert(0, str(REPO / "src"))  # the parent imports detector too (prepare); no install needed

SPEED = re.compile(r"Overall training speed: (\d+) iterations in [0-9:]+ \(([0-9.]+) s / it\)")

DEFAULT_TRAINER = r"""
import json, sys
from pathlib import Path
import torch
if sys.argv[2] == "ftz":
    torch.set_flush_denormal(True)
amp = sys.argv[2] == "amp"
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
cfg.defrost(); cfg.DATASETS.TEST = (); cfg.SOLVER.AMP.ENABLED = amp; cfg.freeze()
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

# One profiled iteration of detector train's own step, after warm-up, in a fresh process.
PROFILE = r"""
import sys, time
import torch
from detectron2.utils.events import EventStorage
from detector.environment import TrainingEnvironment
from detector.training.hyperparameters import Hyperparameters
from detector.training.loop import PrecisionTrainer
from detector.training.state import TrainingState
from detector.training.stop import StopRequest
from detector.training.trainer import Rank, Trainer, train_process  # noqa: F401 (train_process: same start-up)
from detector.precision import flush_denormals

env = TrainingEnvironment.from_env()
flush_denormals("cuda" if env.num_gpus else "cpu")
trainer = Trainer(env, Hyperparameters.from_strings(env.hyperparameters), Rank(), StopRequest())
model = trainer.build_model()
optimizer = trainer.build_optimizer(model)
state = TrainingState(model, optimizer, trainer.build_scheduler(optimizer), trainer.fingerprint, grad_scaler=trainer.build_grad_scaler())
trainer.load_starting_weights(model)
loop = PrecisionTrainer(model, trainer.build_train_loader(0), optimizer, trainer.precision, state.grad_scaler)
with EventStorage(0) as storage:
    for i in range(int(sys.argv[1])):
        storage.iter = i
        loop.run_step()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if env.num_gpus else [])
    with torch.profiler.profile(activities=activities) as profile:
        start = time.perf_counter()
        loop.run_step()
        step = time.perf_counter() - start
print(f"precision: {trainer.precision.describe()}")
print(f"one step: {step * 1000:.0f} ms, of which waiting for data: {storage.latest()['data_time'][0] * 1000:.0f} ms")
sort = "self_cuda_time_total" if env.num_gpus else "self_cpu_time_total"
print(profile.key_averages().table(sort_by=sort, row_limit=18, max_name_column_width=48))
"""


def prepare(root: Path, hyperparameters: dict, images: int, size: int) -> None:
    from detector.data.synthetic import generate_channels
    from detector.environment import TrainingLayout, write_training_job

    write_training_job(root, hyperparameters, ["training", "testing"])
    generate_channels(TrainingLayout(root).data_dir, images, 8, size, seed=0)


def run(kind: str, root: Path) -> float:
    for stale in ("checkpoints", "model", "d2_output"):
        subprocess.run(["rm", "-rf", str(root / stale)], check=True)
    env = child_environ(SAGEMAKER_BASE_DIR=str(root))
    if kind == "detector":
        cmd = [sys.executable, "-m", "detector", "train"]
    else:
        variant = {"DefaultTrainer+FTZ": "ftz", "AMPTrainer": "amp"}.get(kind, "as-shipped")
        cmd = [sys.executable, "-c", DEFAULT_TRAINER, str(root / "d2_output"), variant]
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
    parser.add_argument("--precision", default="auto", help="detector train's precision hyperparameter (default auto)")

    parser.add_argument("--no-profile", action="store_true", help="skip the profiled iteration")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    if args.gpu:
        iters, batch, size, images = args.iters or 100, 16, 1066, 128
        hyperparameters = {"model": "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml", "batch_size": "16", "weights": "none",
                           "opts": "INPUT.MIN_SIZE_TRAIN (800,) INPUT.MAX_SIZE_TRAIN 1066"}
        workers = args.workers or 8
    else:
        iters, batch, size, images = args.iters or 40, 8, 256, 96
        hyperparameters = {"model": "detector/faster_rcnn_R_18_FPN_128px.yaml", "batch_size": "8"}
        workers = args.workers or 2
    hyperparameters["precision"] = args.precision
    hyperparameters.update(
        {"max_iter": str(iters), "checkpoint_period": str(iters), "num_workers": str(workers), "checkpoint_minutes": "0"}
    )
    # Flushing denormals matters on CPUs (the learning-rate drops); AMP is detectron2's GPU option.
    baselines = ["DefaultTrainer", "AMPTrainer"] if args.gpu else ["DefaultTrainer", "DefaultTrainer+FTZ"]
    results: dict[str, list[float]] = {kind: [] for kind in [*baselines, "detector"]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root, hyperparameters, images, size)
        for round_number in range(args.rounds):
            kinds = list(results) if round_number % 2 == 0 else list(reversed(results))
            for kind in kinds:
                seconds_per_iter = run(kind, root)
                results[kind].append(batch / seconds_per_iter)
                print(f"round {round_number + 1} {kind:>18}: {batch / seconds_per_iter:7.2f} images/s", flush=True)
        profile = ""
        if not args.no_profile:
            env = child_environ(SAGEMAKER_BASE_DIR=str(root))
            profiled = subprocess.run([sys.executable, "-c", PROFILE, "6"], env=env, capture_output=True, text=True)
            profile = profiled.stdout if profiled.returncode == 0 else profiled.stderr[-3000:]
            print("\nprofile of one `detector train` step:\n" + profile)
    median = {kind: statistics.median(values) for kind, values in results.items()}
    print(f"{os.cpu_count()} CPUs; {iters} iterations, batch {batch}, {workers} loader workers, median of {args.rounds} rounds")
    for kind, value in median.items():
        print(f"{'detector train (' + args.precision + ')' if kind == 'detector' else kind:>22}: {value:7.2f} images/s")
    ratios = {f"detector / {kind}": median["detector"] / median[kind] for kind in baselines}
    for name, ratio in ratios.items():
        print(f"{'ratio ' + name:>36}: {ratio:.3f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": "gpu" if args.gpu else "cpu", "iterations": iters, "batch": batch, "loader_workers": workers,
            "precision": args.precision, "images_per_s": results, "median_images_per_s": median, "ratios": ratios,
            "profile": profile,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
