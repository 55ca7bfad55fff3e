"""SIGTERM as a request to checkpoint and stop after the current step.

SageMaker stops a job (or reclaims a Spot instance) with SIGTERM and kills it 120 s later. The
handler only sets a flag; the training loop saves a checkpoint at the end of the step in flight
and exits with status 143 (the conventional 128 + SIGTERM), which loses no finished iteration.
"""

from __future__ import annotations

import signal
import threading

EXIT_CODE_STOPPED = 128 + signal.SIGTERM


class StopRequest:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def install(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self._event.set()

    def exit_on_signal(self) -> None:
        """Once nothing is left to save (the final checkpoint is on disk), a stop request exits at once."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._exit)
        if self.is_set():
            raise SystemExit(EXIT_CODE_STOPPED)

    def _exit(self, signum, frame) -> None:
        self._handle(signum, frame)
        raise SystemExit(EXIT_CODE_STOPPED)

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        self._event.set()


class TrainingInterrupted(Exception):
    """Raised out of the training loop once the checkpoint for a stop request is on disk."""

    def __init__(self, iteration: int):
        super().__init__(f"stopped after iteration {iteration}; checkpoint saved")
        self.iteration = iteration
