"""Request bodies for serving tests: encoded images of known size and mode."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image


def rgb_array(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = (250, 30, 30)
    return pixels


def encode(image: Image.Image, fmt: str, **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def png(width: int = 96, height: int = 64, mode: str = "RGB") -> bytes:
    return encode(Image.fromarray(rgb_array(width, height)).convert(mode), "PNG")


def jpeg(width: int = 96, height: int = 64, mode: str = "RGB") -> bytes:
    return encode(Image.fromarray(rgb_array(width, height)).convert(mode), "JPEG", quality=90)


def exif_rotated_jpeg(width: int = 96, height: int = 64) -> bytes:
    """Stored as width x height with EXIF orientation 6: viewers (and the server) show height x width."""
    image = Image.fromarray(rgb_array(width, height))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    return encode(image, "JPEG", exif=exif.tobytes())


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def json_single(data: bytes) -> bytes:
    return json.dumps({"image": b64(data)}).encode()


def json_batch(*images: bytes) -> bytes:
    return json.dumps({"instances": [{"image": b64(d)} for d in images]}).encode()


def large_jpeg(width: int = 8000, height: int = 6000) -> bytes:
    """A high-resolution photo-sized JPEG (8000x6000: about 13 MB), above the real-time limits."""
    rng = np.random.default_rng(1)
    coarse = Image.fromarray(rng.integers(0, 255, size=(height // 10, width // 10, 3), dtype=np.uint8))
    return encode(coarse.resize((width, height), Image.NEAREST), "JPEG", quality=70)
