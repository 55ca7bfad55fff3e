#!/usr/bin/env python3
"""Install detectron2 (pure Python, no compiled ops) on a CPU machine from the package index.

detectron2 is not published on the package index. The containers compile it from the public
repository; CPU machines without access to it (CI, laptops) use the index's ``pb1-detectron2==0.6``
sdist, whose ``detectron2/`` sources are identical to detectron2's v0.6 tag but lack the C++ ops.
This script downloads that sdist (sha256-pinned), makes it importable with current torch, numpy and
Pillow, builds a wheel once into a cache and installs it. A second run with detectron2 already
installed returns in about a second.

Usage: python scripts/install_detectron2.py [--cache DIR] [--force]
       python scripts/install_detectron2.py --wheel-dir DIR   (build the wheel into DIR, install nothing;
                                                              the images' `sdist` source does this)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"
SDIST_FILE = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# The local version label tells this build apart from a compiled one in `pip list`.
WHEEL_VERSION = "0.6+cpu.py2"

# detectron2 v0.6's own runtime dependencies (its setup.py), pinned to releases that work together
# on Python 3.11 with torch 2.14.
RUNTIME_REQUIREMENTS = [
    "fvcore==0.1.5.post20221221",
    "iopath==0.1.9",
    "yacs==0.1.8",
    "termcolor>=1.1",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1,<1.4",
    "pycocotools>=2.0.8",
    "matplotlib",
    "Pillow>=10",
    "setuptools<81",  # detectron2.model_zoo imports pkg_resources
]

PLACEHOLDER_C = '''"""Stand-in for detectron2's compiled extension, which this build does not have.

Faster R-CNN, RetinaNet and Mask R-CNN do not need it. Deformable convolution, rotated boxes and
the fast COCO evaluator do: they fail here with the name of the op they asked for.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise RuntimeError(
        f"detectron2 op {name!r} needs detectron2's compiled CUDA/C++ extension, which this "
        "pure-Python install does not have. Use the training/serving container images (detectron2 "
        "compiled from source), or a model without deformable convolution or rotated boxes."
    )
'''

SETUP_PY = f'''from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="{WHEEL_VERSION}",
    description="detectron2 v0.6 Python sources without compiled ops (from the pb1-detectron2 sdist)",
    url="https://github.com/facebookresearch/detectron2",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={{"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}},
    include_package_data=False,
    python_requires=">=3.8",
    install_requires={RUNTIME_REQUIREMENTS!r},
)
'''

# (file, text that must be there, replacement). A missing text fails the build instead of
# producing a silently broken package.
SOURCE_FIXES = [
    # Pillow 10 removed Image.LINEAR; BILINEAR is the same filter.
    ("detectron2/data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR"),
    # The caffe2 export APIs are gone from current torch; TracingAdapter and scripting still work.
    (
        "detectron2/export/__init__.py",
        "from .api import *\n",
        "try:\n    from .api import *\nexcept ImportError:  # caffe2 is not part of current torch\n    pass\n",
    ),
]

# numpy 1.24 removed these aliases of builtins; v0.6 uses them in 19 places.
NUMPY_ALIASES = re.compile(r"\bnp\.(int|float|bool|object|str)\b(?![\w.])")


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("detectron2")
    except importlib.metadata.PackageNotFoundError:
        return None


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(into: Path) -> Path:
    # setup.py of the sdist imports torch while pip reads its metadata: torch must be installed
    # and build isolation off. pip >= 25.1 refuses the sdist's extra that names a direct URL.
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", "-d", str(into), SDIST])
    path = into / SDIST_FILE
    actual = sha256(path)
    if actual != SDIST_SHA256:
        raise SystemExit(
            f"{SDIST_FILE}: sha256 {actual} does not match the pinned {SDIST_SHA256}; "
            "the upload changed, refusing to install it"
        )
    return path


def patch_sources(root: Path) -> None:
    for relative, old, new in SOURCE_FIXES:
        path = root / relative
        text = path.read_text()
        if old not in text:
            raise SystemExit(f"{relative}: expected text {old!r} not found; the sources changed")
        path.write_text(text.replace(old, new))
    changed = 0
    for path in (root / "detectron2").rglob("*.py"):
        text = path.read_text()
        fixed, count = NUMPY_ALIASES.subn(lambda m: m.group(1), text)
        if count:
            path.write_text(fixed)
            changed += count
    if changed < 19:
        raise SystemExit(f"expected at least 19 removed numpy aliases, fixed {changed}; the sources changed")
    (root / "detectron2" / "_C.py").write_text(PLACEHOLDER_C)
    (root / "setup.py").write_text(SETUP_PY)
    for stale in ("setup.cfg", "pyproject.toml"):
        (root / stale).unlink(missing_ok=True)
    configs = list((root / "detectron2" / "model_zoo" / "configs").rglob("*.yaml"))
    if len(configs) < 50:
        raise SystemExit(f"expected the model-zoo configs in the sdist, found {len(configs)} yaml files")


def build_wheel(cache: Path) -> Path:
    wheels = sorted(cache.glob(f"detectron2-{WHEEL_VERSION}-*.whl"))
    if wheels:
        return wheels[-1]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        sdist = download_sdist(tmp_path)
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(tmp_path, filter="data")
            else:  # Python < 3.11.4 (Debian 12's 3.11.2): the archive's sha256 was checked above
                archive.extractall(tmp_path)  # noqa: S202
        source = tmp_path / "pb1-detectron2-0.6"
        patch_sources(source)
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "-w", str(cache), str(source)])
    wheels = sorted(cache.glob(f"detectron2-{WHEEL_VERSION}-*.whl"))
    if not wheels:
        raise SystemExit("building the detectron2 wheel produced no wheel")
    return wheels[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(".cache/detectron2"))
    parser.add_argument("--force", action="store_true", help="rebuild and reinstall even if installed")
    parser.add_argument("--wheel-dir", type=Path,
                        help="only build the wheel into this folder (its dependencies are declared in it)")
    args = parser.parse_args()

    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("install torch first: detectron2's sources import it while being packaged") from None

    if args.wheel_dir is not None:
        args.wheel_dir.mkdir(parents=True, exist_ok=True)
        wheel = build_wheel(args.wheel_dir.resolve())
        print(f"built {wheel}")
        return 0

    current = installed_version()
    if current is not None and not args.force:
        print(f"detectron2 {current} already installed")
        return 0
    if current is not None and "+cpu" not in current:
        raise SystemExit(f"detectron2 {current} (a compiled build) is installed; not replacing it with the CPU build")

    args.cache.mkdir(parents=True, exist_ok=True)
    if args.force:
        for stale in args.cache.glob("detectron2-*.whl"):
            stale.unlink()
    wheel = build_wheel(args.cache.resolve())
    run([sys.executable, "-m", "pip", "install", "--quiet", *RUNTIME_REQUIREMENTS])
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)])
    run([sys.executable, "-c", "import detectron2.layers, detectron2.modeling, detectron2.model_zoo, detectron2.export"])
    print(f"detectron2 {installed_version()} installed from {wheel.name}")
    shutil.rmtree(args.cache / "build", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
