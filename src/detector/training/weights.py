"""Where training starts: pretrained weights named, fetched and loaded with detectron2's semantics.

The ``weights`` hyperparameter (else the ``pretrained`` channel, else the model config's own
``MODEL.WEIGHTS``) names the starting point:

- ``none`` (or an empty ``MODEL.WEIGHTS``): from scratch;
- ``detectron2://<path>``: a file of detectron2's model zoo (``ImageNetPretrained/MSRA/R-50.pkl``);
- a model-zoo config name (``COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml``): its published checkpoint;
- an ``http(s)://`` URL, or an ``s3://`` URI (downloaded with the job's role);
- a file path: ``.pkl`` (detectron2 or Detectron/Caffe2 format), ``.pth`` (a state dict or a checkpoint
  with a ``model`` key), a ``model.tar.gz``, or a model directory written by ``detector train``.

Loading goes through detectron2's ``DetectionCheckpointer`` (Caffe2 name mapping, a ``model`` key
unwrapped, tensors whose shapes differ skipped), with file reading replaced by loaders that never
run pickled code: ``torch.load(weights_only=True)``, and for ``.pkl`` an unpickler that admits numpy
arrays, numpy dtypes and plain containers only.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DetectorError
from ..model_dir import CONFIG_FILE, LABELS_FILE, WEIGHTS_FILE, extract_model_archive

logger = logging.getLogger("detector.train")

PRETRAINED_CHANNEL = "pretrained"
SCRATCH = ("none", "scratch")
D2_PREFIX = "detectron2://"
D2_URL = "https://dl.fbaipublicfiles.com/detectron2/"
WEIGHT_SUFFIXES = (".pkl", ".pth", ".pt")
# A file that fills less than this share of the model's tensors is for another architecture.
MIN_LOADED_SHARE = 0.25
# Tensors that depend on the categories: left at their initial values when a warm start's categories differ.
CLASS_HEAD_PREFIXES = ("roi_heads.box_predictor.", "roi_heads.mask_head.predictor.", "head.cls_score.")
NOT_COUNTED = ("num_batches_tracked", "pixel_mean", "pixel_std")


class WeightsError(DetectorError):
    """Starting weights that cannot be found, fetched, read safely or matched to the model."""


@dataclass(frozen=True)
class LoadSummary:
    source: str
    model_tensors: int
    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    dropped_class_heads: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"loaded {len(self.loaded)} of the model's {self.model_tensors} tensors from {self.source}; "
            f"skipped {len(self.shape_mismatch) + len(self.dropped_class_heads)} (shape or categories differ), "
            f"{len(self.missing)} keep their initial values, {len(self.unused)} in the file are unused"
        )


# -- naming the source --------------------------------------------------------------------------


def is_url(text: str) -> bool:
    """A remote source: downloaded into the cache (S3 with the job's role, the others over HTTP)."""
    return text.startswith(("http://", "https://", "s3://"))


def resolve_source(weights: str | None, config_weights: str, channels: dict[str, Path]) -> str:
    """The starting point as a URL, an absolute local path, or "" (from scratch).

    ``weights`` (the hyperparameter) wins; then the ``pretrained`` channel; then the config's
    ``MODEL.WEIGHTS``. Nothing is downloaded here."""
    if weights is None and PRETRAINED_CHANNEL in channels:
        return str(pretrained_file(channels[PRETRAINED_CHANNEL]))
    text = (config_weights if weights is None else weights).strip()
    if text.lower() in SCRATCH or not text:
        return ""
    if text.startswith(D2_PREFIX):
        return D2_URL + text[len(D2_PREFIX):]
    if is_url(text):
        return text
    path = Path(text)
    if path.exists():
        return str(pretrained_file(path))
    if text.endswith(".yaml"):
        from detectron2 import model_zoo

        try:
            return model_zoo.get_checkpoint_url(text)
        except RuntimeError:
            pass
    raise WeightsError(
        f"hyperparameter 'weights'={text!r} is neither 'none', a detectron2:// path, an http(s) or s3 URL, a model-zoo "
        "config name (like COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml) nor an existing file"
        if weights is not None
        else f"MODEL.WEIGHTS={text!r} is neither a detectron2:// path, an http(s) or s3 URL nor an existing file"
    )


def pretrained_file(location: Path) -> Path:
    """The weights in a ``pretrained`` channel or a folder: a model directory, one archive or one weights file."""
    location = location.absolute()
    if location.is_file():
        return location
    if (location / WEIGHTS_FILE).is_file():
        return location
    candidates = sorted(p for p in location.iterdir() if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name.endswith(".tar.gz")))
    if len(candidates) == 1:
        return candidates[0]
    present = ", ".join(sorted(p.name for p in location.iterdir())) or "nothing"
    raise WeightsError(
        f"{location}: expected one weights file (.pkl, .pth), one model.tar.gz or a model directory "
        f"({WEIGHTS_FILE}, {CONFIG_FILE}, {LABELS_FILE}); it holds: {present}"
    )


def identity(source: str) -> str:
    """What the checkpoint fingerprint records: the URL, or the file's SHA-256 (its name may stay while its content changes)."""
    if not source or is_url(source):
        return source
    path = Path(source)
    target = path / WEIGHTS_FILE if path.is_dir() else path
    digest = hashlib.sha256()
    with open(target, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


# -- fetching -----------------------------------------------------------------------------------


def cached_path(url: str, cache_dir: Path) -> Path:
    name = url.rstrip("/").rsplit("/", 1)[-1] or "weights"
    return cache_dir / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def download(url: str, cache_dir: Path, timeout: float = 15.0, attempts: int = 3, backoff: float = 2.0) -> Path:
    """``url`` into the cache (reused when already there), atomically, with retries and progress lines."""
    target = cached_path(url, cache_dir)
    if target.is_file():
        logger.info("Weights %s from the cache %s", url, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    fetch = _download_s3 if url.startswith("s3://") else _download_once
    for attempt in range(1, attempts + 1):
        try:
            fetch(url, target, timeout)
            return target
        except WeightsError:
            raise
        except _RETRIED as e:
            reason = getattr(e, "reason", None) or e
            errors.append(f"attempt {attempt}: {reason}")
            logger.warning("Download of %s failed (%s)%s", url, reason, "; retrying" if attempt < attempts else "")
            if attempt < attempts:
                time.sleep(backoff * attempt)
    raise WeightsError(
        f"cannot download the starting weights {url} ({'; '.join(errors)}). Give the job the weights in a "
        f"'{PRETRAINED_CHANNEL}' channel (an S3 prefix holding the file), or train from scratch with the "
        "hyperparameter weights=none"
    )


def _download_once(url: str, target: Path, timeout: float) -> None:
    tmp = target.with_name(f".{target.name}.part")
    started = last_report = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        logger.info("Downloading %s (%s)", url, f"{total / 1e6:.1f} MB" if total else "size unknown")
        while block := response.read(1 << 20):
            out.write(block)
            done += len(block)
            if time.monotonic() - last_report >= 5:
                last_report = time.monotonic()
                share = f" ({100 * done / total:.0f}%)" if total else ""
                logger.info("  %.1f MB of %s%s", done / 1e6, url, share)
    if total and done != total:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"received {done} of {total} bytes")
    tmp.replace(target)
    logger.info("Downloaded %s (%.1f MB) in %.1f s to %s", url, done / 1e6, time.monotonic() - started, target)


def _retried_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (urllib.error.URLError, OSError, ValueError)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # boto3 comes with the training image; only S3 sources need it
        return errors
    return errors + (BotoCoreError, ClientError)


_RETRIED = _retried_errors()


def _download_s3(url: str, target: Path, timeout: float) -> None:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as e:
        raise WeightsError(f"cannot download {url}: boto3 is not installed ({e})") from e
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise WeightsError(f"weights {url!r}: expected s3://bucket/key of one file")
    client = boto3.client("s3", config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}))
    tmp = target.with_name(f".{target.name}.part")
    started = time.monotonic()
    logger.info("Downloading %s", url)
    client.download_file(bucket, key, str(tmp))
    tmp.replace(target)
    logger.info("Downloaded %s (%.1f MB) in %.1f s to %s", url, target.stat().st_size / 1e6, time.monotonic() - started, target)


def local_weights(source: str, cache_dir: Path) -> Path:
    """A local file or model directory for ``source``: downloaded when a URL, extracted when an archive."""
    path = download(source, cache_dir) if is_url(source) else Path(source)
    if path.is_file() and path.name.endswith(".tar.gz"):
        into = cache_dir / f"extracted-{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"
        if not (into / WEIGHTS_FILE).is_file():
            if not tarfile.is_tarfile(path):
                raise WeightsError(f"{path}: not a readable model.tar.gz")
            extract_model_archive(path, into)
        path = into
    # A folder: the model directory itself, or the one weights file or archive in it.
    return pretrained_file(path) if path.is_dir() else path


# -- reading safely -----------------------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """Admits numpy arrays, numpy scalars and dtypes and plain containers; refuses any other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # how protocol 2 pickles bytes
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "complex"),
    }

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        if module == "numpy" and name.endswith("DType") or module == "numpy.dtypes":
            return super().find_class(module, name)
        raise WeightsError(
            f"{self.path}: refused to load: the pickle asks for {module}.{name}, and a weights file may hold only "
            "numpy arrays and plain containers (loading it could run code)"
        )


def read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _ArraysOnly(f, path).load()
    except WeightsError:
        raise
    except Exception as e:  # a torn or foreign file raises whatever the unpickler meets first
        raise WeightsError(f"{path}: not a readable weights pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a dict of arrays, found {type(data).__name__}")
    return data


def read_torch(path: Path) -> dict:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unsafe content, torn files and foreign formats all land here
        raise WeightsError(f"{path}: cannot load the weights safely with torch.load(weights_only=True) ({e})") from e
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a state dict or a checkpoint with a 'model' key, found {type(data).__name__}")
    return data


def _checkpointer(model):
    from detectron2.checkpoint import DetectionCheckpointer

    class SafeCheckpointer(DetectionCheckpointer):
        """detectron2's checkpoint semantics over file readers that never run pickled code."""

        def _load_file(self, filename):
            path = Path(filename)
            if path.suffix == ".pkl":
                data = read_pickle(path)
                if "model" in data and "__author__" in data:  # detectron2's own zoo format
                    return data
                data = data.get("blobs", data)  # Detectron / Caffe2 format
                return {
                    "model": {k: v for k, v in data.items() if not k.endswith("_momentum")},
                    "__author__": "Caffe2",
                    "matching_heuristics": True,
                }
            data = read_torch(path)
            return data if "model" in data else {"model": data}

    return SafeCheckpointer(model, save_dir="", save_to_disk=False)


# -- loading ------------------------------------------------------------------------------------


def load_weights(model, path: Path, source: str, labels=None) -> LoadSummary:
    """Load ``path`` (a weights file or a model directory) into ``model``; refuse a file for another architecture.

    ``labels``: this run's label map. A model directory with other categories keeps its class heads
    out, so the new classes start fresh instead of from another class's weights."""
    from ..model_dir import LabelMap

    file = path / WEIGHTS_FILE if path.is_dir() else path
    checkpointer = _checkpointer(model)
    checkpoint = checkpointer._load_file(str(file))  # noqa: SLF001 (detectron2's documented override point)
    dropped: list[str] = []
    if path.is_dir() and labels is not None and (path / LABELS_FILE).is_file():
        import json

        theirs = LabelMap.from_json(json.loads((path / LABELS_FILE).read_text()), path / LABELS_FILE)
        if theirs.categories != labels.categories:
            dropped = [k for k in checkpoint["model"] if k.startswith(CLASS_HEAD_PREFIXES)]
            for key in dropped:
                del checkpoint["model"][key]
            logger.info(
                "Warm start from %s with other categories (%s, now %s): its class heads (%d tensors) are not loaded",
                path, ", ".join(theirs.names), ", ".join(labels.names), len(dropped),
            )
    # Counted: parameters and statistics. torch fills a missing BN step counter silently, and
    # detectron2 keeps the config's pixel mean and std: neither says whether the file fits.
    model_keys = [k for k in model.state_dict() if not k.endswith(NOT_COUNTED)]
    incompatible = checkpointer._load_model(checkpoint)  # noqa: SLF001
    mismatched = [(k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes]
    skipped = {k for k, _, _ in mismatched} | set(dropped)
    missing = set(incompatible.missing_keys)
    summary = LoadSummary(
        source=source,
        model_tensors=len(model_keys),
        loaded=[k for k in model_keys if k not in missing and k not in skipped],
        shape_mismatch=mismatched,
        dropped_class_heads=dropped,
        missing=sorted(missing - skipped),
        unused=sorted(incompatible.unexpected_keys),
    )
    for key, theirs_shape, ours in mismatched[:20]:
        logger.info("  skipped %s: %s in the file, %s in the model", key, theirs_shape, ours)
    if len(summary.loaded) < MIN_LOADED_SHARE * summary.model_tensors:
        raise WeightsError(
            f"the starting weights do not fit this model: {summary.line()}. They were made for another "
            "architecture; choose weights for the model config, or weights=none to train from scratch"
        )
    logger.info("Starting weights: %s", summary.line())
    return summary
