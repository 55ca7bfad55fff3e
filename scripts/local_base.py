#!/usr/bin/env python3
"""A Debian base image made from Debian packages, for building the images where no registry is reachable.

    python3 scripts/local_base.py build [--tag localhost/detector-base:bookworm] [--force]
    python3 scripts/local_base.py serve-indexes [--ready-file F]   # foreground; stop it with SIGTERM or Ctrl-C
    python3 scripts/local_base.py pip-conf           # print the pip.conf the base carries

`build` runs mmdebstrap (installed with apt when missing) for Debian bookworm, minbase, with the
bookworm-updates and bookworm-security suites, and imports the result into the engine that `docker`
reaches (DOCKER_HOST) as one layer. The image is the FROM of containers/Dockerfile's build and
runtime stages in place of nvidia/cuda or debian:bookworm-slim (BUILD_IMAGE / RUNTIME_IMAGE).

Builds inside it must reach what this machine's pip reaches, so the base carries this machine's pip
settings as /etc/pip.conf: the index URLs, the CA bundle (a proxy may sign the index's certificate),
and each file:// index rewritten to http://127.0.0.1:PORT/<n>/<folder name>/, which `serve-indexes` answers
for builds run with `--network host`. Nothing of it is a credential; the images built on it are for
this machine (CI), never pushed.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_TAG = "localhost/detector-base:bookworm"
DEFAULT_PORT = int(os.environ.get("DETECTOR_INDEX_PORT", "3141"))
MIRROR = "http://deb.debian.org/debian"
SUITES = [
    f"deb {MIRROR} bookworm main",
    f"deb {MIRROR} bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_IN_IMAGE = "/etc/pip/ca-certificates.crt"


def fail(message: str) -> None:
    print(f"local_base.py: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def pip_settings() -> dict[str, str]:
    """This machine's pip configuration (`pip config list`) with PIP_* environment variables on top."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    settings: dict[str, str] = {}
    for line in listed.stdout.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if section in ("global", "install", ":env:") or section.endswith("global"):
            settings[name] = value.strip().strip("'\"")
    for name in ("index-url", "extra-index-url", "cert"):
        value = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if value:
            settings[name] = value
    return settings


def file_indexes(settings: dict[str, str]) -> list[Path]:
    """Folders of the file:// indexes among the configured index URLs, in order."""
    urls = [settings.get("index-url", "")] + settings.get("extra-index-url", "").split()
    folders = []
    for url in urls:
        if url.startswith("file://"):
            folder = Path(urlparse(url).path)
            if not folder.is_dir():
                fail(f"pip's index {url} is not a folder on this machine")
            folders.append(folder)
    return folders


def pip_conf(settings: dict[str, str], port: int) -> str:
    folders = file_indexes(settings)
    # Each index's parent folder is served, so links relative to the index (../../files/...) resolve.
    served = {str(folder): f"http://127.0.0.1:{port}/{n}/{folder.name}/" for n, folder in enumerate(folders)}

    def rewrite(url: str) -> str:
        return served[urlparse(url).path] if url.startswith("file://") else url

    lines = ["[global]"]
    if settings.get("index-url"):
        lines.append(f"index-url = {rewrite(settings['index-url'])}")
    extra = [rewrite(url) for url in settings.get("extra-index-url", "").split()]
    if extra:
        lines.append("extra-index-url = " + " ".join(extra))
    if settings.get("cert"):
        lines.append(f"cert = {CA_IN_IMAGE}")
    if served:
        lines.append("trusted-host = 127.0.0.1")
    return "\n".join(lines) + "\n"


def docker() -> str:
    return os.environ.get("DOCKER", "docker")


def image_exists(tag: str) -> bool:
    return subprocess.run([docker(), "image", "inspect", tag], capture_output=True).returncode == 0


def build(tag: str, force: bool, port: int) -> None:
    if image_exists(tag) and not force:
        print(f"local_base.py: {tag} exists (--force makes it again)", file=sys.stderr)
        print(tag)
        return
    if not shutil.which("mmdebstrap"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            fail("mmdebstrap is not installed: apt-get install mmdebstrap (needs root)")
        print("local_base.py: installing mmdebstrap", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    settings = pip_settings()
    with tempfile.TemporaryDirectory(prefix="detector-base-") as tmp:
        extra = Path(tmp) / "extra"
        (extra / "etc" / "pip").mkdir(parents=True)
        (extra / "etc" / "pip.conf").write_text(pip_conf(settings, port))
        if settings.get("cert"):
            shutil.copyfile(settings["cert"], extra / CA_IN_IMAGE.lstrip("/"))
        rootfs = Path(tmp) / "rootfs.tar"
        command = ["mmdebstrap", "--variant=minbase", "--quiet",
                   f"--customize-hook=sync-in {extra} /", "bookworm", str(rootfs), *SUITES]
        print("+", " ".join(command), file=sys.stderr, flush=True)
        subprocess.run(command, check=True)
        subprocess.run([docker(), "import", "--change", f"ENV PATH={DEFAULT_PATH}",
                        "--change", 'CMD ["bash"]', str(rootfs), tag], check=True, stdout=subprocess.DEVNULL)
    print(f"local_base.py: imported {tag}", file=sys.stderr)
    print(tag)


class _IndexHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def serve_indexes(port: int, ready_file: Path | None = None) -> None:
    folders = file_indexes(pip_settings())
    with tempfile.TemporaryDirectory(prefix="detector-indexes-") as root:
        for n, folder in enumerate(folders):
            os.symlink(folder.parent, Path(root) / str(n))
        handler = functools.partial(_IndexHandler, directory=root)
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        except OSError as error:
            fail(f"cannot serve the indexes on 127.0.0.1:{port} ({error.strerror}): free the port, or choose "
                 "another with DETECTOR_INDEX_PORT and make the base again (build --force)")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        print(f"local_base.py: serving {', '.join(map(str, folders)) or 'no file:// index'} "
              f"on http://127.0.0.1:{port}/", file=sys.stderr, flush=True)
        if ready_file is not None:
            ready_file.write_text(f"{os.getpid()}\n")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="make the base image and import it")
    build_parser.add_argument("--tag", default=DEFAULT_TAG)
    build_parser.add_argument("--force", action="store_true", help="make it again even if the tag exists")
    serve_parser = commands.add_parser("serve-indexes", help="answer the base's rewritten index URLs")
    serve_parser.add_argument("--ready-file", type=Path, help="written once the server listens")
    commands.add_parser("pip-conf", help="print the pip.conf the base carries")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port of the index server (127.0.0.1)")
    args = parser.parse_args()
    if args.command == "build":
        build(args.tag, args.force, args.port)
    elif args.command == "serve-indexes":
        serve_indexes(args.port, args.ready_file)
    else:
        print(pip_conf(pip_settings(), args.port), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
