"""The model directory written by training and read by evaluation and serving.

Layout (everything in it becomes SageMaker's ``model.tar.gz``; checkpoints never go here)::

    model_final.pth   the model's state dict: tensors only, loads with torch.load(weights_only=True)
    config.yaml       the detectron2 config the model was trained with
    labels.json       contiguous class index -> dataset category id and name
    metrics.json      final COCO metrics (fractions in [0, 1])
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelDirectoryError

WEIGHTS_FILE = "model_final.pth"
CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Category:
    """A dataset category: its id in the annotations and its name."""

    id: int
    name: str


@dataclass(frozen=True)
class LabelMap:
    """Model outputs contiguous class indices; users see their dataset's category ids."""

    categories: tuple[Category, ...]

    @classmethod
    def from_categories(cls, categories: list[Category]) -> "LabelMap":
        return cls(tuple(sorted(categories, key=lambda c: c.id)))

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def dataset_ids(self) -> list[int]:
        return [c.id for c in self.categories]

    def index_of(self, category_id: int) -> int:
        return self.dataset_ids.index(category_id)

    def to_json(self) -> dict:
        return {"categories": [{"index": i, "id": c.id, "name": c.name} for i, c in enumerate(self.categories)]}

    @classmethod
    def from_json(cls, data: dict, source: Path) -> "LabelMap":
        try:
            entries = sorted(data["categories"], key=lambda e: e["index"])
            if [e["index"] for e in entries] != list(range(len(entries))) or not entries:
                raise ValueError("indices must be 0..N-1")
            return cls(tuple(Category(int(e["id"]), str(e["name"])) for e in entries))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelDirectoryError(
                f"{source}: expected {{'categories': [{{'index', 'id', 'name'}}, ...]}} with indices 0..N-1 ({e})"
            ) from e


def write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        # Readable by all like the files written beside it (mkstemp makes 0600): a model trained as root
        # is served by the image's unprivileged user (docker-compose.yml).
        os.fchmod(f.fileno(), 0o644)
    os.replace(f.name, path)


def save_model(model_dir: Path, state_dict: dict, config_yaml: str, labels: LabelMap, metrics: dict) -> None:
    import torch

    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{WEIGHTS_FILE}.tmp"
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    os.replace(tmp, model_dir / WEIGHTS_FILE)
    (model_dir / CONFIG_FILE).write_text(config_yaml)
    write_json_atomic(model_dir / LABELS_FILE, labels.to_json())
    write_json_atomic(model_dir / METRICS_FILE, metrics)


@dataclass(frozen=True)
class ModelFiles:
    directory: Path
    config_yaml: str
    labels: LabelMap

    @property
    def weights_path(self) -> Path:
        return self.directory / WEIGHTS_FILE

    def load_state_dict(self) -> dict:
        import torch

        try:
            return torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for corrupt or unsafe files
            raise ModelDirectoryError(f"{self.weights_path}: cannot load the weights safely ({e})") from e


def read_model_dir(model_dir: Path) -> ModelFiles:
    """Check a model directory and read its small files; fail with the missing or broken file."""
    if not model_dir.is_dir():
        raise ModelDirectoryError(f"model directory {model_dir} does not exist")
    missing = [n for n in (WEIGHTS_FILE, CONFIG_FILE, LABELS_FILE) if not (model_dir / n).is_file()]
    if missing:
        present = sorted(p.name for p in model_dir.iterdir())
        raise ModelDirectoryError(
            f"model directory {model_dir} is missing {', '.join(missing)} (it holds: {', '.join(present) or 'nothing'}); "
            "expected the output of `detector train`"
        )
    labels_path = model_dir / LABELS_FILE
    try:
        labels_data = json.loads(_read_text(labels_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirectoryError(f"{labels_path}: not valid JSON ({e})") from e
    return ModelFiles(model_dir, _read_text(model_dir / CONFIG_FILE), LabelMap.from_json(labels_data, labels_path))


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except PermissionError as e:
        raise ModelDirectoryError(
            f"{path}: cannot be read by this user (uid {os.getuid()}): make the model's files readable by it "
            "(for example chmod a+r), or run as their owner"
        ) from e


def write_model_archive(model_dir: Path, archive: Path, compresslevel: int = 1) -> Path:
    """``model.tar.gz`` of a model directory as SageMaker makes it from ``/opt/ml/model``: its files at the
    archive's root, in name order. Level 1: the weights are floats that gzip barely shrinks."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz", compresslevel=compresslevel) as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def _model_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """A model archive holds files and folders under its root and nothing else (no links, devices or
    ``..`` paths; absolute names land inside the target), checked here on every Python because
    ``filter="data"`` exists only from 3.11.4 (Debian 12's python3 is 3.11.2)."""
    members = tar.getmembers()
    for member in members:
        if ".." in Path(member.name).parts:
            problem = "would be extracted outside the destination"
        elif not (member.isfile() or member.isdir()):
            problem = "is a link or a special file"
        else:
            member.name = member.name.lstrip("/")
            continue
        raise ModelDirectoryError(
            f"{archive}: cannot extract the model archive (member {member.name!r} {problem}; a model archive "
            "holds only files and folders under its root)"
        )
    return members


def extract_model_archive(archive: Path, into: Path) -> Path:
    """Extract a SageMaker ``model.tar.gz`` safely (no paths outside ``into``) and return the model dir."""
    try:
        with tarfile.open(archive) as tar:
            members = _model_members(tar, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=members, filter="data")
            else:
                tar.extractall(into, members=members)  # noqa: S202 (members checked above)
    except (tarfile.TarError, OSError) as e:
        raise ModelDirectoryError(f"{archive}: cannot extract the model archive ({e})") from e
    return into


def config_from_yaml(text: str, device: str):
    """Rebuild the training config saved as ``config.yaml`` for inference on ``device``."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.set_new_allowed(True)
    cfg.merge_from_other_cfg(cfg.load_cfg(text))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    cfg.freeze()
    return cfg
