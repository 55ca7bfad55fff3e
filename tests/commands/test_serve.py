"""`detector serve` as a command: truthful start-up and a clean stop."""

import os
import shutil
import signal
import subprocess
import time

import psutil
import pytest
import requests

from helpers import detector_command, detector_env, start_serve, wait_until_serving


def serve_until_exit(base_dir, tmp_path, **env):
    result = subprocess.run(detector_command("serve"), env=detector_env(base_dir, **env), capture_output=True, text=True, timeout=120)
    return result.returncode, result.stderr


def test_missing_model_directory_ends_serve_with_the_reason(tmp_path):
    code, stderr = serve_until_exit(tmp_path, tmp_path)
    assert code == 1
    assert f"ERROR: model directory {tmp_path / 'model'}: no such folder; expected a folder holding model_final.pth" in stderr
    assert "Traceback" not in stderr


def test_bad_setting_ends_serve_with_the_variable_named(tmp_path):
    code, stderr = serve_until_exit(tmp_path, tmp_path, DETECTOR_SCORE_THRESHOLD="2")
    assert code == 1 and "DETECTOR_SCORE_THRESHOLD=2.0" in stderr


@pytest.mark.parametrize(
    "value, reason",
    [("half", "DETECTOR_PRECISION='half': expected one of auto, fp32, bf16, fp16"),
     ("fp16", "DETECTOR_PRECISION='fp16' needs a CUDA GPU; on CPUs use 'bf16'")],
)
def test_a_precision_this_machine_cannot_run_ends_serve_before_the_model_loads(tmp_path, value, reason):
    code, stderr = serve_until_exit(tmp_path, tmp_path, DETECTOR_PRECISION=value)
    assert code == 1 and reason in stderr and "Traceback" not in stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "breakage, reason",
    [
        (lambda model: (model / "model_final.pth").write_bytes(b"not a checkpoint"), "cannot load the weights safely"),
        (lambda model: (model / "labels.json").unlink(), "is missing labels.json"),
        (lambda model: (model / "config.yaml").write_text("MODEL: [unclosed"), "config.yaml: not a usable detectron2 config"),
    ],
    ids=["corrupt weights", "missing labels", "bad config"],
)
def test_broken_model_directory_ends_serve_before_any_server_starts(tiny_model_dir, tmp_path, breakage, reason):
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    breakage(tmp_path / "model")
    code, stderr = serve_until_exit(tmp_path, tmp_path)
    assert code == 1
    assert reason in stderr
    assert "multi-model-server" not in stderr


def server_processes(serve_pid):
    """(process, command line) of everything `detector serve` started: its launcher's process group.

    The JVM outlives the script that started it, so it is not a descendant of `detector serve`."""
    [launcher] = psutil.Process(serve_pid).children()
    found = []
    for candidate in psutil.process_iter():
        try:
            if os.getpgid(candidate.pid) == launcher.pid and candidate.status() != psutil.STATUS_ZOMBIE:
                found.append((candidate, " ".join(candidate.cmdline())))
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_sigterm_stops_the_server_and_every_process_it_started(tiny_model, tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_serve(tiny_model, log, SAGEMAKER_MODEL_SERVER_WORKERS="2")
    try:
        wait_until_serving(process, log)
        assert requests.get(f"{url}/ping", timeout=5).json()["status"] == "Healthy"
        started = server_processes(process.pid)
        commands = " ".join(command for _, command in started)
        assert "com.amazonaws.ml.mms.ModelServer" in commands and commands.count("model_service_worker") >= 2
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - stopping < 10
    finally:
        if process.poll() is None:
            process.kill()
    left = [command for child, command in started if alive(child)]
    assert not left, f"processes left behind: {left}"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/ping", timeout=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve.log"], "files left in the working directory"


@pytest.mark.slow
def test_a_killed_serve_takes_its_server_with_it(tiny_model, tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_serve(tiny_model, log)
    try:
        wait_until_serving(process, log)
        started = server_processes(process.pid)
    finally:
        process.kill()
        process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [command for child, command in started if alive(child)]
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"processes left behind: {left}"


@pytest.mark.slow
def test_serve_ends_when_the_model_server_dies(tiny_model, tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_serve(tiny_model, log)
    try:
        wait_until_serving(process, log)
        [jvm] = [p for p, command in server_processes(process.pid) if "com.amazonaws.ml.mms.ModelServer" in command]
        jvm.kill()
        assert process.wait(timeout=60) == 1
    finally:
        if process.poll() is None:
            process.kill()
    assert "ERROR: multi-model-server stopped unexpectedly" in log.read_text()


@pytest.mark.slow
def test_a_relative_base_dir_serves_from_the_working_directory(tiny_model, tmp_path):
    from detector.serving.model_server import free_port

    shutil.copytree(tiny_model / "model", tmp_path / "job" / "model")
    port = free_port()
    log = tmp_path / "serve.log"
    env = detector_env(None, SAGEMAKER_BASE_DIR="job", SAGEMAKER_BIND_TO_PORT=str(port))
    with open(log, "wb") as out:
        process = subprocess.Popen(detector_command("serve"), env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_until_serving(process, log)
        png = (tiny_model / "input" / "data" / "testing" / "images").iterdir().__next__().read_bytes()
        response = requests.post(f"http://127.0.0.1:{port}/invocations", data=png, headers={"Content-Type": "image/png"}, timeout=60)
        assert response.status_code == 200, response.text
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert f"model in {tmp_path / 'job' / 'model'} checked" in log.read_text()
