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

from dataclasses import dataclass, field

import numpy as np
import torch

from hpcbench.benchmarks._collective_ops import (COLLECTIVES, DTYPES, REDUCE_OPS, NotApplicable, Point, Prepared,
                                                 run_calls)
from hpcbench.costmodel import CannotFit, fit
from hpcbench.errors import UserError
from hpcbench.rank_timing import gather_times, nearest_rank_percentile, time_ranks
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.sizes import format_bytes, size_sweep

DISTRIBUTED = True  # the runner starts (or joins) ranks for this benchmark

PLACEMENTS = ("out_of_place", "in_place")


# what identifies a point when two runs are compared (the world size is part of the environment)
PARAMS = ("collective", "placement", "size_bytes", "type", "redop", "root")

@dataclass
class Config:
    collectives: list[str] = field(default_factory=lambda: list(COLLECTIVES))
    min_bytes: str = "8"  # nccl-tests -b (K/M/G are binary)
    max_bytes: str = "16M"  # -e
    step_factor: float = 2.0  # -f
    step_bytes: str = "0"  # -i: additive step; used instead of step_factor when > 0
    dtype: str = "float32"  # -d
    op: str = "sum"  # -o: sum | prod | min | max | avg
    placements: list[str] = field(default_factory=lambda: list(PLACEMENTS))
    root: int = 0  # -r: broadcast root
    iters: int = 20  # -n: timed iterations per point
    warmup_iters: int = 5  # -w: per size
    agg_iters: int = 1  # -m: collectives per timed iteration
    blocking: bool = True  # -z: wait for each collective before issuing the next within an iteration
    check: bool = True  # -c: verify the result exactly (outside the timed loop)
    fit_model: bool = True  # fit the alpha-beta model per collective after the sweep
    project_world_sizes: list[int] = field(default_factory=list)  # project the model to these world sizes


def validate(cfg: Config) -> None:
    for name in cfg.collectives:
        if name not in COLLECTIVES:
            raise UserError(f"collectives.collectives: unknown {name!r} (available: {', '.join(COLLECTIVES)})")
    if cfg.dtype not in DTYPES:
        raise UserError(f"collectives.dtype={cfg.dtype!r} (available: {', '.join(DTYPES)})")
    if cfg.op not in REDUCE_OPS:
        raise UserError(f"collectives.op={cfg.op!r} (available: {', '.join(REDUCE_OPS)})")
    for p in cfg.placements:
        if p not in PLACEMENTS:
            raise UserError(f"collectives.placements: unknown {p!r} (available: {', '.join(PLACEMENTS)})")
    if cfg.iters < 1 or cfg.warmup_iters < 0 or cfg.agg_iters < 1 or cfg.root < 0:
        raise UserError("collectives: need iters >= 1, warmup_iters >= 0, agg_iters >= 1, root >= 0")
    if any(n < 1 for n in cfg.project_world_sizes):
        raise UserError("collectives.project_world_sizes must be positive")
    size_sweep(cfg.min_bytes, cfg.max_bytes, cfg.step_factor, cfg.step_bytes)


def points(cfg: Config) -> list[Point]:
    sizes = size_sweep(cfg.min_bytes, cfg.max_bytes, cfg.step_factor, cfg.step_bytes)
    return [Point(name, size, cfg.dtype, cfg.op, placement, cfg.root)
            for name in cfg.collectives
            for placement in COLLECTIVES[name].placements if placement in cfg.placements
            for size in sizes]


def run(cfg: Config, ctx):
    validate(cfg)
    todo = points(cfg)
    if not todo:
        raise UserError("collectives: no point to run (all_reduce and broadcast exist only in place, "
                        "all_to_all only out of place: check collectives.placements)")
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
        yield from model_rows(earlier + rows, cfg)


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
    times = gather_times(world, [s / cfg.agg_iters for s in samples])
    wrong = 0
    if cfg.check:
        prepared.reset()
        prepared.call()
        _sync(ctx)
        wrong = world.sum_int(prepared.wrong())
    row["wrong"] = wrong if cfg.check else None
    if wrong:
        return {**row, "status": STATUS_FAILED, "reason": f"{wrong} wrong elements across ranks"}
    return {**row, "status": STATUS_OK, **speed_columns(point, times, world.size, ctx)}


def speed_columns(point: Point, times, n: int, ctx) -> dict:
    t = times.time_s
    algbw = point.size_bytes / t / 1e9
    slow = times.slowest_stats()
    us = times.slowest_s * 1e6
    return {
        "time_us": t * 1e6, "algbw_GBps": algbw, "busbw_GBps": algbw * COLLECTIVES[point.collective].busbw_factor(n),
        "i_min_us": float(us.min()), "i_max_us": float(us.max()), "i_p50_us": float(np.median(us)),
        "i_p99_us": nearest_rank_percentile(us, 99), "i_cv_pct": 100 * slow.cv,
        "slowest_rank": times.slowest_rank, "slowest_rank_share": times.slowest_share,
        "slowest_rank_per_iter": times.slowest_rank_per_iter,
        "timing_method": "cuda_event" if ctx.device.kind == "cuda" else "perf_counter",
        # the standard statistics columns describe the slowest rank's per-iteration time
        "n_samples": slow.n, "median_s": slow.median_s, "p10_s": slow.p10_s, "p90_s": slow.p90_s,
        "iqr_s": slow.iqr_s, "cv": slow.cv, "min_s": slow.min_s, "max_s": slow.max_s,
        "samples_s": times.slowest_s.tolist(), "rank_mean_samples_s": times.mean_s.tolist(),
    }


def _against_backend(staged: dict, rows: list[dict]) -> dict:
    """The host-staged all-reduce against the backend's own all_reduce of the same size."""
    same = [r for r in rows if r["collective"] == "all_reduce" and r["status"] == STATUS_OK
            and r["size_bytes"] == staged["size_bytes"]]
    if not same:
        return {}
    return {"backend_all_reduce_us": same[0]["time_us"], "time_vs_backend": staged["time_us"] / same[0]["time_us"]}


# ---- alpha-beta model ---------------------------------------------------------------------------

def model_rows(rows: list[dict], cfg: Config):
    """One fit per collective (on its placement with the most measured sizes), then projections."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["status"] == STATUS_OK:
            by_key.setdefault((r["collective"], r["placement"]), []).append(r)
    for name in cfg.collectives:
        candidates = [v for (c, _), v in by_key.items() if c == name]
        if not candidates:
            continue
        measured = max(candidates, key=len)
        coll = COLLECTIVES[name]
        n = measured[0]["world_size"]
        base = {"record": "alpha_beta_fit", "collective": name, "placement": measured[0]["placement"],
                "type": measured[0]["type"], "world_size": n, "backend": measured[0]["backend"]}
        try:
            model = fit(name, n, [r["size_bytes"] for r in measured], [r["time_us"] / 1e6 for r in measured],
                        coll.busbw_factor, coll.ring_steps)
        except CannotFit as exc:
            yield _skip(base, f"no alpha-beta fit: {exc}")
            continue
        yield {**base, "status": STATUS_OK, "alpha_us": model.alpha_s * 1e6,
               "bus_bandwidth_GBps": model.bus_bandwidth_Bps / 1e9, "fit_points": model.points,
               "max_rel_residual": model.max_rel_residual}
        for world in cfg.project_world_sizes:
            for r in measured:
                t = model.predict(world, r["size_bytes"], coll.busbw_factor, coll.ring_steps)
                algbw = r["size_bytes"] / t / 1e9 if t > 0 else None
                yield {**base, "record": "projection", "projected": True, "fitted_world_size": n,
                       "world_size": world, "size_bytes": r["size_bytes"], "status": STATUS_OK,
                       "time_us": t * 1e6, "algbw_GBps": algbw,
                       "busbw_GBps": algbw * coll.busbw_factor(world) if algbw else None}


# ---- terminal table -----------------------------------------------------------------------------

def _f(value, spec: str) -> str:
    if value is None:
        return ""
    return format(int(value) if spec == "d" else value, spec)  # rows read back by pandas hold floats


def table(rows: list[dict], fallback: bool):
    """nccl-tests' layout: one table per collective, out-of-place and in-place side by side."""
    from rich.console import Group
    from rich.table import Table

    parts = []
    note = "  [yellow](CPU fallback: gloo on shared cores, times are not performance numbers)[/]" if fallback else ""
    measured = [r for r in rows if r.get("record") == "measurement"]
    for name in dict.fromkeys(r["collective"] for r in measured):
        mine = [r for r in measured if r["collective"] == name]
        first = mine[0]
        t = Table(title=f"{name}  world {first['world_size']} · {first['backend']}{note}", title_justify="left")
        for col in ("size", "count", "type", "redop", "root"):
            t.add_column(col, justify="right" if col in ("size", "count") else "left")
        for side in ("out-of-place", "in-place"):
            for col in ("time us", "algbw GB/s", "busbw GB/s", "#wrong"):
                t.add_column(f"{side}\n{col}" if col == "time us" else col, justify="right")
        t.add_column("note")
        by_size: dict[int | None, dict[str, dict]] = {}
        for r in mine:
            by_size.setdefault(r.get("size_bytes"), {})[r["placement"]] = r
        for size, sides in by_size.items():
            any_row = next(iter(sides.values()))
            cells = [_f(size, "d"), _f(any_row.get("count"), "d"), any_row["type"], any_row.get("redop") or "",
                     _f(any_row.get("root"), "d")]
            notes = []
            for placement in PLACEMENTS:
                r = sides.get(placement)
                if r is None or r["status"] == STATUS_SKIPPED:
                    cells += ["", "", "", "N/A" if r is None else "skip"]
                    if r is not None:
                        notes.append(r.get("reason") or "")
                    continue
                if r.get("time_vs_backend") is not None:
                    notes.append(f"{r['time_vs_backend']:.2f}× the backend's all_reduce")
                bad = r["status"] == STATUS_FAILED
                cells += [_f(r.get("time_us"), ".2f"), _f(r.get("algbw_GBps"), ".3f"), _f(r.get("busbw_GBps"), ".3f"),
                          f"[red]{r['wrong']}[/]" if bad else _f(r.get("wrong"), "d")]
            t.add_row(*cells, "; ".join(dict.fromkeys(n for n in notes if n))[:70])
        ok = [r for r in mine if r["status"] == STATUS_OK]
        wrong = sum(r.get("wrong") or 0 for r in mine)
        avg = np.mean([r["busbw_GBps"] for r in ok]) if ok else float("nan")
        t.caption = (f"# Out of bounds values : {wrong} {'OK' if not wrong else 'FAILED'}    "
                     f"# Avg bus bandwidth : {avg:.3f} GB/s (mean over sizes and placements, as nccl-tests)")
        t.caption_justify = "left"
        parts.append(t)
    fits = [r for r in rows if r.get("record") == "alpha_beta_fit"]
    if fits:
        t = Table(title="alpha-beta model  t(n, S) = alpha·L(n) + factor(n)·S / B   (ring L and factor)",
                  title_justify="left")
        for col in ("collective", "fitted at n", "alpha us/step", "B GB/s", "sizes", "max residual", "note"):
            t.add_column(col, justify="left" if col in ("collective", "note") else "right")
        for r in fits:
            t.add_row(r["collective"], _f(r.get("world_size"), "d"), _f(r.get("alpha_us"), ".3f"),
                      _f(r.get("bus_bandwidth_GBps"), ".3f"), _f(r.get("fit_points"), "d"),
                      _f(r.get("max_rel_residual"), ".1%"), (r.get("reason") or "")[:70])
        parts.append(t)
    projections = [r for r in rows if r.get("record") == "projection"]
    if projections:
        t = Table(title="[bold]PROJECTION[/] from the fitted model (assumes ring algorithms and the same links)",
                  title_justify="left")
        for col in ("collective", "world", "size", "time us", "algbw GB/s", "busbw GB/s"):
            t.add_column(col, justify="left" if col == "collective" else "right")
        for r in projections:
            t.add_row(r["collective"], _f(r["world_size"], "d"), _f(r["size_bytes"], "d"), _f(r["time_us"], ".2f"),
                      _f(r.get("algbw_GBps"), ".3f"), _f(r.get("busbw_GBps"), ".3f"))
        parts.append(t)
    return Group(*parts)
