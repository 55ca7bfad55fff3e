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


class PathError(DetectorError):
    """A path names the wrong kind of thing (a file where a folder is expected, or the reverse), nothing,
    or something this user cannot read or write. The message names the option (or what the path is for),
    the path, what is wrong with it and what was expected there."""

    def __init__(self, option: str, path: object, problem: str, expected: str):
        self.option, self.path, self.problem, self.expected = option, path, problem, expected
        super().__init__(f"{option} {path}: {problem}; expected {expected}")
