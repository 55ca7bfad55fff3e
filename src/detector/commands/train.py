"""``detector train``: what ``docker run IMAGE train`` runs in a SageMaker training job."""

from __future__ import annotations

HELP = "train on the SageMaker training contract (channels, hyperparameters.json, checkpoints)"


def add_arguments(parser) -> None:
    parser.epilog = "Reads everything from /opt/ml (relocated by SAGEMAKER_BASE_DIR); takes no options."


def failure_file():
    from ..environment import training_failure_file

    return training_failure_file()


def run(args) -> int:
    from ..environment import TrainingEnvironment
    from ..training.hyperparameters import Hyperparameters
    from ..training.launch import run as launch

    env = TrainingEnvironment.from_env()
    return launch(env, Hyperparameters.from_strings(env.hyperparameters))
