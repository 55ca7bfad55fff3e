"""``detector <command>``: the entry point of both images (``docker run IMAGE train`` / ``serve``).

Each command lives in ``detector.commands.<name>`` with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (and ``failure_file()`` for container jobs). :func:`main` runs every command
inside the one error boundary, :func:`detector.failure.run_command`. Command modules import heavy
libraries only inside ``run`` so that, for example, ``detector serve`` never imports the training code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("train", "evaluate", "serve", "predict", "transform", "synth", "pipeline")


def _available() -> dict:
    modules = {}
    for name in COMMANDS:
        try:
            modules[name] = importlib.import_module(f"detector.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"detector.commands.{name}":
                raise
    return modules


def build_parser(modules: dict) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="detector", description="Detectron2 object detection on SageMaker")
    parser.add_argument("--version", action="version", version=f"detector {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in modules.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .failure import run_command

    modules = _available()
    args = build_parser(modules).parse_args(argv)
    module = modules[args.command]
    # Container jobs name where SageMaker shows their failure reason; the others report on stderr only.
    failure_file = module.failure_file() if hasattr(module, "failure_file") else None
    return run_command(lambda: module.run(args), failure_file)


if __name__ == "__main__":
    sys.exit(main())
