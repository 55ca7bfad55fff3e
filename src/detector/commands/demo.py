"""``detector demo``: train on built-in synthetic data in a local /opt/ml layout."""

from __future__ import annotations

from pathlib import Path

HELP = "train the small demo model on built-in synthetic data (2-core CPU: about 10 minutes)"

DEMO_HYPERPARAMETERS = {
    "model": "detector/faster_rcnn_R_18_FPN_128px.yaml",
    "max_iter": "1000",
    "batch_size": "8",
    "learning_rate": "0.04",
    "checkpoint_period": "200",
    "eval_period": "0",
    "num_workers": "2",
}


def add_arguments(parser) -> None:
    parser.add_argument("--root", type=Path, default=Path("runs/demo"), help="local stand-in for /opt/ml")
    parser.add_argument("--max-iter", type=int, default=1000)


def run(args) -> int:
    import json
    import os
    import subprocess
    import sys

    from ..synthetic import generate_channels

    data = args.root / "input" / "data"
    if not (data / "training").exists():
        generate_channels(data, train_images=256, test_images=64, image_size=256, seed=0)
    config = args.root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    hyperparameters = {**DEMO_HYPERPARAMETERS, "max_iter": str(args.max_iter)}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters, indent=2))
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(args.root.resolve())}
    print(f"Training in {args.root} (SAGEMAKER_BASE_DIR); interrupt and rerun to resume from the last checkpoint")
    return subprocess.call([sys.executable, "-m", "detector", "train"], env=env)
