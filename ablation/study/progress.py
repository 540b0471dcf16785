"""Progress a person can follow in any output: one line per finished run on stderr, also when stderr is a
file or a pipe (CI, nohup), where progress bars turn themselves off."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO


def duration(seconds: float) -> str:
    """`42 s`, `3.5 min`, `1.2 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Progress:
    """Counts the study's runs: `total` (zero-shot, every trial, every final seed) and `count_done` (runs
    finished by any worker, read from MLflow), and estimates the time left from this worker's pace."""

    objective: str = "objective"
    total: int = 0
    count_done: Callable[[], int] | None = None
    stream: TextIO | None = None
    started: float = field(default_factory=time.monotonic)
    durations: list[float] = field(default_factory=list)

    def run_done(
        self, arm: str, role: str, label: str, value: float | None, seconds: float, pruned: bool = False
    ) -> str:
        """Print and return the line for one finished run."""
        self.durations.append(seconds)
        done = self.count_done() if self.count_done is not None else len(self.durations)
        left = max(0, self.total - done)
        shown = "n/a" if value is None else f"{value:.4f}"
        line = (
            f"[progress] {arm} {role}{' ' + label if label else ''}: {self.objective} {shown}"
            f"{' (pruned)' if pruned else ''} in {duration(seconds)}; {done} of {self.total} runs done, "
            f"{left} left, about {duration(left * statistics.mean(self.durations))} left "
            f"(elapsed {duration(time.monotonic() - self.started)})"
        )
        print(line, file=self.stream or sys.stderr, flush=True)
        return line
