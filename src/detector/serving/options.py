"""Per-request options from SageMaker's ``X-Amzn-SageMaker-Custom-Attributes`` header.

The header is ``name=value`` pairs separated by commas (or semicolons), for example
``score_threshold=0.5,max_detections=100,masks=polygon``. Missing options take the container's defaults
(``DETECTOR_SCORE_THRESHOLD``, ``DETECTOR_MAX_DETECTIONS``, ``DETECTOR_MASK_FORMAT``). ``masks`` (``rle``,
``polygon`` or ``none``) only changes the answers of a mask model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..environment import MASK_FORMATS
from .request_errors import BadRequest

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"


@dataclass(frozen=True)
class InferenceOptions:
    score_threshold: float = 0.5
    max_detections: int = 100
    masks: str = "rle"


def _score_threshold(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError
    return value


def _max_detections(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError
    return value


def _masks(raw: str) -> str:
    if raw.lower() not in MASK_FORMATS:
        raise ValueError
    return raw.lower()


# name -> (parser, what a valid value looks like)
_OPTIONS = {
    "score_threshold": (_score_threshold, "a number between 0 and 1"),
    "max_detections": (_max_detections, "a whole number of at least 1"),
    "masks": (_masks, " or ".join(MASK_FORMATS)),
}


def parse_custom_attributes(header: str | None, defaults: InferenceOptions) -> InferenceOptions:
    """Options of one request; raises ``BadRequest`` naming the malformed attribute."""
    if header is None or not header.strip():
        return defaults
    values: dict[str, object] = {}
    for item in re.split(r"[,;]", header):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name:
            raise BadRequest(f"{CUSTOM_ATTRIBUTES_HEADER}: {item!r} is not name=value (for example score_threshold=0.5)")
        if name not in _OPTIONS:
            raise BadRequest(
                f"{CUSTOM_ATTRIBUTES_HEADER}: unknown attribute {name!r}; supported: {', '.join(sorted(_OPTIONS))}"
            )
        parse, expected = _OPTIONS[name]
        try:
            values[name] = parse(raw)
        except ValueError:
            raise BadRequest(f"{CUSTOM_ATTRIBUTES_HEADER}: {name}={raw!r}, expected {expected}") from None
    return replace(defaults, **values)
