"""Follow a training subprocess's log: progress over iterations, and the metric lines.

In a terminal, progress is a tqdm bar. Anywhere else (a CI log, ``| tee``, CloudWatch) it is a
plain line every ``interval_s`` seconds: iteration, loss, speed and the time left.
"""

from __future__ import annotations

import re
import time
from typing import IO, Callable, Iterable

ITERATION = re.compile(r"\biter: (\d+)\b")
LOSS = re.compile(r"\btotal_loss: ([0-9.]+(?:e[-+]?\d+)?)")
RUN_LENGTH = re.compile(r"(?:starting at|at) iteration (\d+) of (\d+)")
METRIC = re.compile(r"^(training|testing)_(ap|ap50|ap75) ([0-9.]+)$")
MODES = ("bar", "lines", "none")


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class TrainingProgress:
    """Feeds log lines to a progress display (``mode``: bar, lines or none) and collects metric lines."""

    def __init__(self, stream: IO[str] | None = None, mode: str = "bar", interval_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r}: expected one of {', '.join(MODES)}")
        self.stream, self.mode, self.interval_s, self.clock = stream, mode, interval_s, clock
        self.bar = None
        self.metrics: dict[str, float] = {}
        self.start_iteration = 0
        self.total: int | None = None
        self.done = 0
        self.loss: float | None = None
        self.started_at = self.printed_at = 0.0

    def feed(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.line(line)

    def line(self, line: str) -> None:
        line = line.rstrip("\n")
        metric = METRIC.match(line)
        if metric:
            self.metrics[f"{metric.group(1)}_{metric.group(2)}"] = float(metric.group(3))
            return
        run = RUN_LENGTH.search(line)
        if run and self.total is None:
            self.start_iteration = self.done = int(run.group(1))
            self._open(int(run.group(2)))
            return
        iteration = ITERATION.search(line)
        if iteration and self.total is not None:
            self.done = max(self.done, int(iteration.group(1)) + 1)
            loss = LOSS.search(line)
            if loss:
                self.loss = float(loss.group(1))
            if self.bar is not None:
                self.bar.update(max(0, self.done - self.bar.n))
            elif self.mode == "lines" and self.clock() - self.printed_at >= self.interval_s:
                self._print_line()

    def _open(self, total: int) -> None:
        self.total = total
        self.started_at = self.printed_at = self.clock()
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=self.start_iteration, unit="it", desc="  training", file=self.stream,
                            dynamic_ncols=True, leave=True)
        elif self.mode == "lines":
            start = f" from iteration {self.start_iteration}" if self.start_iteration else ""
            self._write(f"  training: {total} iterations{start}; a progress line every {self.interval_s:g} s")

    def _print_line(self) -> None:
        now = self.clock()
        self.printed_at = now
        ran, elapsed = self.done - self.start_iteration, now - self.started_at
        parts = [f"iteration {self.done} of {self.total} ({100 * self.done / self.total:.0f}%)"]
        if self.loss is not None:
            parts.append(f"total_loss {self.loss:.3f}")
        if ran > 0 and elapsed > 0:
            rate = ran / elapsed
            parts.append(f"{rate:.2f} it/s")
            parts.append(f"about {duration((self.total - self.done) / rate)} left")
        self._write("  training: " + ", ".join(parts))

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and self.total is not None:
            self._write(f"  training: stopped at iteration {self.done} of {self.total} after "
                        f"{duration(self.clock() - self.started_at)}")
