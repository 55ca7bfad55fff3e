"""Report why a job failed where SageMaker shows it: the failure file and a non-zero exit."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from .errors import DetectorError

logger = logging.getLogger("detector")

# SageMaker shows the first 1024 characters of the failure file.
MAX_REASON = 1024


def failure_reason(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    if isinstance(error, DetectorError):
        return str(error)
    return f"Unexpected error {type(error).__name__}: {error}. The job log has the traceback."


def report_failure(failure_file: Path, error: BaseException | str, overwrite: bool = True) -> int:
    """Write the reason (one paragraph) to ``failure_file`` and stderr; returns the exit status."""
    reason = " ".join(failure_reason(error).split())
    if isinstance(error, BaseException) and not isinstance(error, DetectorError):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"ERROR: {reason}", file=sys.stderr, flush=True)
    try:
        failure_file.parent.mkdir(parents=True, exist_ok=True)
        if overwrite or not failure_file.exists():
            failure_file.write_text(reason[:MAX_REASON] + "\n")
    except OSError as e:
        print(f"ERROR: cannot write the failure reason to {failure_file}: {e}", file=sys.stderr)
    return 1
