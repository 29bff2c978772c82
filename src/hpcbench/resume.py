"""A job run again into the same results run measures only what that run lacks.

A re-submitted SLURM sweep lands in the run it wrote before (its run id is the sweep's, not the
job's). The points already stored there with status ok are skipped unless `force=true`; failed
and skipped points are tried again. Each earlier attempt is kept in the metadata's `attempts`.
Families ask `ctx.already_measured(params...)` before measuring a point; they skip at a
granularity that keeps their derived columns honest (a GEMM shape with all its kernels, a
collective size, an overlap size, a pipeline schedule, the DDP comparison as a whole).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from hpcbench import benchmarks
from hpcbench.results.schema import METADATA_FILE, STATUS_OK

ATTEMPT_KEYS = ("started_at", "finished_at", "status", "error", "slurm_job_id", "points")


def _norm(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    return str(value)


def point_key(benchmark: str, params: tuple[str, ...], values: dict) -> tuple:
    return (benchmark, *(_norm(values.get(p)) for p in params))


def previous_state(run_dir: Path) -> tuple[set[tuple], int, list[dict]]:
    """(keys of the ok points already stored, the next point index, earlier attempts) of run_dir."""
    from hpcbench.results import load_run

    if not (run_dir / METADATA_FILE).is_file():
        return set(), 0, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a cut-short attempt's truncated last line is expected
        df = load_run(run_dir)
    meta = df.attrs["metadata"]
    attempts = [*meta.get("attempts", []), {k: meta.get(k) for k in ATTEMPT_KEYS}]
    if df.empty or "benchmark" not in df.columns:
        return set(), 0, attempts
    done = set()
    for row in df[df.get("status") == STATUS_OK].to_dict("records"):
        try:
            params = tuple(getattr(benchmarks.load(row["benchmark"]), "PARAMS", ()))
        except Exception:  # noqa: BLE001 - a family this hpcbench no longer has
            continue
        if params:
            done.add(point_key(row["benchmark"], params, row))
    next_point = int(df["point"].max()) + 1 if "point" in df.columns and df["point"].notna().any() else len(df)
    return done, next_point, attempts
