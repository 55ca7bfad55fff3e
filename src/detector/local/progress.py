"""Follow a training subprocess's log: a progress bar over iterations and the metric lines."""

from __future__ import annotations

import re
from typing import IO, Iterable

ITERATION = re.compile(r"\biter: (\d+)\b")
RUN_LENGTH = re.compile(r"(?:starting at|at) iteration (\d+) of (\d+)")
METRIC = re.compile(r"^(training|testing)_(ap|ap50|ap75) ([0-9.]+)$")


class TrainingProgress:
    """Feeds log lines to a tqdm bar (iterations done / run length) and collects metric lines."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool = True):
        self.stream, self.enabled = stream, enabled
        self.bar = None
        self.metrics: dict[str, float] = {}
        self.start_iteration = 0

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
        if run and self.bar is None:
            self.start_iteration = int(run.group(1))
            self._open(int(run.group(2)))
            return
        iteration = ITERATION.search(line)
        if iteration and self.bar is not None:
            done = int(iteration.group(1)) + 1
            self.bar.update(max(0, done - self.bar.n))

    def _open(self, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=self.start_iteration, unit="it", desc="  training", file=self.stream,
                        dynamic_ncols=True, leave=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
