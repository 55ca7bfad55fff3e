"""multi-model-server, started through the SageMaker inference toolkit, and stopped with everything it started.

``detector serve`` (the parent) starts ``python -m detector.serving.model_server`` in a new process
group; that process runs the toolkit's ``start_model_server`` with these changes to the toolkit:

- its config file goes to a private runtime directory instead of ``/etc/sagemaker-mms.properties``;
- inference listens on a loopback port behind the front (``front.py``) that owns the serving port;
- the management API (register, scale and delete models) listens on a loopback port of its own,
  never on the serving port;
- the response timeout is written in seconds and the request size limit from
  ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (the toolkit reads ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` in minutes);
- its log configuration (``log4j2.xml``) logs to standard output only, and nothing per request;
- nothing from ``model/code`` is installed or put on the Python path (a model is data, not code);
- the server process is looked for in this process's own process group only, so two servers on one
  host do not mistake each other's JVM for their own.

The parent stops the whole process group (launcher, JVM, Python workers and their forks) on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..environment import PAYLOAD_HANDOVER, ServingEnvironment, environ_with, path_list
from ..errors import DetectorError

HANDLER = "detector.serving.handler_service:handle"
MMS_NAMESPACE = "com.amazonaws.ml.mms.ModelServer"
STOP_GRACE_S = 10.0
LOG_CONFIG = Path(__file__).with_name("log4j2.xml")
MIN_RESPONSE_BYTES = 100 * 1024 * 1024


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, below 32767 (multi-model-server rejects higher port numbers)."""
    for port in random.sample(range(10000, 32767), 200):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise DetectorError("no free TCP port found between 10000 and 32766")


def override_properties(text: str, overrides: dict[str, str]) -> str:
    """A Java properties text with ``overrides`` replacing (or adding) keys."""
    lines = [line for line in text.splitlines() if line.split("=", 1)[0].strip() not in overrides]
    lines += [f"{key}={value}" for key, value in overrides.items()]
    return "\n".join(lines) + "\n"


def server_properties(settings: ServingEnvironment, inference_port: int, management_port: int) -> dict[str, str]:
    return {
        "inference_address": f"http://127.0.0.1:{inference_port}",
        "management_address": f"http://127.0.0.1:{management_port}",
        "default_workers_per_model": str(settings.workers),
        "default_response_timeout_seconds": str(settings.response_timeout_s),
        # The front refuses larger bodies with a JSON 413 before they get here.
        "max_request_size": str(settings.max_payload_bytes),
        # A JSON Lines answer can be larger than its request; multi-model-server's default is 6553500 bytes.
        "max_response_size": str(max(settings.max_payload_bytes, MIN_RESPONSE_BYTES)),
    }


@dataclass
class ServerProcess:
    process: subprocess.Popen
    runtime_dir: Path
    port: int  # multi-model-server's inference port, on loopback
    management_port: int

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the whole process group, SIGKILL whatever is left after ``grace_s``."""
        pgid = self.process.pid  # the launcher leads its own process group
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
            while _group_alive(pgid) and time.monotonic() < deadline + 5:
                self.reap()
                time.sleep(0.05)
        self.reap()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def reap(self) -> None:
        """Collect exited children. As a container's PID 1 this process inherits the orphaned JVM
        (its starter script exits at once): unreaped, a dead JVM would look alive to the launcher."""
        self.process.poll()
        if os.getpid() != 1:
            return
        try:
            while True:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    return
                if pid == self.process.pid:
                    self.process.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            pass


def _signal_group(pgid: int, signo: int) -> None:
    try:
        os.killpg(pgid, signo)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _only_zombies(pgid)


def _only_zombies(pgid: int) -> bool:
    """True when every process left in the group has exited and waits to be reaped."""
    try:
        import psutil
    except ImportError:
        return False
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return False
        except (ProcessLookupError, psutil.Error):
            continue
    return True


def start_server(settings: ServingEnvironment) -> ServerProcess:
    """Start the launcher in a new process group; returns at once (see ``wait_until_ready``)."""
    runtime_dir = Path(tempfile.mkdtemp(prefix="detector-serve-"))
    inference_port = free_port()
    management_port = free_port()
    while management_port == inference_port or settings.port in (inference_port, management_port):
        management_port, inference_port = free_port(), free_port()
    bin_dir = str(Path(sys.executable).parent)
    # Workers import this same copy of the package, wherever it was imported from.
    package_root = str(Path(__file__).resolve().parents[2])
    python_path = path_list("PYTHONPATH", package_root)
    env = environ_with(
        {
            # The toolkit runs `multi-model-server` from PATH.
            "PATH": path_list("PATH", bin_dir),
            "SAGEMAKER_BASE_DIR": str(settings.base_dir),
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(settings.workers),
            # multi-model-server's pid file and the workers' sockets: private to this server.
            "TMPDIR": str(runtime_dir),
            "TEMP": str(runtime_dir),
            "DETECTOR_SERVE_RUNTIME_DIR": str(runtime_dir),
            # Where multi-model-server's own default log configuration would write files.
            "LOG_LOCATION": str(runtime_dir / "logs"),
            "METRICS_LOCATION": str(runtime_dir / "logs"),
            "PYTHONPATH": python_path,
            PAYLOAD_HANDOVER: repr(settings.max_payload_mb),
        },
        # Written to the config by this module; the toolkit would reject a fractional value.
        remove=("SAGEMAKER_MAX_PAYLOAD_IN_MB",),
    )
    command = [
        sys.executable, "-m", "detector.serving.model_server",
        "--runtime-dir", str(runtime_dir),
        "--inference-port", str(inference_port),
        "--management-port", str(management_port),
        "--parent-pid", str(os.getpid()),
    ]
    process = subprocess.Popen(command, env=env, start_new_session=True)
    return ServerProcess(process, runtime_dir, inference_port, management_port)


def ping(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(HTTP status, the body's "status" field) of ``GET /ping``; (0, reason) when unreachable."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        return e.code, e.reason
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)
    try:
        return status, str(json.loads(body).get("status", ""))
    except (ValueError, AttributeError):
        return status, body.decode(errors="replace")


# --- the launcher process ----------------------------------------------------------------------


def _patch_toolkit(model_server, runtime_dir: Path, settings: ServingEnvironment, inference_port: int, management_port: int) -> None:
    import psutil

    model_server.MMS_CONFIG_FILE = str(runtime_dir / "mms.properties")
    model_server.DEFAULT_MMS_LOG_FILE = str(LOG_CONFIG)
    model_server.REQUIREMENTS_PATH = str(runtime_dir / "requirements-are-not-installed.txt")
    model_server._set_python_path = lambda: None

    generate = model_server._generate_mms_config_properties

    def generate_with_overrides(env, handler_service=None):
        return override_properties(generate(env, handler_service), server_properties(settings, inference_port, management_port))

    model_server._generate_mms_config_properties = generate_with_overrides

    def own_server_process():
        # The JVM outlives the script that starts it (and is re-parented), but stays in this group.
        group = os.getpgrp()
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE \
                        and MMS_NAMESPACE in process.cmdline():
                    return process
            except (ProcessLookupError, psutil.Error):
                continue
        raise RuntimeError("multi-model-server has not started yet")

    model_server._retrieve_mms_server_process = own_server_process

    # The toolkit's own handler forwards SIGTERM to the JVM only and keeps waiting for it.
    model_server._add_sigterm_handler = lambda mms_process: _stop_group_on_sigterm()


def _stop_group_on_sigterm() -> None:
    """On SIGTERM, pass it to the whole process group (JVM, workers) and leave at once."""

    def stop(signo, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)


def _stop_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when `detector serve` dies, even by SIGKILL (Linux), so no server outlives it."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def launcher_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detector.serving.model_server")
    parser.add_argument("--runtime-dir", type=Path, required=True)
    parser.add_argument("--inference-port", type=int, required=True)
    parser.add_argument("--management-port", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _stop_group_on_sigterm()
    _stop_with_parent(args.parent_pid)
    settings = ServingEnvironment.from_env()
    # Imported only now: the toolkit reads SAGEMAKER_BASE_DIR at import time.
    from sagemaker_inference import model_server

    _patch_toolkit(model_server, args.runtime_dir, settings, args.inference_port, args.management_port)
    model_server.start_model_server(handler_service=HANDLER)
    return 0


if __name__ == "__main__":
    sys.exit(launcher_main())
