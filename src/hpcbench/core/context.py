"""What a benchmark family may use from the harness while it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hpcbench.core.progress import ProgressReporter
from hpcbench.core.resume import point_key
from hpcbench.runtime.device import DeviceInfo
from hpcbench.runtime.distributed import World
from hpcbench.runtime.watchdog import Watchdog
from hpcbench.measure.timing import TimingPolicy


@dataclass
class RunContext:
    """What a benchmark may use from the harness."""

    device: DeviceInfo
    run_id: str
    timing: TimingPolicy
    progress: ProgressReporter = field(default_factory=lambda: ProgressReporter(enabled=False))
    world: World | None = None  # the ranks of a multi-rank benchmark
    watchdog: Watchdog | None = None
    run_dir: Path | None = None  # for artifacts beside the rows (traces, charts); written by rank 0 only
    done: set = field(default_factory=set)  # points an earlier attempt of this run stored (resume)
    benchmark: str = ""  # the family being run
    params: tuple[str, ...] = ()  # its PARAMS
    resumed_points: int = 0
    kept_points: int = 0  # stored points measured again with their group, whose new rows were not stored
    earlier: dict = field(default_factory=dict)  # benchmark -> ok rows an earlier attempt stored
    # a run the command line started on its own (not a sweep's job, not an in-process caller): a
    # family may end it with a one-line user error once its rows are stored
    single_run: bool = False

    def earlier_rows(self) -> list[dict]:
        """The current family's rows stored by earlier attempts of this run (resume), so that
        what is derived from all points (a fit) covers the skipped ones too."""
        return list(self.earlier.get(self.benchmark, []))

    def already_measured(self, *points: dict) -> bool:
        """True when an earlier attempt of this run stored every one of these points (each a dict
        holding the family's PARAMS): the family then skips them. Always False with force=true."""
        if not self.done or not points:
            return False
        if all(point_key(self.benchmark, self.params, p) in self.done for p in points):
            self.resumed_points += len(points)
            return True
        return False

    def stored_row(self, point: dict) -> dict | None:
        """The ok row an earlier attempt stored for this point, if any."""
        key = point_key(self.benchmark, self.params, point)
        return next((r for r in self.earlier.get(self.benchmark, ())
                     if point_key(self.benchmark, self.params, r) == key), None)

    def stored(self, row: dict) -> bool:
        """True for a row of a point an earlier attempt stored (measured again because its group was
        only partly stored): the runner keeps the stored row and drops this one."""
        if self.done and point_key(self.benchmark, self.params, row) in self.done:
            self.kept_points += 1
            return True
        return False

    def set_total(self, points: int) -> None:
        """The number of points this family will report (the progress counter's total)."""
        self.progress.start_family(points)

    def at(self, where: str) -> None:
        """Finer progress inside a point whose ranks do different work (a pipeline action)."""
        if self.watchdog is not None:
            self.watchdog.at(where)

    def heartbeat(self, label: str | None = None) -> None:
        """Progress mark for the watchdog: call at each point (with a label) and each timed sample."""
        if self.watchdog is not None:
            self.watchdog.tick(label)
