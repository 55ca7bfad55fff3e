"""A local model registry: the SageMaker Model Registry's shape in a folder.

``<root>/<group>/<version>/`` holds one model package: ``model.tar.gz``, ``evaluation.json`` and
``package.json`` (version, approval status, metrics, content types, source execution). Versions count
up from 1 and a package is immutable once written: its files are made read-only and a version
directory is never written twice. Only the approval status can change, through :meth:`set_approval`,
which rewrites ``package.json`` as SageMaker's ``UpdateModelPackage`` would.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import DetectorError

PACKAGE_FILE = "package.json"


@dataclass(frozen=True)
class ModelPackage:
    group: str
    version: int
    directory: Path
    description: dict

    @property
    def model_archive(self) -> Path:
        return self.directory / "model.tar.gz"

    @property
    def approval_status(self) -> str:
        return self.description["ModelApprovalStatus"]

    @property
    def arn(self) -> str:
        return f"local:model-package/{self.group}/{self.version}"


def _read_only(path: Path) -> None:
    path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


class LocalModelRegistry:
    def __init__(self, root: Path):
        self.root = root

    def versions(self, group: str) -> list[int]:
        group_dir = self.root / group
        if not group_dir.is_dir():
            return []
        return sorted(int(p.name) for p in group_dir.iterdir() if p.name.isdigit() and (p / PACKAGE_FILE).exists())

    def get(self, group: str, version: int) -> ModelPackage:
        directory = self.root / group / str(version)
        try:
            description = json.loads((directory / PACKAGE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DetectorError(f"model package {group}/{version}: cannot read {directory / PACKAGE_FILE} ({e})") from e
        return ModelPackage(group, version, directory, description)

    def latest_approved(self, group: str) -> ModelPackage | None:
        """The newest package of ``group`` whose status is Approved, or None."""
        for version in reversed(self.versions(group)):
            package = self.get(group, version)
            if package.approval_status == "Approved":
                return package
        return None

    def register(
        self,
        group: str,
        model_archive: Path,
        evaluation_file: Path,
        approval_status: str,
        content_types: list[str],
        response_types: list[str],
        source: str,
    ) -> ModelPackage:
        self.root.joinpath(group).mkdir(parents=True, exist_ok=True)
        version = (self.versions(group) or [0])[-1] + 1
        while True:
            directory = self.root / group / str(version)
            try:
                directory.mkdir()  # atomic: two registrations never share a version
                break
            except FileExistsError:
                version += 1
        shutil.copyfile(model_archive, directory / "model.tar.gz")
        shutil.copyfile(evaluation_file, directory / "evaluation.json")
        evaluation = json.loads(evaluation_file.read_text())
        description = {
            "ModelPackageGroupName": group,
            "ModelPackageVersion": version,
            "ModelPackageArn": f"local:model-package/{group}/{version}",
            "ModelApprovalStatus": approval_status,
            "CreationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "InferenceSpecification": {
                "SupportedContentTypes": content_types,
                "SupportedResponseMIMETypes": response_types,
            },
            "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": "evaluation.json"}}},
            "Metrics": evaluation.get("metrics", {}),
            "Source": source,
        }
        self._write_description(directory, description)
        for path in directory.iterdir():
            _read_only(path)
        return ModelPackage(group, version, directory, description)

    def set_approval(self, group: str, version: int, status: str) -> ModelPackage:
        package = self.get(group, version)
        description = {**package.description, "ModelApprovalStatus": status}
        self._write_description(package.directory, description)
        _read_only(package.directory / PACKAGE_FILE)
        return ModelPackage(group, version, package.directory, description)

    @staticmethod
    def _write_description(directory: Path, description: dict) -> None:
        tmp = directory / f".{PACKAGE_FILE}.tmp"
        tmp.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, directory / PACKAGE_FILE)
