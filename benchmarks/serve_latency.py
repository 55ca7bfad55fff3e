"""Serving latency, side by side on one model and one set of images.

Measures, in interleaved rounds so that background load affects every mode alike:

- raw:        ``Predictor.predict`` on decoded RGB arrays (detectron2's model call, no request handling)
- predict:    the handler path of ``detector predict`` in-process (PNG bytes -> decode -> model -> JSON)
- serve c=N:  ``POST /invocations`` of PNG bytes to a real ``detector serve`` at concurrency N
- direct:     the same request sent past the front, to multi-model-server's loopback port (what the front costs)
- json 1/B:   base64 JSON with one image, and a ``{"instances": [...]}`` batch of B images, concurrency 1

and prints p50/p99 latency, requests/s, images/s, the serving overhead (serve c=1 p50 - raw p50) and
the front's share of it (serve c=1 p50 - direct p50).
``detector predict`` is also run once as a command to show its start-up cost.

Model time by precision (each in a fresh process, alternating, so that one's floating-point mode and
threads do not leak into the other): detectron2's own ``DefaultPredictor`` in fp32 as shipped, against
``Predictor`` at ``DETECTOR_PRECISION=fp32`` and ``auto`` (bf16 + channels-last on CPUs with AMX); p50
of one-image calls and the largest box difference from DefaultPredictor's detections.

Then the mask section (alone with ``--masks-only``): on a 1066x800 image with 20 detections, the
mask post-processing (detectron2 pasting 28x28 mask predictions into the image, as the model's
post-processing does, and the copy out to numpy) and the response encoding with ``masks=none``,
``rle`` and ``polygon``, next to the whole model call of the packaged Mask R-CNN at 800 px.

Usage: python benchmarks/serve_latency.py [--model-dir DIR | --config CONFIG] [--image-size PX] [--rounds R]
Without --model-dir, a model with random weights is built from --config (inference cost does not
depend on training); default: the packaged ResNet-18 FPN at 128 px.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, child_environ  # noqa: E402 (benchmarks/ is sys.path[0] when a script runs)

sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

CATEGORIES = [(3, "circle"), (7, "square"), (12, "triangle")]

# One process per measurement: python -c MODEL_TIME KIND MODEL_DIR IMAGES_DIR CALLS DEVICE
MODEL_TIME = r"""
import json, statistics, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
kind, model_dir, images_dir, calls, device = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(images_dir.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
if kind == "DefaultPredictor":
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.engine import DefaultPredictor
    from detector.model_dir import config_from_yaml
    cfg = config_from_yaml((model_dir / "config.yaml").read_text(), device)
    cfg.defrost(); cfg.MODEL.WEIGHTS = ""; cfg.freeze()
    predictor = DefaultPredictor(cfg)
    predictor.model.load_state_dict(torch.load(model_dir / "model_final.pth", weights_only=True))
    run = lambda image: predictor(image[:, :, ::-1])["instances"]
else:
    from detector.predictor import Predictor
    predictor = Predictor.from_model_dir(model_dir, device, kind)
    run = lambda image: predictor.predict_instances([image])[0]
if device == "cuda":  # a call ends when the GPU's work has (DefaultPredictor's outputs stay on the GPU)
    import torch
    call = run
    run = lambda image: (call(image), torch.cuda.synchronize())[0]
for image in images[:3]:
    run(image)
times = []
for i in range(calls):
    start = time.perf_counter(); run(images[i % len(images)]); times.append(time.perf_counter() - start)
first = run(images[0])
print(json.dumps({"p50_ms": statistics.median(times) * 1000, "boxes": first.pred_boxes.tensor.float().tolist(),
                  "scores": first.scores.float().tolist(), "classes": first.pred_classes.tolist()}))
"""


def model_time(kind: str, model_dir: Path, images_dir: Path, calls: int, device: str = "cpu") -> dict:
    env = child_environ()
    result = subprocess.run([sys.executable, "-c", MODEL_TIME, kind, str(model_dir), str(images_dir), str(calls), device],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"model time {kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare_model_time(model_dir: Path, images_dir: Path, rounds: int, calls: int, device: str) -> dict:
    """DefaultPredictor fp32 against Predictor at fp32 and at auto, one process per measurement, in
    alternating order over ``rounds``; prints a table and returns the p50s and the ratio."""
    import statistics

    runs: dict[str, list[dict]] = {"DefaultPredictor": [], "fp32": [], "auto": []}
    for round_number in range(rounds):
        kinds = list(runs) if round_number % 2 == 0 else list(reversed(runs))
        for kind in kinds:
            runs[kind].append(model_time(kind, model_dir, images_dir, calls, device))
    reference = runs["DefaultPredictor"][0]
    d2_p50 = statistics.median(r["p50_ms"] for r in runs["DefaultPredictor"])
    summary: dict[str, float] = {}
    print(f"\nmodel time on {device}, one image per call, p50 (median over {rounds} processes of {calls} calls):")
    for kind, measured in runs.items():
        p50 = statistics.median(r["p50_ms"] for r in measured)
        worst, unmatched = largest_box_difference(reference, measured[0])
        label = "detectron2 DefaultPredictor, fp32" if kind == "DefaultPredictor" else f"Predictor, DETECTOR_PRECISION={kind}"
        print(f"  {label:40} {p50:7.1f} ms  {p50 / d2_p50:5.2f}x DefaultPredictor's time; "
              f"boxes (score >= 0.5) differ by at most {worst:.2f} px, {unmatched} unmatched")
        summary[f"model_p50_ms_{kind}"] = round(p50, 2)
    summary["model_time_ratio_auto_vs_default_predictor"] = round(summary["model_p50_ms_auto"] / d2_p50, 3)
    return summary


def largest_box_difference(reference: dict, other: dict) -> tuple[float, int]:
    """The largest |coordinate difference| between each reference box and the nearest box of the same
    class in ``other`` (pixels), and how many reference boxes with score >= 0.5 have no match at all."""
    worst, unmatched = 0.0, 0
    others = [(c, b) for c, b in zip(other["classes"], other["boxes"])]
    for c, box, score in zip(reference["classes"], reference["boxes"], reference["scores"]):
        candidates = [max(abs(x - y) for x, y in zip(box, b)) for k, b in others if k == c]
        if not candidates:
            unmatched += score >= 0.5
            continue
        best = min(candidates)
        if score >= 0.5:
            worst = max(worst, best)
    return worst, unmatched


def build_random_model(config: str, model_dir: Path, overrides: dict | None = None) -> None:
    import torch
    from detectron2.modeling import build_model

    from detector.data.coco import Category
    from detector.training.config import load_model_config
    from detector.model_dir import LabelMap, save_model

    cfg = load_model_config(config)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(CATEGORIES)
    cfg.MODEL.RETINANET.NUM_CLASSES = len(CATEGORIES)
    for key, value in (overrides or {}).items():
        cfg.merge_from_list([key, value])
    torch.manual_seed(0)
    model = build_model(cfg)
    labels = LabelMap.from_categories([Category(i, n) for i, n in CATEGORIES])
    save_model(model_dir, model.state_dict(), cfg.dump(), labels, {})


def make_images(count: int, size: int, directory: Path, image_format: str) -> list[Path]:
    from detector.data.synthetic import generate

    generate(directory, num_images=count, image_size=size, seed=1, image_format=image_format)
    return sorted((directory / "images").iterdir())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Mode:
    def __init__(self, name: str, images_per_request: int = 1, concurrency: int = 1):
        self.name = name
        self.images_per_request = images_per_request
        self.concurrency = concurrency
        self.latencies: list[float] = []
        self.wall = 0.0
        self.requests = 0

    def row(self) -> dict:
        n_images = self.requests * self.images_per_request
        return {
            "mode": self.name,
            "requests": self.requests,
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "requests_per_s": self.requests / self.wall if self.wall else float("nan"),
            "images_per_s": n_images / self.wall if self.wall else float("nan"),
            "p50_ms_per_image": percentile(self.latencies, 50) * 1000 / self.images_per_request,
        }


def timed(mode: Mode, calls: list, concurrency: int = 1) -> None:
    """Run ``calls`` (no-argument callables) at ``concurrency``; record latencies and wall time."""
    lock = threading.Lock()

    def one(call):
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        with lock:
            mode.latencies.append(elapsed)

    start = time.perf_counter()
    if concurrency == 1:
        for call in calls:
            one(call)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, calls))
    mode.wall += time.perf_counter() - start
    mode.requests += len(calls)


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, port: int):
        self.port = port
        self.local = threading.local()

    def post(self, body: bytes, content_type: str) -> bytes:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"/invocations answered {response.status}: {data[:300]!r}")
        if response.getheader("connection", "").lower() == "close":
            connection.close()
            self.local.connection = None
        return data


def start_server(base_dir: Path, port: int, workers: int, log_path: Path) -> tuple[subprocess.Popen, float, int]:
    env = {
        **child_environ(),
        "SAGEMAKER_BASE_DIR": str(base_dir),
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
        "DETECTOR_SCORE_THRESHOLD": "0.05",
    }
    start = time.perf_counter()
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "detector", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    while b"ready: http" not in log_path.read_bytes():
        if process.poll() is not None:
            raise SystemExit(f"detector serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    internal = re.search(rb"multi-model-server on 127\.0\.0\.1:(\d+)", log_path.read_bytes())
    return process, time.perf_counter() - start, int(internal.group(1))


def mask_section(rounds: int) -> dict:
    """Mask post-processing and encoding on a 1066x800 image with 20 masks, and the model time."""
    import torch
    from detectron2.layers.mask_ops import paste_masks_in_image

    from detector.predictor import Detection, Predictor
    from detector.serving.encoding import JSON_TYPE, encode_predictions

    width, height, count = 1066, 800, 20
    rng = np.random.default_rng(0)
    sides = rng.uniform(60, 260, size=count)
    x1, y1 = rng.uniform(0, width - sides), rng.uniform(0, height - sides)
    boxes = torch.tensor(np.stack([x1, y1, x1 + sides, y1 + sides * rng.uniform(0.6, 1.0, size=count)], axis=1), dtype=torch.float32)
    # 28x28 mask probabilities, as the mask head predicts them: a soft disc per box.
    grid = torch.linspace(-1, 1, 28)
    disc = torch.sigmoid(6 * (0.8 - (grid[None, :] ** 2 + grid[:, None] ** 2).sqrt()))
    probabilities = disc.expand(count, 1, 28, 28).clone()

    def post_process():
        masks = paste_masks_in_image(probabilities[:, 0], boxes, (height, width), threshold=0.5)
        return masks.numpy()

    masks = post_process()
    detections = [Detection(tuple(b.tolist()), 0.9 - 0.01 * i, 3, "circle", m) for i, (b, m) in enumerate(zip(boxes, masks))]
    calls = {"post-process (paste 20 masks, to numpy)": post_process}
    for mask_format in ("none", "rle", "polygon"):
        calls[f"encode masks={mask_format}"] = lambda f=mask_format: encode_predictions([detections], [(width, height)], False, JSON_TYPE, f)

    with tempfile.TemporaryDirectory(prefix="mask-bench-") as work:
        build_random_model("detector/mask_rcnn_R_18_FPN_128px.yaml", Path(work) / "model",
                           {"INPUT.MIN_SIZE_TEST": 800, "INPUT.MAX_SIZE_TEST": 1333, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
                            "TEST.DETECTIONS_PER_IMAGE": count})
        predictor = Predictor.from_model_dir(Path(work) / "model", "cpu")
    image = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    calls["model call, packaged Mask R-CNN R18 at 800 px (random weights)"] = lambda: predictor.predict_instances([image])
    for call in calls.values():
        call()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    sizes = {f: len(encode_predictions([detections], [(width, height)], False, JSON_TYPE, f)) for f in ("none", "rle", "polygon")}
    result = {name: {"p50_ms": round(percentile(values, 50), 2), "p99_ms": round(percentile(values, 99), 2)} for name, values in times.items()}
    print(f"\nmasks: a {width}x{height} image with {count} detections, {rounds} interleaved rounds")
    print(f"{'step':64} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in result.items():
        print(f"{name:64} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f}")
    print("response bytes: " + ", ".join(f"masks={f} {n}" for f, n in sizes.items()))
    return {"steps": result, "response_bytes": sizes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--config", default="detector/faster_rcnn_R_18_FPN_128px.yaml")
    parser.add_argument("--image-size", type=int, default=256, help="side of the square test images (pixels)")
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg", help="encoding of the test images")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=4, help="requests per mode per round")
    parser.add_argument("--batch", type=int, default=4, help="images per batched JSON request")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="server workers (SAGEMAKER_MODEL_SERVER_WORKERS)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--model-calls", type=int, default=60, help="one-image calls per process in the precision comparison")
    parser.add_argument("--model-rounds", type=int, default=4, help="alternating rounds of the precision comparison")
    parser.add_argument("--mask-rounds", type=int, default=20, help="rounds of the mask section")
    parser.add_argument("--masks-only", action="store_true", help="only the mask section (no server)")
    parser.add_argument("--model-only", action="store_true",
                        help="only the model-time comparison against DefaultPredictor (no server, no masks)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="device of the model-time comparison (default: cuda when available)")
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.model_only:
        work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
        try:
            model_dir = work / "model"
            if args.model_dir:
                shutil.copytree(args.model_dir, model_dir)
            else:
                build_random_model(args.config, model_dir)
            files = make_images(args.images, args.image_size, work / "images", args.format)
            summary = {"config": str(args.model_dir or args.config), "image_size": args.image_size, "device": args.device,
                       **compare_model_time(model_dir, files[0].parent, args.model_rounds, args.model_calls, args.device)}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"summary": summary}, indent=2))
        return 0
    if args.masks_only:
        masks = mask_section(args.mask_rounds)
        if args.json:
            args.json.write_text(json.dumps({"masks": masks}, indent=2))
        return 0

    from dataclasses import replace

    from detector.environment import ServingEnvironment
    from detector.serving.decoding import decode_image
    from detector.serving.inference_handler import InferenceHandler
    from detector.serving.model_server import free_port

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    server = None
    try:
        base = work / "base"
        if args.model_dir:
            shutil.copytree(args.model_dir, base / "model")
        else:
            build_random_model(args.config, base / "model")
        files = make_images(args.images, args.image_size, work / "images", args.format)
        encoded = [f.read_bytes() for f in files]
        settings = replace(ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(base)}), score_threshold=0.05)
        handler = InferenceHandler(settings)
        predictor = handler.model_fn(base / "model")
        arrays = [decode_image(p, handler.limits) for p in encoded]
        single_json = [json.dumps({"image": base64.b64encode(p).decode()}).encode() for p in encoded]
        batches = [
            json.dumps({"instances": [{"image": base64.b64encode(encoded[(i + k) % len(encoded)]).decode()} for k in range(args.batch)]}).encode()
            for i in range(len(encoded))
        ]

        content_type = "image/png" if args.format == "png" else "image/jpeg"
        port = free_port()
        server, startup_s, internal_port = start_server(base, port, args.workers, work / "serve.log")
        client = Client(port)
        direct = Client(internal_port)

        def handler_path(data: bytes) -> None:
            request = handler.decode(data, "application/x-image")
            handler.output_fn(handler.predict_fn(request, predictor), "application/json")

        modes = {
            "raw": Mode("raw Predictor.predict (1 image)"),
            "predict": Mode(f"detector predict path, in-process ({args.format})"),
            "serve1": Mode(f"detector serve HTTP, {args.format}, concurrency 1"),
            "direct1": Mode(f"multi-model-server past the front, {args.format}, c=1"),
            "serveN": Mode(f"detector serve HTTP, {args.format}, concurrency {args.concurrency}", concurrency=args.concurrency),
            "json1": Mode("detector serve HTTP, JSON 1 image, concurrency 1"),
            "jsonB": Mode(f"detector serve HTTP, JSON batch of {args.batch}, concurrency 1", images_per_request=args.batch),
        }
        n = args.per_round
        pick = lambda seq, r: [seq[(r * n + i) % len(seq)] for i in range(n)]  # noqa: E731
        # Warm-up: every path once (first requests pay for lazy initialisation).
        for i in range(3):
            predictor.predict([arrays[i]])
            client.post(encoded[i], content_type)
            direct.post(encoded[i], content_type)
            client.post(batches[i], "application/json")
        for r in range(args.rounds):
            timed(modes["raw"], [lambda a=a: predictor.predict([a]) for a in pick(arrays, r)])
            timed(modes["predict"], [lambda p=p: handler_path(p) for p in pick(encoded, r)])
            timed(modes["serve1"], [lambda p=p: client.post(p, content_type) for p in pick(encoded, r)])
            timed(modes["direct1"], [lambda p=p: direct.post(p, content_type) for p in pick(encoded, r)])
            timed(modes["serveN"], [lambda p=p: client.post(p, content_type) for p in pick(encoded, r)], args.concurrency)
            timed(modes["json1"], [lambda b=b: client.post(b, "application/json") for b in pick(single_json, r)])
            timed(modes["jsonB"], [lambda b=b: client.post(b, "application/json") for b in pick(batches, r)[: max(1, n // args.batch)]])

        command_start = time.perf_counter()
        env = child_environ(SAGEMAKER_BASE_DIR=str(base))
        subprocess.run([sys.executable, "-m", "detector", "predict", *map(str, files)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        command_s = time.perf_counter() - command_start

        if server is not None:  # the comparison below wants the CPUs to itself
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
            server = None
        model_times = compare_model_time(base / "model", files[0].parent, args.model_rounds, args.model_calls, args.device)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    rows = [m.row() for m in modes.values()]
    raw, serve1, direct1 = modes["raw"].row(), modes["serve1"].row(), modes["direct1"].row()
    json1, jsonB = modes["json1"].row(), modes["jsonB"].row()
    summary = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "load_average_at_end": round(os.getloadavg()[0], 2),
        "config": str(args.model_dir or args.config),
        "image_size": args.image_size,
        "image_format": args.format,
        "serve_startup_to_ready_s": round(startup_s, 2),
        "predict_command_s": round(command_s, 2),
        "predict_command_images": len(files),
        "serving_overhead_p50_ms": serve1["p50_ms"] - raw["p50_ms"],
        "front_p50_ms": serve1["p50_ms"] - direct1["p50_ms"],
        "batch_vs_single_json_images_per_s": jsonB["images_per_s"] / json1["images_per_s"],
    }
    print(f"\n{summary['machine']} (1-minute load average at the end: {summary['load_average_at_end']}; "
          f"other jobs on the machine make every number noisy); model {summary['config']}; {args.image_size} px {args.format} images; "
          f"{args.rounds} interleaved rounds of {args.per_round} requests per mode")
    print(f"{'mode':52} {'reqs':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'img/s':>7} {'p50 ms/img':>10}")
    for row in rows:
        print(f"{row['mode']:52} {row['requests']:5d} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
              f"{row['requests_per_s']:7.1f} {row['images_per_s']:7.1f} {row['p50_ms_per_image']:10.1f}")
    print(f"serving overhead (serve c=1 p50 - raw p50): {summary['serving_overhead_p50_ms']:.1f} ms, "
          f"of which the front (serve c=1 p50 - direct p50): {summary['front_p50_ms']:.1f} ms")
    print(f"batched JSON vs one-image JSON, images/s: {summary['batch_vs_single_json_images_per_s']:.2f}x")
    summary.update(model_times)
    print(f"detector serve start-up to ready: {summary['serve_startup_to_ready_s']:.1f} s; "
          f"`detector predict` on {len(files)} images as a command: {command_s:.1f} s (includes start-up)")
    masks = mask_section(args.mask_rounds)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "modes": rows, "masks": masks}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
