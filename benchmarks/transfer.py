#!/usr/bin/env python3
"""Does fine-tuning work? Testing AP after N iterations from a pretrained model against N from scratch.

1. Trains a source model on one synthetic dataset (``detector train``, from scratch).
2. Makes a second dataset: other images (another seed) and other categories (other ids and names,
   in another order), so the class heads cannot be reused.
3. Trains N iterations on it twice with the same seed: from scratch, and from the source model
   through the ``pretrained`` channel (a warm start whose categories differ).

Prints both testing APs and their difference. Everything runs as real ``detector train`` processes
on the CPU (the small packaged R18-FPN at 128 px).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, child_environ  # noqa: E402 (benchmarks/ is sys.path[0] when a script runs)

sys.path.insert(0, str(REPO / "src"))

from detector.data.synthetic import generate_channels  # noqa: E402
from detector.environment import TrainingLayout, write_training_job  # noqa: E402

TESTING_AP = re.compile(r"^testing_ap ([0-9.]+)$", re.M)
# The second dataset's categories: other ids, other names, another order.
RELABEL = {3: (40, "disc"), 7: (31, "block"), 12: (25, "spike")}


def hyperparameters(iterations: int, **extra) -> dict:
    return {
        "model": "detector/faster_rcnn_R_18_FPN_128px.yaml",
        "max_iter": iterations,
        "batch_size": 8,
        "learning_rate": 0.04,
        "checkpoint_period": 10_000,
        "num_workers": 1,
        "log_period": 50,
        "seed": 1,
        **extra,
    }


def relabel(channel: Path) -> None:
    path = channel / "annotations.json"
    document = json.loads(path.read_text())
    document["categories"] = [{"id": RELABEL[c["id"]][0], "name": RELABEL[c["id"]][1]} for c in document["categories"]]
    for annotation in document["annotations"]:
        annotation["category_id"] = RELABEL[annotation["category_id"]][0]
    path.write_text(json.dumps(document))


def train(base: Path, label: str) -> float:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "detector", "train"],
        env=child_environ(SAGEMAKER_BASE_DIR=str(base)),
        capture_output=True, text=True,
    )
    output = result.stdout + result.stderr
    match = TESTING_AP.search(output)
    if result.returncode != 0 or not match:
        sys.exit(f"{label} failed (exit {result.returncode}):\n{output[-3000:]}")
    loaded = re.search(r"Starting weights: (.*)", output)
    print(f"{label}: testing_ap {float(match.group(1)):.4f} in {time.monotonic() - started:.0f} s"
          + (f"\n  {loaded.group(1)}" if loaded else ""), flush=True)
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-iterations", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=100, help="N: iterations on the second dataset")
    parser.add_argument("--images", type=int, default=128, help="training images per dataset")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="transfer-") as scratch:
        root = Path(scratch)
        source = root / "source"
        write_training_job(source, hyperparameters(args.source_iterations), ["training", "testing"])
        generate_channels(TrainingLayout(source).data_dir, args.images, 48, 128, seed=0)
        train(source, f"source model ({args.source_iterations} iterations from scratch on dataset A)")

        data = root / "dataset-b"
        channels = generate_channels(data, args.images, 48, 128, seed=7)
        for channel in channels.values():
            relabel(channel)
        results = {}
        for label, extra_channels in (("from scratch", {}), ("fine-tuned from the source model", {"pretrained": source / "model"})):
            base = root / label.replace(" ", "-")
            write_training_job(base, hyperparameters(args.iterations), {**channels, **extra_channels})
            results[label] = train(base, f"{label} ({args.iterations} iterations on dataset B)")
        shutil.rmtree(root, ignore_errors=True)

    scratch_ap, tuned_ap = results["from scratch"], results["fine-tuned from the source model"]
    print(f"testing_ap after {args.iterations} iterations: from scratch {scratch_ap:.4f}, fine-tuned {tuned_ap:.4f} "
          f"(+{tuned_ap - scratch_ap:.4f})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "source_iterations": args.source_iterations, "iterations": args.iterations, "images": args.images,
            "testing_ap_from_scratch": scratch_ap, "testing_ap_fine_tuned": tuned_ap,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
