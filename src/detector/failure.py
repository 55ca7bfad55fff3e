"""The one error boundary: how an exception becomes a message, a failure file and an exit status.

Every ``detector`` command runs inside :func:`run_command` (``cli.main`` does it). A
:class:`~detector.errors.DetectorError` is the user's to fix: one line ``ERROR: <reason>`` on stderr,
no traceback. Anything else is a fault of this program: the traceback goes to stderr (the job log)
and the message says so. Container jobs also write the reason where SageMaker shows it: the training
job's ``/opt/ml/output/failure``, the processing job's ``/opt/ml/output/message``.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Callable

from .errors import DetectorError

# SageMaker shows the first 1024 characters of the failure file.
MAX_REASON = 1024


def failure_reason(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    if isinstance(error, DetectorError):
        return str(error)
    return f"Unexpected error {type(error).__name__}: {error}. The job log has the traceback."


def exit_status(error: BaseException | str) -> int:
    status = getattr(error, "exit_status", 1)
    return status if isinstance(status, int) and status > 0 else 1


def report_failure(failure_file: Path | None, error: BaseException | str, overwrite: bool = True) -> int:
    """Write the reason (one paragraph) to stderr and ``failure_file`` (when given); returns the exit status."""
    reason = " ".join(failure_reason(error).split())
    if isinstance(error, BaseException) and not isinstance(error, DetectorError):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"ERROR: {reason}", file=sys.stderr, flush=True)
    if failure_file is not None:
        try:
            failure_file.parent.mkdir(parents=True, exist_ok=True)
            if overwrite or not failure_file.exists():
                failure_file.write_text(reason[:MAX_REASON] + "\n")
        except OSError as e:
            print(f"ERROR: cannot write the failure reason to {failure_file}: {e}", file=sys.stderr)
    return exit_status(error)


def run_command(action: Callable[[], int], failure_file: Path | None = None) -> int:
    """Run a command's body; any exception it raises becomes the reason, the failure file and the status.

    A stale failure file from an earlier run of the same job is removed first, so the file only ever
    describes this run."""
    if failure_file is not None:
        try:
            failure_file.unlink(missing_ok=True)
        except OSError as e:  # its folder is a file, or not ours: the job could not report there either
            return report_failure(None, DetectorError(
                f"{failure_file}: cannot clear the failure file ({e.strerror}); is the job's base folder "
                "(SAGEMAKER_BASE_DIR, /opt/ml in a container) a folder this user can write?"))
    try:
        return action()
    except Exception as error:
        return report_failure(failure_file, error)
