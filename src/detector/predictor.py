"""Load a model directory and run batched inference on RGB images.

Shared by serving, ``detector predict`` and ``detector evaluate``. Images are resized the way the
model was tested during training (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``), run as one batch,
and the boxes come back in original-image pixels with the dataset's own category ids.

The arithmetic runs at the precision ``DETECTOR_PRECISION`` names (:mod:`detector.precision`; ``auto``:
bf16 with channels-last on CPUs with AMX / AVX-512 BF16, fp16 on GPUs); results are always fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelDirectoryError
from .model_dir import LabelMap, config_from_yaml, read_model_dir
from .precision import Precision, flush_denormals, prepare_inference_model, resolve


@dataclass(frozen=True)
class Detection:
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels
    score: float
    category_id: int
    label: str
    mask: np.ndarray | None = None  # a mask model's HxW boolean mask in original-image pixels


class Predictor:
    def __init__(self, model, cfg, labels: LabelMap, precision: Precision | None = None):
        from detectron2.data import transforms as T

        self.precision = precision or resolve("fp32", cfg.MODEL.DEVICE)
        self.model = model
        self.cfg = cfg
        self.labels = labels
        self.device = cfg.MODEL.DEVICE
        self.input_format = cfg.INPUT.FORMAT
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)

    @classmethod
    def from_model_dir(cls, model_dir: Path, device: str | None = None, precision: str = "auto") -> "Predictor":
        import torch
        from detectron2.modeling import build_model

        files = read_model_dir(model_dir)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        chosen = resolve(precision, device, "DETECTOR_PRECISION")
        flush_denormals(device)  # before the model's first operation starts torch's threads
        try:
            cfg = config_from_yaml(files.config_yaml, device)
        except Exception as e:
            raise ModelDirectoryError(f"{model_dir / 'config.yaml'}: not a usable detectron2 config ({e})") from e
        num_classes = cfg.MODEL.RETINANET.NUM_CLASSES if cfg.MODEL.META_ARCHITECTURE == "RetinaNet" else cfg.MODEL.ROI_HEADS.NUM_CLASSES
        if num_classes != files.labels.num_classes:
            raise ModelDirectoryError(
                f"{model_dir}: config.yaml has {num_classes} classes but labels.json lists {files.labels.num_classes}"
            )
        model = build_model(cfg)
        state = files.load_state_dict()
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelDirectoryError(
                f"{files.weights_path}: weights do not match config.yaml "
                f"(missing {len(missing)} tensors, e.g. {missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})"
            )
        model.eval()
        return cls(prepare_inference_model(model, chosen), cfg, files.labels, chosen)

    def _to_input(self, image: np.ndarray) -> dict:
        import torch

        height, width = image.shape[:2]
        if self.input_format == "BGR":
            image = image[:, :, ::-1]
        resized = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    def predict_instances(self, images: list[np.ndarray]) -> list:
        """detectron2 Instances per image (HxWx3 uint8 RGB arrays), one model call for the batch."""
        import torch

        with torch.inference_mode(), self.precision.autocast():
            outputs = self.model([self._to_input(image) for image in images])
        return [fp32_instances(output["instances"]) for output in outputs]

    def predict(self, images: list[np.ndarray], score_threshold: float = 0.0, max_detections: int | None = None) -> list[list[Detection]]:
        results = []
        for instances in self.predict_instances(images):
            boxes = instances.pred_boxes.tensor.numpy().tolist()
            scores = instances.scores.numpy().tolist()
            classes = instances.pred_classes.numpy().tolist()
            masks = instances.pred_masks.numpy() if instances.has("pred_masks") else [None] * len(boxes)
            detections = [
                Detection(tuple(box), score, self.labels.categories[c].id, self.labels.categories[c].name, mask)
                for box, score, c, mask in zip(boxes, scores, classes, masks)
                if score >= score_threshold
            ]
            detections.sort(key=lambda d: d.score, reverse=True)
            results.append(detections[:max_detections] if max_detections is not None else detections)
        return results


def fp32_instances(instances):
    """``instances`` on the CPU with every floating-point field in fp32 (autocast leaves some in bf16 / fp16)."""
    import torch

    instances = instances.to("cpu")
    for name, value in instances.get_fields().items():
        tensor = getattr(value, "tensor", value)
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.dtype != torch.float32:
            if tensor is value:
                instances.set(name, value.float())
            else:
                value.tensor = tensor.float()
    return instances
