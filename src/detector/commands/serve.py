"""``detector serve``: what ``docker run IMAGE serve`` runs on a SageMaker endpoint."""

from __future__ import annotations

HELP = "answer SageMaker hosting requests (GET /ping, POST /invocations) with multi-model-server"


def add_arguments(parser) -> None:
    parser.epilog = (
        "Serves the model in /opt/ml/model (relocated by SAGEMAKER_BASE_DIR) on SAGEMAKER_BIND_TO_PORT (8080). "
        "The model is loaded and checked before the server starts: a broken model directory ends the command "
        "with exit status 1 and the reason."
    )


def run(args) -> int:
    import logging
    import signal
    import sys
    import threading
    import time

    from ..environment import ServingEnvironment
    from ..errors import DetectorError
    from ..failure import failure_reason

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    log = logging.getLogger("detector.serve")
    stop = threading.Event()
    starting = threading.Event()

    class Stop(Exception):
        pass

    def on_signal(signo, frame):
        # The first signal interrupts whatever is running (a model load, a wait); the server is then
        # stopped. While the server is being started, the start finishes first so that it can be stopped.
        if not stop.is_set():
            stop.set()
            if not starting.is_set():
                raise Stop

    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, on_signal)

    server = None
    try:
        started = time.monotonic()
        settings = ServingEnvironment.from_env()
        from ..serving.inference_handler import InferenceHandler
        from ..serving.model_server import start_server, wait_until_ready

        # Health must be truthful: a model that cannot load or run never gets a server. Checked on
        # the CPU so that this process holds no GPU memory; the workers load it on their GPUs.
        InferenceHandler(settings).load_model(settings.model_dir, "cpu")
        log.info("model in %s checked in %.1f s; starting multi-model-server on port %d with %d worker(s)",
                 settings.model_dir, time.monotonic() - started, settings.port, settings.workers)
        starting.set()
        server = start_server(settings)
        starting.clear()
        if stop.is_set():
            raise Stop
        wait_until_ready(server, settings, stop=stop)
        log.info("ready: http://0.0.0.0:%d (GET /ping, POST /invocations) after %.1f s", settings.port, time.monotonic() - started)
        while server.running():
            server.reap()
            stop.wait(0.5)
        raise DetectorError("multi-model-server stopped unexpectedly; the log above says why")
    except Stop:
        log.info("stopping")
        return 0
    except Exception as error:
        if not isinstance(error, DetectorError):
            log.exception("detector serve failed")
        print(f"ERROR: {failure_reason(error)}", file=sys.stderr, flush=True)
        return 1
    finally:
        if server is not None:
            server.stop()
