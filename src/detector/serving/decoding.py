"""Request bodies to RGB images, with the size checked before any pixel is decoded.

Supported content types:

- ``image/jpeg``, ``image/png``, ``application/x-image``: the bytes of one image in any format
  Pillow reads; EXIF orientation is applied; grayscale, palette, CMYK and RGBA become RGB.
- ``application/json``: ``{"image": "<base64>"}`` for one image or
  ``{"instances": [{"image": "<base64>"}, ...]}`` for a batch.
- ``application/x-npy``: one ``numpy.save``'d HxWx3 uint8 RGB array (no pickles).
- ``application/jsonlines``: one ``{"image": "<base64>"}`` per line (a Batch Transform job's
  ``SplitType: Line``); each line is decoded and answered on its own, so one bad line is named by
  its number and the others are still answered. Blank lines are skipped.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass

import numpy as np

from .request_errors import BadRequest, PayloadTooLarge, RequestError, UnsupportedContentType

IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
JSON_TYPE = "application/json"
NPY_TYPE = "application/x-npy"
JSONLINES_TYPES = ("application/jsonlines", "application/x-jsonlines")
SUPPORTED_TYPES = (*IMAGE_TYPES, JSON_TYPE, NPY_TYPE, *JSONLINES_TYPES)
# Pillow's decompression-bomb limit is never raised above this many pixels (it refuses more).
PILLOW_PIXEL_CEILING = 400_000_000


@dataclass(frozen=True)
class DecodeLimits:
    max_image_pixels: int = 40_000_000
    max_batch_images: int = 32
    max_payload_bytes: int | None = None
    max_request_pixels: int | None = None  # all images of one request together


@dataclass(frozen=True)
class JsonLine:
    """One record of a JSON Lines body: its 1-based line number and its base64 image, or why it is unusable."""

    line: int
    image: object = None
    error: str | None = None


@dataclass(frozen=True)
class DecodedImages:
    images: list[np.ndarray]  # HxWx3 uint8 RGB
    batch: bool  # the request asked for a batch answer ({"predictions": [...]})
    # A JSON Lines body: its records, decoded a model batch at a time (``images`` is then empty).
    lines: list[JsonLine] | None = None


def media_type(content_type: str | None) -> str:
    """``'Image/PNG; charset=x'`` -> ``'image/png'``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _check_pixels(width: int, height: int, limits: DecodeLimits, where: str, pixels_before: int = 0) -> None:
    """Refuse an image above the per-image limit (400), or one that takes the request's images
    together above the per-request limit (413), before any of its pixels is decoded."""
    if width * height > limits.max_image_pixels:
        raise BadRequest(
            f"{where}is {width}x{height} = {width * height} pixels, above the limit of "
            f"{limits.max_image_pixels} (DETECTOR_MAX_IMAGE_PIXELS)"
        )
    total = pixels_before + width * height
    if limits.max_request_pixels is not None and total > limits.max_request_pixels:
        raise PayloadTooLarge(
            f"{where}({width}x{height}) takes the request to {total} decoded pixels, above the limit of "
            f"{limits.max_request_pixels} pixels per request (DETECTOR_MAX_REQUEST_PIXELS); send fewer or smaller images"
        )


def decode_image(data: bytes, limits: DecodeLimits, where: str = "", pixels_before: int = 0) -> np.ndarray:
    """Encoded image bytes to an HxWx3 uint8 RGB array; ``where`` prefixes error messages and
    ``pixels_before`` counts the pixels of the request's images decoded before this one."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise BadRequest(f"{where or 'request body '}is empty; expected the bytes of an image")
    prefix = where or "image "
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        # Pillow's own bomb check (refused here above its limit) stays a second line of defence: raised
        # so that our limit, which a transform job or an asynchronous endpoint sets above Pillow's
        # default, speaks first, but never above PILLOW_PIXEL_CEILING.
        if pillow_limit and 2 * limits.max_image_pixels > pillow_limit:
            Image.MAX_IMAGE_PIXELS = max(pillow_limit, min(2 * limits.max_image_pixels, PILLOW_PIXEL_CEILING))
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
            _check_pixels(*image.size, limits, prefix, pixels_before)
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode != "RGB":
                image = image.convert("RGB")  # alpha is dropped, gray and palette expanded
            return np.asarray(image)
    except RequestError:
        raise
    except UnidentifiedImageError:
        raise BadRequest(f"{prefix}is not an image Pillow can decode ({len(data)} bytes)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadRequest(f"{prefix}is rejected as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadRequest(f"{prefix}cannot be decoded: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit


def decode_base64_image(value: object, limits: DecodeLimits, where: str, pixels_before: int = 0) -> np.ndarray:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a base64 string, got {type(value).__name__}")
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"{where}: not valid base64 ({e})") from None
    return decode_image(data, limits, f"{where}: image ", pixels_before)


def decode_json(body: bytes, limits: DecodeLimits) -> DecodedImages:
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    expected = 'expected {"image": "<base64>"} or {"instances": [{"image": "<base64>"}, ...]}'
    if not isinstance(document, dict) or ("image" in document) == ("instances" in document):
        raise BadRequest(f"JSON body: {expected}")
    if "image" in document:
        return DecodedImages([decode_base64_image(document["image"], limits, "image")], batch=False)
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest(f'JSON body: "instances" must be a non-empty list; {expected}')
    if len(instances) > limits.max_batch_images:
        raise BadRequest(
            f"JSON body: {len(instances)} instances, above the limit of {limits.max_batch_images} "
            "images per request (DETECTOR_MAX_BATCH_IMAGES)"
        )
    images, pixels = [], 0
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or "image" not in instance:
            raise BadRequest(f'instances[{index}]: expected an object {{"image": "<base64>"}}')
        image = decode_base64_image(instance["image"], limits, f"instances[{index}].image", pixels)
        pixels += image.shape[0] * image.shape[1]
        images.append(image)
    return DecodedImages(images, batch=True)


def decode_npy(body: bytes, limits: DecodeLimits) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadRequest(f"request body is not a .npy array ({e})") from None
    if not isinstance(array, np.ndarray):
        raise BadRequest("request body is not a single .npy array")
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or 0 in array.shape:
        raise BadRequest(f"npy array has shape {array.shape} and dtype {array.dtype}; expected HxWx3 uint8 (RGB)")
    _check_pixels(array.shape[1], array.shape[0], limits, "npy array ")
    return np.ascontiguousarray(array)


def parse_json_lines(body: bytes) -> list[JsonLine]:
    """The records of a JSON Lines body; a line that is not ``{"image": "<base64>"}`` carries its error."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"JSON Lines body is not UTF-8 (byte {e.start})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as e:
            records.append(JsonLine(number, error=f"line {number}: not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(document, dict) or "image" not in document:
            records.append(JsonLine(number, error=f'line {number}: expected {{"image": "<base64>"}}'))
            continue
        records.append(JsonLine(number, image=document["image"]))
    if not records:
        raise BadRequest('JSON Lines body has no records; expected one {"image": "<base64>"} per line')
    return records


def decode_json_line(record: JsonLine, limits: DecodeLimits, pixels_before: int = 0) -> np.ndarray:
    """The image of one JSON Lines record; errors name its line."""
    return decode_base64_image(record.image, limits, f"line {record.line}", pixels_before)


def decode_body(body: bytes | bytearray | None, content_type: str | None, limits: DecodeLimits) -> DecodedImages:
    """Decode one request; raises a ``RequestError`` with the status and a specific message."""
    kind = media_type(content_type)
    if kind not in SUPPORTED_TYPES:
        raise UnsupportedContentType(
            f"content type {content_type or '(none)'!r} is not supported; use one of {', '.join(SUPPORTED_TYPES)}"
        )
    body = bytes(body or b"")
    if limits.max_payload_bytes is not None and len(body) > limits.max_payload_bytes:
        raise PayloadTooLarge(f"request body is {len(body)} bytes, above the limit of {limits.max_payload_bytes}")
    if not body:
        raise BadRequest(f"request body is empty; expected {kind} content")
    if kind == JSON_TYPE:
        return decode_json(body, limits)
    if kind in JSONLINES_TYPES:
        return DecodedImages([], batch=True, lines=parse_json_lines(body))
    if kind == NPY_TYPE:
        return DecodedImages([decode_npy(body, limits)], batch=False)
    return DecodedImages([decode_image(body, limits)], batch=False)
