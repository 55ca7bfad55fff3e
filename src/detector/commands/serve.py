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

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    log = logging.getLogger("detector.serve")
    stop = threading.Event()
    interruptible = threading.Event()  # set while a signal may interrupt what runs (the model check)

    class Stop(Exception):
        pass

    def on_signal(signo, frame):
        # During the model check the first signal interrupts it; once the server runs, it stops it.
        if not stop.is_set():
            stop.set()
            if interruptible.is_set():
                raise Stop

    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, on_signal)

    try:
        started = time.monotonic()
        interruptible.set()
        settings = ServingEnvironment.from_env()
        from ..serving.endpoint import run_endpoint
        from ..serving.inference_handler import InferenceHandler

        from ..precision import resolve
        from . import paths

        # The workers' precision must run on their device (fp16 needs a GPU): say so before anything starts.
        resolve(settings.precision, "cuda" if settings.num_gpus > 0 else "cpu", "DETECTOR_PRECISION")
        # A model that cannot load or run never gets a server. Checked on the CPU so that this
        # process holds no GPU memory; the workers load it on their GPUs (fp16 is checked as fp32 here).
        check_precision = "fp32" if settings.precision == "fp16" else settings.precision
        paths.input_folder(settings.model_dir, "model directory", "a folder holding model_final.pth, config.yaml and labels.json: "
                           "SageMaker extracts model.tar.gz there; locally, set SAGEMAKER_BASE_DIR to the folder that holds model/")
        InferenceHandler(settings).load_model(settings.model_dir, "cpu", check_precision)
        interruptible.clear()
        if stop.is_set():
            raise Stop
        log.info("model in %s checked in %.1f s; starting multi-model-server with %d worker(s) behind port %d",
                 settings.model_dir, time.monotonic() - started, settings.workers, settings.port)
        run_endpoint(settings, stop, started)
        log.info("stopped")
        return 0
    except Stop:
        log.info("stopping")
        return 0
