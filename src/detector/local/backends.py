"""How a local pipeline step runs its container command: as a process, or in the image with Docker.

Both give the step the same ``/opt/ml`` layout: the process backend through ``SAGEMAKER_BASE_DIR``,
the Docker backend by bind-mounting the step's folder at ``/opt/ml``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..environment import DEFAULT_BASE_DIR, environ_with, path_list
from ..errors import DetectorError


@dataclass(frozen=True)
class ProcessBackend:
    """``detector <command>`` in a child process of this Python."""

    name: str = "process"

    def command(self, step_root: Path, args: list[str], image: str | None = None, port: int | None = None) -> list[str]:
        return [sys.executable, "-m", "detector", *args]

    def environment(self, step_root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        src = str(Path(__file__).resolve().parents[2])
        return environ_with(
            {"SAGEMAKER_BASE_DIR": str(step_root), "PYTHONPATH": path_list("PYTHONPATH", src), "PYTHONUNBUFFERED": "1", **(extra or {})}
        )


@dataclass(frozen=True)
class DockerBackend:
    """``docker run IMAGE <command>`` with the step's folder mounted at the container's base dir (``/opt/ml``)."""

    train_image: str
    serve_image: str
    gpus: bool = False
    name: str = "docker"
    docker: str = field(default="docker")

    def check(self) -> None:
        if shutil.which(self.docker) is None:
            raise DetectorError("--backend docker: the docker command is not installed")
        for image in (self.train_image, self.serve_image):
            result = subprocess.run([self.docker, "image", "inspect", image], capture_output=True, text=True)
            if result.returncode != 0:
                reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
                raise DetectorError(
                    f"--backend docker: image {image} is not available ({reason}); build it with scripts/build_push.sh --no-push"
                )

    def command(self, step_root: Path, args: list[str], image: str | None = None, port: int | None = None) -> list[str]:
        image = image or (self.serve_image if args[:1] == ["serve"] else self.train_image)
        cmd = [self.docker, "run", "--rm", "--shm-size", "2g", "-v", f"{step_root.resolve()}:{DEFAULT_BASE_DIR}"]
        if self.gpus:
            cmd += ["--gpus", "all"]
        if port is not None:
            cmd += ["-p", f"127.0.0.1:{port}:8080"]
        return [*cmd, image, *args]

    def environment(self, step_root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        return environ_with({})
