"""``detector train``: what ``docker run IMAGE train`` runs in a SageMaker training job."""

from __future__ import annotations

HELP = "train on the SageMaker training contract (channels, hyperparameters.json, checkpoints)"


def add_arguments(parser) -> None:
    parser.epilog = "Reads everything from /opt/ml (relocated by SAGEMAKER_BASE_DIR); takes no options."


def run(args) -> int:
    from ..environment import TrainingEnvironment, base_dir
    from ..failure import report_failure

    failure_file = base_dir() / "output" / "failure"
    try:
        env = TrainingEnvironment.from_env()
        failure_file = env.failure_file
        failure_file.unlink(missing_ok=True)
        from ..training.hyperparameters import Hyperparameters
        from ..training.launch import run as launch

        params = Hyperparameters.from_strings(env.hyperparameters)
        return launch(env, params)
    except Exception as error:
        return report_failure(failure_file, error)
