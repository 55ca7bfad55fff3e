"""``detector pipeline --local``: the SageMaker pipeline's steps on this machine."""

from __future__ import annotations

from pathlib import Path

HELP = "run the whole pipeline locally: data, train, evaluate, AP gate, register, deploy (no AWS, no GPU)"


def add_arguments(parser) -> None:
    parser.add_argument("--local", action="store_true", required=True,
                        help="run on this machine (the SageMaker pipeline itself is driven by `python -m pipeline`)")
    parser.add_argument("--param", action="append", default=[], metavar="Name=Value",
                        help="override a pipeline parameter, e.g. --param MaxIter=600 --param MinTestingAP=0.5")
    parser.add_argument("--hyperparameter", action="append", default=[], metavar="name=value",
                        help="a training hyperparameter on top of the local defaults, e.g. "
                             "--hyperparameter model=detector/mask_rcnn_R_18_FPN_128px.yaml (a mask model: the built-in data gets masks)")
    parser.add_argument("--root", type=Path, default=Path("runs/pipeline"), help="where executions, data and the registry go")
    parser.add_argument("--data", type=Path, default=None,
                        help="a folder with COCO channels training/ and testing/ (default: built-in synthetic data)")
    parser.add_argument("--resume", action="store_true",
                        help="rerun the newest execution in place; training resumes from its checkpoints")
    parser.add_argument("--backend", choices=("process", "docker"), default="process",
                        help="run each step as a process (default) or in its container image")
    parser.add_argument("--train-image", default="detector-train:latest", help="with --backend docker")
    parser.add_argument("--serve-image", default="detector-serve:latest", help="with --backend docker")
    parser.add_argument("--gpus", action="store_true", help="with --backend docker: give the containers all GPUs")
    parser.add_argument("--keep-serving", action="store_true", help="leave the endpoint running after the run")
    parser.add_argument("--no-progress", action="store_true",
                        help="no training progress (default: a bar in a terminal, else a plain line every 30 s)")


def run(args) -> int:
    import signal
    import sys

    from .. import pipeline_spec as spec
    from ..errors import DetectorError, UsageError
    from ..local.backends import DockerBackend, ProcessBackend
    from ..local.executions import plan_execution
    from ..local.runner import LOCAL_HYPERPARAMETERS, LocalRun, local_parameters, stop_server
    from ..training.hyperparameters import Hyperparameters
    from . import paths

    # Each line as it happens, also into a pipe or a file (CI logs, `| tee`).
    sys.stdout.reconfigure(line_buffering=True)
    try:
        if args.data is not None:
            paths.input_folder(args.data, "--data", "a folder with the COCO channels training/ and testing/")
        overrides = spec.parse_overrides(args.param)
        hyperparameters = {**LOCAL_HYPERPARAMETERS, **hyperparameter_pairs(args.hyperparameter)}
        Hyperparameters.from_strings(hyperparameters)  # a typo is named now, not after the data is made
        paths.output_folder(args.root, "--root", "a folder for the executions, data and registry (created when missing)")
        execution_id, parameters = plan_execution(args.root, local_parameters(args.root, overrides), overrides, resume=args.resume)
        if args.backend == "docker":
            backend = DockerBackend(args.train_image, args.serve_image, gpus=args.gpus)
            backend.check()
        else:
            backend = ProcessBackend()
        local_run = LocalRun(
            root=args.root,
            parameters=parameters,
            execution_id=execution_id,
            backend=backend,
            data_dir=args.data,
            hyperparameters=hyperparameters,
            keep_serving=args.keep_serving,
            progress="none" if args.no_progress else "bar" if sys.stdout.isatty() and sys.stderr.isatty() else "lines",
        )
    except DetectorError as e:
        raise UsageError(str(e)) from e

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        code = local_run.run()
    except KeyboardInterrupt:
        print(
            f"Interrupted. Steps stop like a Spot reclaim (training saves a checkpoint); "
            f"continue with: detector pipeline --local --root {args.root} --resume",
            file=sys.stderr,
        )
        return 130
    if code == 0 and args.keep_serving and local_run.server is not None:
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            stop_server(local_run.server)
    return code


def hyperparameter_pairs(items: list[str]) -> dict[str, str]:
    from ..errors import DetectorError

    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise DetectorError(f"--hyperparameter {item!r}: expected name=value, e.g. model=detector/mask_rcnn_R_18_FPN_128px.yaml")
        pairs[name.strip()] = value.strip()
    return pairs
