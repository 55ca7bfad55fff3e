"""The endpoint's watch over its workers, in-process: files in a runtime directory, a clock by hand."""

import os
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

from detector.environment import ServingEnvironment
from detector.serving.endpoint import MAX_LOAD_FAILURES, WorkerWatch
from detector.serving.worker_status import mark_failed, mark_ready


class Server:
    def __init__(self, runtime_dir):
        self.runtime_dir = runtime_dir
        self.process = SimpleNamespace(returncode=None)

    def running(self):
        return self.process.returncode is None


def watch(tmp_path, **settings):
    base = replace(ServingEnvironment.from_env({"SAGEMAKER_BASE_DIR": str(tmp_path)}), workers=1, **settings)
    return WorkerWatch(Server(tmp_path), base, started=0.0)


def dead_ready_file(runtime_dir):
    """A ready file left by a worker process that has exited."""
    code = f"from pathlib import Path; import os; Path({str(runtime_dir)!r}, f'worker-{{os.getpid()}}.ready').touch()"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loading_then_ready_then_a_dead_worker_then_ready_again(tmp_path):
    w = watch(tmp_path)
    w.poll(1.0)
    assert w.unavailable() == "loading the model" and not w.ready_once
    mark_ready(tmp_path)
    w.poll(2.0)
    assert w.unavailable() is None and w.ready_once
    os.remove(tmp_path / f"worker-{os.getpid()}.ready")
    dead_ready_file(tmp_path)
    assert w.unavailable() == "worker restarting (a worker process died)"  # before the next poll too
    w.poll(3.0)
    assert w.unavailable().startswith("worker restarting (worker process ") and w.unready_since == 3.0
    mark_ready(tmp_path)
    w.poll(4.0)
    assert w.unavailable() is None and w.unready_since is None and w.fatal is None


def test_a_failed_load_at_start_up_is_fatal_at_once(tmp_path):
    w = watch(tmp_path)
    mark_failed(tmp_path, "CUDA out of memory")
    w.poll(1.0)
    assert w.fatal == "the model server's worker could not load the model: CUDA out of memory"
    assert w.unavailable().startswith("the endpoint is failing")


def test_failed_reloads_are_fatal_after_a_few_in_a_row(tmp_path):
    w = watch(tmp_path)
    mark_ready(tmp_path)
    w.poll(1.0)
    os.remove(tmp_path / f"worker-{os.getpid()}.ready")
    for attempt in range(1, MAX_LOAD_FAILURES + 1):
        mark_failed(tmp_path, f"failure {attempt}")
        w.poll(1.0 + attempt)
        if attempt < MAX_LOAD_FAILURES:
            assert w.fatal is None and "after a failed load (failure" in w.unavailable()
    assert w.fatal == f"the model server's worker could not load the model: failure {MAX_LOAD_FAILURES}"


def test_no_replacement_within_the_reload_timeout_is_fatal(tmp_path):
    w = watch(tmp_path, reload_timeout_s=30)
    mark_ready(tmp_path)
    w.poll(1.0)
    os.remove(tmp_path / f"worker-{os.getpid()}.ready")
    w.poll(2.0)
    w.poll(31.0)
    assert w.fatal is None
    w.poll(32.5)
    assert w.fatal.startswith("no worker could load the model again within 30 s after the last one died (DETECTOR_WORKER_RELOAD_TIMEOUT)")


def test_start_up_timeout_and_a_server_that_exits(tmp_path):
    w = watch(tmp_path, startup_timeout_s=10)
    w.poll(9.0)
    assert w.fatal is None
    w.poll(10.5)
    assert w.fatal == "the model server was not ready within 10 s (SAGEMAKER_STARTUP_TIMEOUT); 0 of 1 workers loaded the model"
    w = watch(tmp_path)
    w.server.process.returncode = 1
    w.poll(1.0)
    assert w.fatal.startswith("multi-model-server stopped unexpectedly (exit status 1)")


def test_execution_parameters_follow_the_settings_within_the_transform_budget():
    from detector.serving.endpoint import execution_parameters

    def answer(**environ):
        return execution_parameters(ServingEnvironment.from_env(environ))

    assert answer(SAGEMAKER_BATCH="true") == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 100}
    assert answer(SAGEMAKER_BATCH="true", SAGEMAKER_MAX_PAYLOAD_IN_MB="20", SAGEMAKER_BATCH_STRATEGY="SINGLE_RECORD") == {
        "MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 20}
    # MaxConcurrentTransforms x MaxPayloadInMB stays within SageMaker's 100 MB.
    assert answer(SAGEMAKER_BATCH="true", SAGEMAKER_MODEL_SERVER_WORKERS="4") == {
        "MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 25}
    assert answer(SAGEMAKER_MAX_CONCURRENT_TRANSFORMS="3")["MaxConcurrentTransforms"] == 3
    assert answer()["MaxPayloadInMB"] == 6  # real-time defaults
