"""User-facing errors: anything the user can fix gets one of these, with a specific message."""


class DetectorError(Exception):
    """An error caused by input, configuration or environment, reported without a traceback."""

    exit_status = 1


class UsageError(DetectorError):
    """A command was given options or parameters it cannot use (exit status 2, like argparse)."""

    exit_status = 2


class InputDataError(DetectorError):
    """A data channel or annotation file is unusable."""


class HyperparameterError(DetectorError):
    """A hyperparameter has an unknown name or a value of the wrong type."""


class CheckpointError(DetectorError):
    """A checkpoint cannot be resumed from."""


class ModelDirectoryError(DetectorError):
    """A model directory is missing files or holds unreadable ones."""
