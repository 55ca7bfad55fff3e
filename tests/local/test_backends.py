import os
import stat
import sys
from pathlib import Path

import pytest

from detector.errors import DetectorError
from detector.local.backends import DockerBackend, ProcessBackend


def stand_in_docker(tmp_path: Path, inspect_status: int) -> Path:
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{tmp_path}/calls"\n'
        f'[ "$1" = image ] && {{ [ {inspect_status} = 0 ] || echo "Error: No such image: $3" >&2; exit {inspect_status}; }}\n'
        "exit 0\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_docker_backend_mounts_the_step_folder_at_opt_ml(tmp_path):
    backend = DockerBackend("acct.dkr.ecr/detector-train:1", "acct.dkr.ecr/detector-serve:1", gpus=True)
    train = backend.command(tmp_path, ["train"])
    assert train[:2] == ["docker", "run"] and "--rm" in train
    assert f"{tmp_path.resolve()}:/opt/ml" in train and "--gpus" in train
    assert train[-2:] == ["acct.dkr.ecr/detector-train:1", "train"]
    serve = backend.command(tmp_path, ["serve"], port=8123)
    assert "127.0.0.1:8123:8080" in serve and serve[-2:] == ["acct.dkr.ecr/detector-serve:1", "serve"]
    assert backend.command(tmp_path, ["evaluate"])[-2:] == ["acct.dkr.ecr/detector-train:1", "evaluate"]


def test_docker_backend_checks_its_images(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    stand_in_docker(tmp_path, inspect_status=0)
    DockerBackend("train:1", "serve:1").check()
    assert (tmp_path / "calls").read_text().splitlines() == ["image inspect train:1", "image inspect serve:1"]

    stand_in_docker(tmp_path, inspect_status=1)
    with pytest.raises(DetectorError, match=r"image train:1 is not available \(Error: No such image: train:1\)"):
        DockerBackend("train:1", "serve:1").check()


def test_docker_backend_needs_docker(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DetectorError, match="the docker command is not installed"):
        DockerBackend("a", "b").check()


def test_process_backend_relocates_opt_ml(tmp_path):
    backend = ProcessBackend()
    assert backend.command(tmp_path, ["train"]) == [sys.executable, "-m", "detector", "train"]
    env = backend.environment(tmp_path, {"SAGEMAKER_BIND_TO_PORT": "9"})
    assert env["SAGEMAKER_BASE_DIR"] == str(tmp_path) and env["SAGEMAKER_BIND_TO_PORT"] == "9"
