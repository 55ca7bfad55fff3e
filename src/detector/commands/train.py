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
    from . import paths

    env = TrainingEnvironment.from_env()
    hyperparameters = Hyperparameters.from_strings(env.hyperparameters)
    # Where the job writes (folders on SageMaker; under SAGEMAKER_BASE_DIR locally), checked before the data and the
    # model load; not created here (only rank 0 writes the model, and a job that fails writes nothing).
    for folder, what in ((env.model_dir, "the trained model"), (env.checkpoint_dir, "checkpoints")):
        expected = f"a folder for {what} in the job's base folder (SAGEMAKER_BASE_DIR)"
        paths.output_folder(folder, f"{folder.name} folder", expected, create=False)
    return launch(env, hyperparameters)
