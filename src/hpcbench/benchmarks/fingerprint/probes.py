"""The two measurements the fingerprint takes itself, sized for the device it runs on.

HBM copy: `dst.copy_(src)` of random float32 data, timed with hpcbench's timer (CUDA events with
the L2 flushed before each repetition; the host clock on the CPU). Bandwidth = bytes read + bytes
written (2 x the buffer) / median time, decimal GB/s. The copy is checked bit for bit before it is
timed (the destination holds NaN first, so a copy that writes nothing fails) and again after the
timed repetitions. Every rank measures its own device, one rank at a time so that ranks sharing
a host's memory (the CPU fallback) do not halve each other's bandwidth; the line reports the
slowest device.

Large all_reduce: one point measured by the collectives family's own `measure` (nccl-tests'
busbw, slowest rank per iteration, exact check), at a size no CPU could move, so it is chosen here
by device kind rather than in the collectives sweep.
"""

from __future__ import annotations

import torch

from hpcbench.benchmarks._collective_ops import Point
from hpcbench.api.errors import ImpossibleMeasurement
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.api.sizes import format_bytes
from hpcbench.measure.timing import time_fn, timed_columns

COPY_DTYPE = torch.float32


def _copy_once(nbytes: int, ctx) -> dict:
    """This rank's device: check, time and check again one copy of `nbytes`."""
    dev = ctx.device.torch_device
    free = ctx.device.free_memory()
    if free is not None and 2 * nbytes > 0.8 * free:
        return {"status": STATUS_SKIPPED,
                "reason": f"needs {2 * nbytes / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {ctx.device.kind}"}
    numel = nbytes // torch.empty((), dtype=COPY_DTYPE).element_size()
    gen = torch.Generator(device=dev).manual_seed(1234)
    src = torch.randn(numel, device=dev, dtype=COPY_DTYPE, generator=gen)  # never constants (rule 3)
    dst = torch.full_like(src, float("nan"))

    def copy():
        dst.copy_(src)

    def wrong() -> int:
        return int((dst.view(torch.int32) != src.view(torch.int32)).sum().item())  # bit for bit: NaN != NaN

    copy()
    bad = wrong()
    if bad:
        return {"status": STATUS_FAILED, "reason": f"{bad} elements differ from the source after one copy",
                "wrong": bad}
    dst.fill_(float("nan"))
    timing = time_fn(copy, dev, ctx.timing)
    bad = wrong()
    if bad:
        return {"status": STATUS_FAILED, "reason": f"{bad} elements differ from the source after the timed copies",
                "wrong": bad}
    median = timing.stats.median_s
    if not median > 0:
        raise ImpossibleMeasurement(f"impossible copy time {median!r} s")
    return {"status": STATUS_OK, "wrong": 0, "GBps": 2 * nbytes / median / 1e9,
            **timed_columns(timing.samples_s, timing.method)}


def hbm_copy(nbytes: int, ctx) -> dict | None:
    """Every rank's copy bandwidth, one rank at a time; on rank 0 the line's columns (else None)."""
    world = ctx.world
    ranks = world.size if world else 1
    mine = None
    for turn in range(ranks):
        if world:
            world.barrier()
        if not world or world.rank == turn:
            ctx.heartbeat(f"fingerprint hbm copy {format_bytes(nbytes)} (rank {turn})")
            mine = _copy_once(nbytes, ctx)
    results = world.gather_object(mine) if world else [mine]
    if results is None:  # not rank 0
        return None
    base = {"copy_bytes": nbytes, "bytes_moved": 2 * nbytes, "check": "bitwise equal, before and after timing",
            "per_rank_GBps": [r.get("GBps") for r in results]}
    bad = [(rank, r) for rank, r in enumerate(results) if r["status"] != STATUS_OK]
    if bad:
        rank, r = bad[0]
        return {**base, "status": r["status"], "reason": f"rank {rank}: {r['reason']}",
                "wrong": sum(r.get("wrong") or 0 for r in results)}
    slowest = min(range(ranks), key=lambda k: results[k]["GBps"])
    best = results[slowest]
    return {**base, "status": STATUS_OK, "wrong": 0, "value": best["GBps"], "slowest_rank": slowest,
            **{k: v for k, v in best.items() if k not in ("status", "wrong", "GBps")}}


def large_all_reduce(nbytes: int, iters: int, warmup_iters: int, ctx) -> dict:
    """The all_reduce line's columns (every rank runs it; the row is the same on all)."""
    from types import SimpleNamespace

    from hpcbench.benchmarks.collectives import measure

    world = ctx.world
    if world is None:
        return {"status": STATUS_SKIPPED,
                "reason": "no ranks: run alone, the fingerprint starts none (benchmark=fingerprint runs it with the "
                          "multi-rank families, on their ranks)"}
    if world.size < 2:
        return {"status": STATUS_SKIPPED,
                "reason": "one rank: an all_reduce over one rank moves no data (busbw factor 2(n-1)/n = 0)"}
    point = Point("all_reduce", nbytes, "float32", "sum", "in_place")
    settings = SimpleNamespace(iters=iters, warmup_iters=warmup_iters, agg_iters=1, blocking=True, check=True)
    row = measure(point, settings, ctx)
    keep = ("status", "reason", "wrong", "time_us", "algbw_GBps", "slowest_rank", "timing_method", "n_samples",
            "median_s", "p10_s", "p90_s", "iqr_s", "cv", "min_s", "max_s", "samples_s", "backend")
    out = {k: row[k] for k in keep if k in row}
    if row["status"] == STATUS_OK:
        out["value"] = row["busbw_GBps"]
    return out
