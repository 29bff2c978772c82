"""One point through torch.distributed: check, then time counts, dispatch and combine; their metrics.

Order per point (VISION rule 1, correct first): one untimed counts + dispatch + combine, each
checked exactly against the single-process reference (wrong entries summed over ranks); a point
with a wrong phase is recorded as failed and not timed. Then each phase is timed alone with
`time_ranks` (ranks lined up before every sample; host clock on CPU, CUDA events on GPU); every
rank's samples are gathered and the statistics describe the slowest rank per iteration.

Bandwidths: see `metrics`. Also per dispatch and combine row:
  time_vs_uniform  t / the time of one plain all_to_all_single with equal splits moving the same total
                 wire bytes (what skew and irregular splits cost; 1 = nothing)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.distributed as dist

from hpcbench.benchmarks.moe_alltoall.exchange import Exchange
from hpcbench.benchmarks.moe_alltoall.expert_overlap import overlapped_row
from hpcbench.benchmarks.moe_alltoall.metrics import phase_bytes, speed, sync, timed
from hpcbench.benchmarks.moe_alltoall.reference import (
    check_combine,
    check_counts,
    check_dispatch,
)
from hpcbench.benchmarks.moe_alltoall.routing import Routing
from hpcbench.benchmarks.moe_alltoall.settings import Point
from hpcbench.measure.rank_timing import RankTimes
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK
from hpcbench.measure.stragglers import straggler_columns
from hpcbench.measure.timing import host_or_event


def uniform_baseline(total_bytes: int, cfg, ctx) -> RankTimes:
    """One all_to_all_single with equal splits, moving `total_bytes` over all ranks (the same bytes)."""
    world, device = ctx.world.size, ctx.device.torch_device
    chunk = max(1, math.ceil(total_bytes / world / world))
    send = torch.zeros(world * chunk, dtype=torch.uint8, device=device)
    recv = torch.empty_like(send)
    return timed(lambda: dist.all_to_all_single(recv, send), cfg, ctx)


def checked(ex: Exchange, ctx) -> dict:
    """Wrong entries of each phase, summed over ranks, from one untimed pass."""
    world, device = ctx.world, ctx.device.torch_device
    ex.counts()
    ex.allocate()
    wrong = {"counts": world.sum_int(check_counts(ex))}
    ex.dispatch()
    sync(device)
    wrong["dispatch"] = world.sum_int(check_dispatch(ex))
    ex.expert_outputs()
    ex.combine()
    sync(device)
    wrong["combine"] = world.sum_int(check_combine(ex))
    return wrong


def failed_rows(base: dict, wrong: dict, names: tuple[str, ...]) -> list[dict]:
    what = {"counts": "counts entries", "dispatch": "received rows", "combine": "combined tokens"}
    first = next(p for p in ("counts", "dispatch", "combine") if wrong[p])
    out = []
    for phase in names:
        n = wrong.get(phase, 0)
        reason = (f"{n} wrong {what[phase]} across ranks" if n else
                  f"not timed: {wrong[first]} wrong {what[first]} in {first}")
        out.append({**base, "phase": phase, "status": STATUS_FAILED, "reason": reason, "wrong": n})
    return out


def measure_torch(point: Point, routing: Routing, base: dict, names: tuple[str, ...], cfg, ctx) -> list[dict]:
    """Rows of the counts, dispatch and combine phases (and the overlapped micro-batches) of a point."""
    device = ctx.device.torch_device
    ex = Exchange(point.fmt, routing, ctx.world.rank, point.seed, device)
    wrong = checked(ex, ctx)
    if any(wrong.values()):
        return failed_rows(base, wrong, names)
    nbytes = phase_bytes(point, routing)
    method = host_or_event(ctx.device.kind)
    fns = {"counts": ex.counts, "dispatch": ex.dispatch, "combine": ex.combine}
    rows = []
    for phase in ("counts", "dispatch", "combine"):
        ctx.heartbeat(f"moe {point.label} {phase}")
        times = timed(fns[phase], cfg, ctx)
        row = {**base, "phase": phase, "status": STATUS_OK, "wrong": 0, **nbytes[phase],
               **speed(times, nbytes[phase], method), **straggler_columns(ctx.device.kind, times)}
        if phase != "counts" and cfg.uniform_baseline:
            u = uniform_baseline(sum(nbytes[phase]["bytes_sent_per_rank"]), cfg, ctx)
            t_u = float(np.median(u.slowest_s))
            row.update(uniform_time_us=t_u * 1e6, uniform_samples_s=u.slowest_s.tolist(),
                       time_vs_uniform=row["median_s"] / t_u)
        rows.append(row)
    if "overlapped" in names:
        ctx.heartbeat(f"moe {point.label} overlapped")
        rows.append({**base, "phase": "overlapped", **overlapped_row(point, routing, ex, cfg, ctx)})
    return rows
