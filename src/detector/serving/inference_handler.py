"""``model_fn`` / ``input_fn`` / ``predict_fn`` / ``output_fn`` with the inference toolkit's signatures.

Independent of any server: ``handler_service`` plugs these into multi-model-server, and
``detector predict`` and the tests call them directly. ``context`` is multi-model-server's request
context (only its request headers and ``gpu_id`` are used); without one, defaults apply.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..environment import ServingEnvironment
from ..errors import DetectorError
from ..predictor import Detection, Predictor
from .decoding import DecodedImages, DecodeLimits, JsonLine, decode_body, decode_json_line
from .encoding import COCO_TYPE, JSONLINES_TYPE, SUPPORTED_ACCEPT, encode_json_lines, encode_predictions, negotiate
from .options import CUSTOM_ATTRIBUTES_HEADER, InferenceOptions, parse_custom_attributes
from .request_errors import NotAcceptable, PayloadTooLarge, RequestError

logger = logging.getLogger("detector.serving")


@dataclass(frozen=True)
class InferenceRequest:
    decoded: DecodedImages
    options: InferenceOptions


@dataclass(frozen=True)
class InferenceResult:
    detections: list[list[Detection]]
    sizes: list[tuple[int, int]]  # (width, height) of each original image
    batch: bool
    masks: str = "rle"  # how a mask model's masks are encoded: rle, polygon or none
    # A JSON Lines request: per record, (detections, (width, height)) or the error message naming its line.
    lines: list | None = None


def request_header(context, name: str, index: int = 0) -> str | None:
    """A request header of a multi-model-server context, matched without regard to case."""
    if context is None or not getattr(context, "request_processor", None):
        return None
    headers = context.request_processor[index].get_request_properties() or {}
    wanted = name.lower()
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            return value if isinstance(value, str) else None
    return None


def select_device(gpu_id: int | None) -> str:
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{gpu_id}" if gpu_id is not None else "cuda"


def warm_up(predictor: Predictor) -> None:
    """One forward pass, so the first request does not pay for lazy initialisation."""
    size = int(predictor.cfg.INPUT.MIN_SIZE_TEST)
    predictor.predict([np.zeros((size, size, 3), dtype=np.uint8)])


class InferenceHandler:
    def __init__(self, settings: ServingEnvironment):
        if settings.default_accept not in SUPPORTED_ACCEPT:
            raise DetectorError(
                f"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT={settings.default_accept!r}: expected one of {', '.join(SUPPORTED_ACCEPT)}"
            )
        self.settings = settings
        self.limits = DecodeLimits(settings.max_image_pixels, settings.max_batch_images, settings.max_payload_bytes,
                                   settings.max_request_pixels)
        self.defaults = InferenceOptions(settings.score_threshold, settings.max_detections, settings.mask_format)

    def model_fn(self, model_dir: str | Path, context=None) -> Predictor:
        """Load and warm up the model directory written by ``detector train`` (on the worker's GPU, if any)."""
        gpu_id = context.system_properties.get("gpu_id") if context is not None else None
        return self.load_model(Path(model_dir), select_device(gpu_id))

    def load_model(self, model_dir: Path, device: str, precision: str | None = None) -> Predictor:
        """The model directory loaded on ``device`` at ``precision`` (default: DETECTOR_PRECISION) and warmed up."""
        if device == "cpu":
            import torch

            # Workers share the host's cores instead of each claiming all of them.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.settings.workers))
        predictor = Predictor.from_model_dir(model_dir, device, precision or self.settings.precision)
        warm_up(predictor)
        logger.info(
            "model from %s loaded on %s (%d classes); precision %s",
            model_dir, device, predictor.labels.num_classes, predictor.precision.describe(),
        )
        return predictor

    def input_fn(self, input_data: bytes, content_type: str, context=None) -> InferenceRequest:
        return self.decode(input_data, content_type, request_header(context, CUSTOM_ATTRIBUTES_HEADER))

    def decode(self, body: bytes, content_type: str, custom_attributes: str | None = None) -> InferenceRequest:
        """``input_fn`` with the custom attributes header given directly."""
        options = parse_custom_attributes(custom_attributes, self.defaults)
        return InferenceRequest(decode_body(body, content_type, self.limits), options)

    def predict_fn(self, data: InferenceRequest, model: Predictor, context=None) -> InferenceResult:
        if data.decoded.lines is not None:
            return InferenceResult([], [], True, data.options.masks, self.predict_lines(data.decoded.lines, data.options, model))
        images = data.decoded.images
        detections = model.predict(images, data.options.score_threshold, data.options.max_detections)
        sizes = [(image.shape[1], image.shape[0]) for image in images]
        return InferenceResult(detections, sizes, data.decoded.batch, data.options.masks)

    def predict_lines(self, records: list[JsonLine], options: InferenceOptions, model: Predictor) -> list:
        """Each record's answer, in order. Records are decoded and run a model batch at a time (at most
        ``DETECTOR_MAX_BATCH_IMAGES`` images and ``DETECTOR_MAX_REQUEST_PIXELS`` decoded pixels), so a
        large body never holds more decoded images than one batch; a bad record answers its own error."""
        answers: list = [None] * len(records)
        batch: list[tuple[int, np.ndarray]] = []
        pixels = 0

        def flush() -> None:
            nonlocal pixels
            if batch:
                detections = model.predict([image for _, image in batch], options.score_threshold, options.max_detections)
                for (index, image), found in zip(batch, detections):
                    answers[index] = (found, (image.shape[1], image.shape[0]))
                batch.clear()
            pixels = 0

        for index, record in enumerate(records):
            if record.error is not None:
                answers[index] = record.error
                continue
            try:
                try:
                    image = decode_json_line(record, self.limits, pixels)
                except PayloadTooLarge:
                    if not batch:
                        raise
                    flush()  # the batch so far is full: this image starts the next one
                    image = decode_json_line(record, self.limits, pixels)
            except RequestError as error:
                answers[index] = error.message
                continue
            batch.append((index, image))
            pixels += image.shape[0] * image.shape[1]
            if len(batch) >= self.limits.max_batch_images:
                flush()
        flush()
        return answers

    def response_type(self, accept: str | None) -> str:
        """The negotiated response type; raises ``NotAcceptable`` (406)."""
        return negotiate(accept, self.settings.default_accept)

    def output_fn(self, prediction: InferenceResult, accept: str | None, context=None) -> tuple[bytes, str]:
        response_type = self.response_type(accept)
        if prediction.lines is not None:
            if response_type == COCO_TYPE:
                raise NotAcceptable(f"a JSON Lines request is answered as {JSONLINES_TYPE} (one line per record), not {COCO_TYPE}")
            return encode_json_lines(prediction.lines, prediction.masks), JSONLINES_TYPE
        body = encode_predictions(prediction.detections, prediction.sizes, prediction.batch, response_type, prediction.masks)
        return body, response_type
