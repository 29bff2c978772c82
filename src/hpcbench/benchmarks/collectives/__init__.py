"""nccl-tests-style collective bandwidth: all_reduce, all_gather, reduce_scatter, all_to_all, broadcast,
and an all-reduce staged through host memory (HFReduce-like), on NCCL (GPUs) or gloo (CPU).

Per point (collective x size x placement): every rank times each iteration after a barrier; the row
holds nccl-tests' time (rank-averaged, median over iterations), algbw = S/t and busbw = algbw *
factor, the per-iteration statistics of the slowest rank, and #wrong from an exact check run
outside the timed loop. A point whose check fails is recorded as failed and reports no speed.
After the sweep, an alpha-beta model is fitted per collective (and projected to other world sizes
when asked, labelled as projections).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import auto

import numpy as np
import torch
from omegaconf import MISSING

from hpcbench.benchmarks._collective_ops import (COLLECTIVES, DTYPES, REDUCE_OPS, NotApplicable, Point, Prepared,
                                                 run_calls)
from hpcbench.benchmarks.collectives.model import model_rows
from hpcbench.benchmarks.collectives.project import project_main
from hpcbench.benchmarks.collectives.report import REPORT
from hpcbench.benchmarks.collectives.table import table
from hpcbench.api import checks
from hpcbench.api.errors import UserError
from hpcbench.api.family import Choice, Family, choices
from hpcbench.measure.rank_timing import gather_times, nearest_rank_percentile, time_ranks
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.api.sizes import format_bytes, size_sweep
from hpcbench.measure.stragglers import straggler_columns
from hpcbench.measure.timing import host_or_event, timed_columns

CollectiveName = choices("CollectiveName", COLLECTIVES)
Dtype = choices("Dtype", DTYPES)
ReduceOp = choices("ReduceOp", REDUCE_OPS)


class Placement(Choice):
    out_of_place = auto()
    in_place = auto()


# what identifies a point when two runs are compared (the world size is part of the environment)
PARAMS = ("collective", "placement", "size_bytes", "type", "redop", "root")


@dataclass
class Config:
    """Types of the `collectives:` section; the defaults and their documentation:
    conf/benchmark/collectives.yaml."""

    collectives: list[CollectiveName] = MISSING
    min_bytes: str = MISSING  # nccl-tests -b (K/M/G are binary)
    max_bytes: str = MISSING  # -e
    step_factor: float = MISSING  # -f
    step_bytes: str = MISSING  # -i: additive step; used instead of step_factor when > 0
    dtype: Dtype = MISSING  # -d
    op: ReduceOp = MISSING  # -o
    placements: list[Placement] = MISSING
    root: int = MISSING  # -r: broadcast root
    iters: int = MISSING  # -n: timed iterations per point
    warmup_iters: int = MISSING  # -w: per size
    agg_iters: int = MISSING  # -m: collectives per timed iteration
    blocking: bool = MISSING  # -z: wait for each collective before issuing the next within an iteration
    check: bool = MISSING  # -c: verify the result exactly (outside the timed loop)
    fit_model: bool = MISSING  # fit the alpha-beta model per collective after the sweep
    project_world_sizes: list[int] = MISSING  # project the model to these world sizes


def check_world(cfg: Config, kind: str, world: int) -> None:
    if cfg.root >= world and "broadcast" in map(str, cfg.collectives):
        raise UserError(f"collectives.root={cfg.root}: not a rank of this world of {world} (use 0 to {world - 1})")


def validate(cfg: Config) -> None:
    checks.at_least("collectives", cfg, iters=1, warmup_iters=0, agg_iters=1, root=0)
    checks.each_positive("collectives.project_world_sizes", cfg.project_world_sizes)
    if not points(cfg):  # also checks the sizes
        raise UserError("collectives: no point to run (all_reduce and broadcast exist only in place, "
                        "all_to_all only out of place: check collectives.placements)")


def points(cfg: Config) -> list[Point]:
    sizes = size_sweep(cfg.min_bytes, cfg.max_bytes, cfg.step_factor, cfg.step_bytes, "collectives")
    return [Point(name, size, cfg.dtype, cfg.op, placement, cfg.root)
            for name in cfg.collectives
            for placement in COLLECTIVES[name].placements if placement in cfg.placements
            for size in sizes]


def run(cfg: Config, ctx):
    todo = points(cfg)
    ctx.set_total(len(todo))
    rows = []
    for point in todo:
        if ctx.already_measured(_base_row(point, ctx)):
            continue
        row = measure(point, cfg, ctx)
        if row["status"] == STATUS_OK and point.collective == "staged_all_reduce":
            row.update(_against_backend(row, rows))
        rows.append(row)
        yield row
    if cfg.fit_model:  # over every measured point of the run, earlier attempts' included
        earlier = [{**r, "size_bytes": int(r["size_bytes"]), "world_size": int(r["world_size"])}
                   for r in ctx.earlier_rows()  # same world only: a fit is for one world size
                   if r.get("record") == "measurement" and r.get("world_size") == ctx.world.size]
        yield from model_rows(earlier + rows, cfg.collectives, cfg.project_world_sizes)


def _base_row(point: Point, ctx) -> dict:
    coll = COLLECTIVES[point.collective]
    return {"record": "measurement", "collective": point.collective, "placement": point.placement,
            "size_bytes": point.size_bytes, "type": point.dtype, "redop": point.op if coll.reduces else None,
            "root": point.root if point.collective == "broadcast" else None,
            "world_size": ctx.world.size, "backend": ctx.world.backend}


def _skip(row: dict, reason: str) -> dict:
    return {**row, "status": STATUS_SKIPPED, "reason": reason}


def _sync(ctx) -> None:
    if ctx.device.kind == "cuda":
        torch.cuda.synchronize()


def measure(point: Point, cfg: Config, ctx) -> dict:
    world = ctx.world
    row = _base_row(point, ctx)
    ctx.heartbeat(f"{point.collective} {format_bytes(point.size_bytes)} {point.placement}")
    row.update(blocking=cfg.blocking, agg_iters=cfg.agg_iters, iters=cfg.iters)
    free = ctx.device.free_memory()
    if free is not None and 4 * point.size_bytes > 0.8 * free:
        return _skip(row, f"needs ~{4 * point.size_bytes / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
    try:
        prepared = Prepared(point, world)
    except NotApplicable as exc:
        return _skip(row, str(exc))
    row["count"] = prepared.count
    prepared.reset()
    # a backend gap (e.g. a dtype gloo cannot reduce) raises on every rank alike, before any traffic
    failure = None
    try:
        prepared.call()
        _sync(ctx)
    except (RuntimeError, ValueError, TypeError) as exc:
        failure = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    if not world.all_true(failure is None):
        return _skip(row, f"{world.backend} cannot run it: {failure or 'failed on another rank'}")

    samples = time_ranks(lambda: run_calls(prepared, cfg.agg_iters, cfg.blocking), world,
                         cfg.iters, cfg.warmup_iters, ctx.heartbeat)
    times = gather_times(world, samples.per_call(cfg.agg_iters))
    wrong = 0
    if cfg.check:
        prepared.reset()
        prepared.call()
        _sync(ctx)
        wrong = world.sum_int(prepared.wrong())
    row["wrong"] = wrong if cfg.check else None
    if wrong:
        return {**row, "status": STATUS_FAILED, "reason": f"{wrong} wrong elements across ranks"}
    return {**row, "status": STATUS_OK, **speed_columns(point, times, world.size, ctx),
            **straggler_columns(ctx.device.kind, times)}


def speed_columns(point: Point, times, n: int, ctx) -> dict:
    t = times.time_s
    algbw = point.size_bytes / t / 1e9
    # the standard statistics columns describe the slowest rank's per-iteration time
    timed = timed_columns(times.slowest_s, host_or_event(ctx.device.kind))
    us = times.slowest_s * 1e6
    return {
        "time_us": t * 1e6, "algbw_GBps": algbw, "busbw_GBps": algbw * COLLECTIVES[point.collective].busbw_factor(n),
        "i_min_us": float(us.min()), "i_max_us": float(us.max()), "i_p50_us": float(np.median(us)),
        "i_p99_us": nearest_rank_percentile(us, 99), "i_cv_pct": 100 * timed["cv"],
        "slowest_rank": times.slowest_rank, "slowest_rank_share": times.slowest_share,
        "slowest_rank_per_iter": times.slowest_rank_per_iter,
        **timed, "rank_mean_samples_s": times.mean_s.tolist(),
    }


def _against_backend(staged: dict, rows: list[dict]) -> dict:
    """The host-staged all-reduce against the backend's own all_reduce of the same size."""
    same = [r for r in rows if r["collective"] == "all_reduce" and r["status"] == STATUS_OK
            and r["size_bytes"] == staged["size_bytes"]]
    if not same:
        return {}
    return {"backend_all_reduce_us": same[0]["time_us"], "time_vs_backend": staged["time_us"] / same[0]["time_us"]}


def planned(cfg: Config, kind: str) -> list[dict]:
    return [{"collective": p.collective, "placement": p.placement, "size_bytes": p.size_bytes} for p in points(cfg)]


FAMILY = Family(
    name="collectives",
    summary="nccl-tests-style collective bandwidth (algbw, busbw, exact check) and an alpha-beta model",
    config=Config, run=run, params=PARAMS, distributed=True, validate=validate, check_world=check_world,
    table=table, report=REPORT,
    smoke=("collectives.min_bytes=64", "collectives.max_bytes=4K", "collectives.step_factor=64",
           "collectives.iters=3", "collectives.warmup_iters=1"),
    planned=planned,
    case_id=lambda r: f"{r['collective']}-{r['placement']}-{format_bytes(int(r['size_bytes'])).replace(' ', '')}",
    points_are=("record", "measurement"),  # not the alpha-beta fits and projections
    commands={"project": project_main},
)
