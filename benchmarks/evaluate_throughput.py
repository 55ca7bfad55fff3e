"""Throughput of the evaluation step, side by side in one run.

Compares, on the same model and images, the loop that training's testing_ap and `detector evaluate`
run (detectron2 test loader, predict_dataset):
  1-image fp32      one image per model call in fp32 (the loop before batched evaluation)
  batched-8 fp32    EVAL_BATCH_SIZE images per call, in order of size
  batched-8 auto    the same at DETECTOR_PRECISION=auto (bf16 + channels-last on CPUs with AMX)
and the time pycocotools needs for the metrics. The model is the packaged small config with
random weights and no score threshold (every image yields its full detection count), so no
training is needed; timings depend on the architecture and image size, not on the weights.

    python benchmarks/evaluate_throughput.py [--images 64] [--size 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def build_model_dir(directory: Path, labels) -> None:
    from detectron2.modeling import build_model

    from detector.training.config import load_model_config
    from detector.model_dir import save_model

    cfg = load_model_config("detector/faster_rcnn_R_18_FPN_128px.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = labels.num_classes
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.DATALOADER.NUM_WORKERS = 0
    save_model(directory, build_model(cfg).state_dict(), cfg.dump(), labels, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from detector.data.coco import load_coco
    from detector.data.loaders import EVAL_BATCH_SIZE, build_test_loader, to_detectron2_dicts
    from detector.evaluation.metrics import coco_box_metrics, predict_dataset
    from detector.model_dir import LabelMap
    from detector.predictor import Predictor
    from detector.data.synthetic import generate

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        dataset = load_coco(generate(scratch / "test", args.images, args.size, seed=1))
        labels = LabelMap.from_categories(dataset.categories)
        build_model_dir(scratch / "model", labels)
        fp32 = Predictor.from_model_dir(scratch / "model", "cpu", "fp32")
        auto = Predictor.from_model_dir(scratch / "model", "cpu", "auto")
        records = to_detectron2_dicts(dataset, labels)

        def loop(predictor, batch_size):
            loader = build_test_loader(predictor.cfg, records, batch_size)
            return lambda: predict_dataset(predictor.model, loader, labels, precision=predictor.precision)

        modes = {
            "1-image fp32": loop(fp32, 1),
            f"batched-{EVAL_BATCH_SIZE} fp32": loop(fp32, EVAL_BATCH_SIZE),
            f"batched-{EVAL_BATCH_SIZE} {auto.precision.name}": loop(auto, EVAL_BATCH_SIZE),
        }
        for fn in modes.values():
            fn()  # warm-up: first calls build kernels per input shape
        times = {name: [] for name in [*modes, "pycocotools"]}
        for round_number in range(args.rounds):
            for name in modes if round_number % 2 == 0 else reversed(list(modes)):
                started = time.perf_counter()
                detections = modes[name]()
                times[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            coco_box_metrics(dataset, detections, labels)
            times["pycocotools"].append(time.perf_counter() - started)

    print(f"{args.images} images {args.size}x{args.size}, {args.rounds} rounds, torch threads {torch.get_num_threads()}, "
          f"{len(detections)} detections per pass")
    base = statistics.median(times["1-image fp32"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<16} median {median:7.2f} s  {args.images / median:7.1f} images/s  {base / median:5.2f}x the 1-image fp32 loop's speed")


if __name__ == "__main__":
    main()
