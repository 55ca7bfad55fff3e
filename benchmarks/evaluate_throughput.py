"""Throughput of the evaluation step, side by side in one run.

Compares, on the same model and images:
  eval-loop   what `detector evaluate` (and training's testing_ap) runs: detectron2 test loader, one image per call
  batched-8   Predictor.predict on decoded images, 8 per call (the serving path)
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

    import numpy as np
    import torch
    from PIL import Image

    from detector.data.coco import load_coco
    from detector.data.loaders import build_test_loader, to_detectron2_dicts
    from detector.evaluation.metrics import coco_box_metrics, predict_dataset
    from detector.model_dir import LabelMap
    from detector.predictor import Predictor
    from detector.data.synthetic import generate

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        dataset = load_coco(generate(scratch / "test", args.images, args.size, seed=1))
        labels = LabelMap.from_categories(dataset.categories)
        build_model_dir(scratch / "model", labels)
        predictor = Predictor.from_model_dir(scratch / "model", "cpu")
        records = to_detectron2_dicts(dataset, labels)
        images = [np.asarray(Image.open(dataset.image_path(i)).convert("RGB")) for i in dataset.images]

        def eval_loop():
            return predict_dataset(predictor.model, build_test_loader(predictor.cfg, records), labels)

        def batched():
            for start in range(0, len(images), 8):
                predictor.predict(images[start:start + 8])

        eval_loop(), batched()  # warm-up: first calls build kernels per input shape
        times = {"eval-loop": [], "batched-8": [], "pycocotools": []}
        for _ in range(args.rounds):
            for name, fn in (("eval-loop", eval_loop), ("batched-8", batched)):
                started = time.perf_counter()
                result = fn()
                times[name].append(time.perf_counter() - started)
                if name == "eval-loop":
                    detections = result
            started = time.perf_counter()
            coco_box_metrics(dataset, detections, labels)
            times["pycocotools"].append(time.perf_counter() - started)

    print(f"{args.images} images {args.size}x{args.size}, {args.rounds} rounds, torch threads {torch.get_num_threads()}, "
          f"{len(detections)} detections per pass")
    base = statistics.median(times["eval-loop"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<12} median {median:7.2f} s  {args.images / median:7.1f} images/s  {median / base:5.2f}x eval-loop time")


if __name__ == "__main__":
    main()
