"""`/ping` tells the truth at every moment of a real `detector serve`: before the model is loaded,
while a killed worker is replaced, and when no worker can load the model at all."""

import os
import signal
import threading
import time

import psutil
import pytest
import requests

from helpers import start_serve, wait_until_serving

pytestmark = pytest.mark.slow


def server_workers(serve_pid: int, serving_only: bool = False) -> list[psutil.Process]:
    """multi-model-server's Python workers started by this `detector serve` (its launcher's process group).

    Each worker is a process listening on a socket and, once the server connects, a fork of it that
    loads the model and answers requests: with ``serving_only``, just those forks."""
    try:
        launchers = psutil.Process(serve_pid).children()
    except psutil.NoSuchProcess:
        return []
    groups = {launcher.pid for launcher in launchers}
    found = []
    for candidate in psutil.process_iter():
        try:
            if os.getpgid(candidate.pid) in groups and candidate.status() != psutil.STATUS_ZOMBIE \
                    and any("model_service_worker" in part for part in candidate.cmdline()):
                found.append(candidate)
        except (ProcessLookupError, psutil.Error):
            continue
    if serving_only:
        pids = {worker.pid for worker in found}
        found = [worker for worker in found if worker.ppid() in pids]
    return found


def ping(url: str) -> tuple[int, dict]:
    try:
        response = requests.get(f"{url}/ping", timeout=5)
    except (requests.ConnectionError, requests.Timeout):  # not listening yet, or gone; or a machine too busy to answer
        return 0, {}
    return response.status_code, response.json()


def png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def invoke(url: str):
    return requests.post(f"{url}/invocations", data=png(), headers={"Content-Type": "image/png"}, timeout=60)


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_ping_is_never_healthy_before_a_request_would_succeed(tiny_model, tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_serve(tiny_model, log, DETECTOR_SCORE_THRESHOLD="0")
    seen = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            code, body = ping(url)
            seen.append(code)
            if code == 200:
                break
            assert process.poll() is None, log.read_text()[-3000:]
            if code:
                assert code == 503 and body["status"] == "Unhealthy" and body["reason"], body
            time.sleep(0.02)
        # The first request after the first healthy /ping succeeds.
        response = invoke(url)
        assert response.status_code == 200, response.text
        assert "detections" in response.json()
    finally:
        stop(process)
    assert seen[-1] == 200
    assert 503 in seen, "the front answers 503 while the workers load the model"


def test_a_killed_worker_turns_ping_503_and_both_recover(tiny_model, tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_serve(tiny_model, log, DETECTOR_SCORE_THRESHOLD="0")
    try:
        wait_until_serving(process, log)
        assert invoke(url).status_code == 200
        [worker] = server_workers(process.pid, serving_only=True)
        worker.kill()
        killed = time.monotonic()
        while ping(url)[0] != 503:
            assert time.monotonic() - killed < 2, "/ping still healthy 2 s after the only worker was killed"
            time.sleep(0.02)
        code, body = ping(url)
        assert code == 503 and "worker restarting" in body["reason"], body
        # Requests in the gap get a JSON 503 at once: no hang, no 4xx.
        gap = []
        while ping(url)[0] == 503 and len(gap) < 5:
            started = time.monotonic()
            response = invoke(url)
            gap.append((response.status_code, time.monotonic() - started, response.json()))
        assert gap, "no request fell into the gap"
        for status, seconds, body in gap:
            assert status == 503 and seconds < 1.0 and "no worker can take the request" in body["error"], (status, seconds, body)
        # A replacement loads the model: /ping turns 200 again and requests succeed.
        while ping(url)[0] != 200:
            assert time.monotonic() - killed < 120, log.read_text()[-3000:]
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        response = invoke(url)
        assert response.status_code == 200, response.text
        assert process.poll() is None
        # The watch logs the recovery at its next look (every 0.2 s), which can come after that request.
        deadline = time.monotonic() + 10
        while "a worker holds the model again" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(process)
    text = log.read_text()
    assert f"worker process {worker.pid} died" in text
    assert "a worker holds the model again" in text


def test_a_model_no_worker_can_load_ends_serve_with_the_reason_and_never_shows_healthy(tiny_model, tmp_path):
    """Workers killed while they load the model, as the kernel's OOM killer does when the workers'
    model copies do not fit: `detector serve`'s own check on the CPU passed, but no worker ever
    holds the model."""
    log = tmp_path / "serve.log"
    process, url = start_serve(tiny_model, log, SAGEMAKER_STARTUP_TIMEOUT="20")
    killed, done = [], threading.Event()

    def kill_workers():
        while not done.is_set():
            for worker in server_workers(process.pid):
                try:
                    worker.kill()
                    killed.append(worker.pid)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.05)

    killer = threading.Thread(target=kill_workers, daemon=True)
    killer.start()
    seen = set()
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            seen.add(ping(url)[0])
            time.sleep(0.05)
        assert process.poll() == 1, "detector serve kept running with no worker able to load the model"
    finally:
        done.set()
        killer.join()
        if process.poll() is None:
            process.kill()
    assert killed, "no worker was started"
    assert 200 not in seen
    text = log.read_text()
    assert "ERROR: the model server was not ready within 20 s (SAGEMAKER_STARTUP_TIMEOUT); 0 of 1 workers loaded the model" in text
    assert "Traceback" not in text.split("ERROR:")[-1]


def test_no_replacement_within_the_reload_timeout_ends_serve(tiny_model, tmp_path):
    log = tmp_path / "serve.log"
    process, url = start_serve(tiny_model, log, DETECTOR_WORKER_RELOAD_TIMEOUT="5")
    done = threading.Event()
    try:
        wait_until_serving(process, log)
        [worker] = server_workers(process.pid, serving_only=True)
        worker.kill()

        def kill_replacements():
            while not done.is_set():
                for replacement in server_workers(process.pid):
                    try:
                        replacement.kill()
                    except psutil.NoSuchProcess:
                        pass
                time.sleep(0.05)

        killer = threading.Thread(target=kill_replacements, daemon=True)
        killer.start()
        assert process.wait(timeout=60) == 1
    finally:
        done.set()
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert "ERROR: no worker could load the model again within 5 s after the last one died (DETECTOR_WORKER_RELOAD_TIMEOUT)" in text
