"""Progress on stderr: a rich bar on a terminal, plain lines otherwise, nothing off rank 0."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ProgressReporter:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.total = 0
        self.done = 0
        self._bar = None
        self._task = None
        if enabled and sys.stderr.isatty():
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True)

    def __enter__(self):
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("points", total=self.total or None)
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False

    def start_family(self, points: int) -> None:
        """Count a family's points from 1 (its lines name it): a suite's counts do not run on from
        one family into the next ([6/6], then [1/21], not [7/27])."""
        self.total, self.done = points, 0
        if self._bar is not None and self._task is not None:
            self._bar.reset(self._task, total=points)

    def advance(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=label[:60])
        else:
            print(f"[{self.done}/{self.total or '?'}] {label}", file=sys.stderr, flush=True)
