"""The endpoint a container serves: multi-model-server behind the front, watched until it stops.

``run_endpoint`` starts multi-model-server on a loopback port, the front on the serving port, and
watches the workers every ``POLL_S``:

- start-up: ready once every worker has loaded and warmed up the model (``/ping`` turns 200 as
  soon as the first has); a worker that reports a failed load, a server that exits, or
  ``SAGEMAKER_STARTUP_TIMEOUT`` without a ready worker ends it with the reason;
- afterwards: a worker that dies is logged and multi-model-server starts a replacement; while no
  worker holds the model ``/ping`` answers 503. No replacement ready within
  ``DETECTOR_WORKER_RELOAD_TIMEOUT``, or ``MAX_LOAD_FAILURES`` failed loads in a row, end it with
  the reason, so that SageMaker replaces the instance instead of keeping one that cannot answer.

It returns when ``stop`` is set (SIGTERM) and raises ``DetectorError`` when the endpoint cannot serve.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from ..environment import ServingEnvironment
from ..errors import DetectorError
from .front import Front
from .model_server import ServerProcess, start_server
from .worker_status import WorkerStatus

logger = logging.getLogger("detector.serve")

POLL_S = 0.2
MAX_LOAD_FAILURES = 3


class WorkerWatch:
    """What the workers can do now, and whether the endpoint should give up (``fatal``)."""

    def __init__(self, server: ServerProcess, settings: ServingEnvironment, started: float):
        self.server = server
        self.settings = settings
        self.status = WorkerStatus(server.runtime_dir)
        self.started = started
        self.ready_once = False  # every worker has loaded the model once
        self.unready_since: float | None = None
        self.reason = "loading the model"
        self.load_failures = 0
        self.fatal: str | None = None

    def unavailable(self) -> str | None:
        """``None`` while a worker holds the model, else why none can answer (asked per request)."""
        if self.fatal is not None:
            return f"the endpoint is failing: {self.fatal}"
        return None if self.status.ready_pids() else self.reason

    def poll(self, now: float) -> None:
        if not self.server.running():
            self.fatal = f"multi-model-server stopped unexpectedly (exit status {self.server.process.returncode}); the log above says why"
            return
        failure = self.status.take_failure()
        if failure is not None:
            self.load_failures += 1
            if not self.ready_once or self.load_failures >= MAX_LOAD_FAILURES:
                self.fatal = f"the model server's worker could not load the model: {failure}"
                return
            self.reason = f"a worker is reloading the model after a failed load ({failure})"
            logger.error("a worker could not load the model (failure %d of %d): %s", self.load_failures, MAX_LOAD_FAILURES, failure)
        for pid in self.status.forget_dead():
            self.reason = f"worker restarting (worker process {pid} died)"
            logger.error("worker process %d died; multi-model-server starts a replacement", pid)
        ready = len(self.status.ready_pids())
        if ready:
            self.load_failures = 0
            if self.unready_since is not None:
                logger.info("a worker holds the model again after %.1f s; /ping answers 200", now - self.unready_since)
                self.unready_since = None
        if not self.ready_once:
            if ready >= self.settings.workers:
                self.ready_once = True
                self.reason = "worker restarting (a worker process died)"
                logger.info("ready: http://0.0.0.0:%d (GET /ping, POST /invocations) after %.1f s",
                            self.settings.port, now - self.started)
            elif now - self.started > self.settings.startup_timeout_s:
                self.fatal = (
                    f"the model server was not ready within {self.settings.startup_timeout_s} s (SAGEMAKER_STARTUP_TIMEOUT); "
                    f"{ready} of {self.settings.workers} workers loaded the model"
                )
            return
        if ready == 0 and self.unready_since is None:
            self.unready_since = now
            logger.error("no worker holds the model; /ping answers 503 until a replacement has loaded it "
                         "(at most %d s, DETECTOR_WORKER_RELOAD_TIMEOUT)", self.settings.reload_timeout_s)
        elif ready == 0 and now - self.unready_since > self.settings.reload_timeout_s:
            self.fatal = (
                f"no worker could load the model again within {self.settings.reload_timeout_s} s after the last one "
                f"died (DETECTOR_WORKER_RELOAD_TIMEOUT); {self.reason}"
            )


# SageMaker's bound on a transform job: MaxConcurrentTransforms x MaxPayloadInMB at most 100 MB.
TRANSFORM_PAYLOAD_BUDGET_MB = 100


def execution_parameters(settings: ServingEnvironment) -> dict:
    """What ``GET /execution-parameters`` answers: one concurrent request per worker (or
    ``SAGEMAKER_MAX_CONCURRENT_TRANSFORMS``), the batch strategy, and the payload limit in whole MB,
    kept within the job's budget of MaxConcurrentTransforms x MaxPayloadInMB <= 100 MB."""
    concurrent = settings.max_concurrent_transforms or settings.workers
    payload = min(int(settings.max_payload_mb), TRANSFORM_PAYLOAD_BUDGET_MB // concurrent)
    return {"MaxConcurrentTransforms": concurrent, "BatchStrategy": settings.batch_strategy, "MaxPayloadInMB": max(1, payload)}


def describe_mode(settings: ServingEnvironment) -> str:
    return (
        f"serving mode {settings.mode}: requests up to {settings.max_payload_mb:g} MB (SAGEMAKER_MAX_PAYLOAD_IN_MB), "
        f"response timeout {settings.response_timeout_s} s (SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS), images up to "
        f"{settings.max_image_pixels} pixels (DETECTOR_MAX_IMAGE_PIXELS), {settings.max_request_pixels} decoded pixels per "
        f"model batch (DETECTOR_MAX_REQUEST_PIXELS)"
    )


async def _serve(settings: ServingEnvironment, server: ServerProcess, stop: threading.Event, started: float) -> None:
    watch = WorkerWatch(server, settings, started)
    front = Front(server.port, watch.unavailable, settings.max_payload_bytes, settings.response_timeout_s,
                  execution_parameters=execution_parameters(settings))
    logger.info(describe_mode(settings))
    await front.start("0.0.0.0", settings.port)
    logger.info("front on port %d; multi-model-server on 127.0.0.1:%d behind it", settings.port, server.port)
    try:
        while not stop.is_set():
            server.reap()
            watch.poll(time.monotonic())
            if watch.fatal is not None:
                raise DetectorError(watch.fatal)
            await asyncio.sleep(POLL_S)
    finally:
        await front.close()


def run_endpoint(settings: ServingEnvironment, stop: threading.Event, started: float | None = None) -> None:
    """Serve until ``stop`` is set; raises ``DetectorError`` with the reason when the endpoint cannot serve."""
    started = time.monotonic() if started is None else started
    server = start_server(settings)
    try:
        asyncio.run(_serve(settings, server, stop, started))
    finally:
        server.stop()
