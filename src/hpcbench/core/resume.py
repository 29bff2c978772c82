"""A job run again into the same results run measures only what that run lacks.

A re-submitted SLURM sweep lands in the run it wrote before (its run id is the sweep's, not the
job's). The points already stored there, measured or skipped with a reason, are not run again
unless `force=true`; failed points are tried again. Each earlier attempt is kept in the metadata's `attempts`.
Families ask `ctx.already_measured(params...)` before measuring a point; they skip at a
granularity that keeps their derived columns honest (a shape with all the kernels compared on
it, a whole comparison whose rows are measured against one another).
"""

from __future__ import annotations

import fcntl
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from hpcbench.api import registry
from hpcbench.api.errors import UserError
from hpcbench.results.schema import METADATA_FILE, STATUS_OK, STATUS_SKIPPED

# a skip is an outcome too (FP8 on a GPU without it, a shape too large): only failures are retried
DONE = (STATUS_OK, STATUS_SKIPPED)
ATTEMPT_KEYS = ("started_at", "finished_at", "status", "error", "slurm_job_id", "points")


def _norm(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    return str(value)


def point_key(benchmark: str, params: tuple[str, ...], values: dict) -> tuple:
    return (benchmark, *(_norm(values.get(p)) for p in params))


@dataclass
class Previous:
    """What earlier attempts of a run left: the points not to run again, where numbering goes on,
    and the metadata this attempt carries forward."""
    done: set = field(default_factory=set)
    next_point: int = 0
    attempts: list = field(default_factory=list)
    suite: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    points: dict = field(default_factory=dict)  # ok/failed/skipped counts of the rows stored
    rows: dict = field(default_factory=dict)  # benchmark -> its ok rows (for fits over every point)


def previous_state(run_dir: Path) -> Previous:
    from hpcbench.results import load_run

    if not (run_dir / METADATA_FILE).is_file():
        return Previous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cut-short attempt's truncated last line is expected
        df = load_run(run_dir)
    meta = df.attrs["metadata"]
    prev = Previous(attempts=[*meta.get("attempts", []), {k: meta.get(k) for k in ATTEMPT_KEYS}],
                    suite=list(meta.get("suite") or []), params=dict(meta.get("params") or {}))
    if df.empty or "benchmark" not in df.columns or "status" not in df.columns:
        prev.next_point = len(df)
        return prev
    prev.points = {k: int(v) for k, v in df["status"].value_counts().items()}
    for row in df[df["status"].isin(DONE)].to_dict("records"):
        row = {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}  # NaN: absent
        if row["status"] == STATUS_OK:
            prev.rows.setdefault(row["benchmark"], []).append(row)
        # the run's own record of what identifies a point; a family it did not record: the registry's
        params = tuple(prev.params.get(row["benchmark"]) or registry.params_of(row["benchmark"]) or ())
        if params:
            prev.done.add(point_key(row["benchmark"], params, row))
    prev.next_point = int(df["point"].max()) + 1 if "point" in df.columns and df["point"].notna().any() else len(df)
    return prev


def lock_run(run_dir: Path):
    """Hold the run for this process: a second job writing the same run (a sweep re-submitted
    while the first still runs) is refused instead of interleaving rows. Keep the returned file open."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a")  # not "w": taking the lock changes nothing in the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"{run_dir}: another hpcbench process is writing this run (a job re-submitted while "
                        "the first still runs?); wait for it, or use another HPCBENCH_RUN_ID") from None
    return handle
