"""Compute-communication overlap: a compute kernel on one stream, a collective on another.

Per collective size: T_comp and T_comm alone, T_seq back to back, T_ovl overlapped, and each
stream's own duration inside the overlapped run; from them the hidden fraction, exposed
communication, speedup over sequential, fraction of the ideal max(T_comp, T_comm), and the
slowdown each side suffers from the other (NCCL kernels take SMs from compute). Every time is the
slowest rank's, median over iterations. The collective's result is checked after an overlapped run.

On CUDA the collective runs on a side stream (priority configurable; CUDA_DEVICE_MAX_CONNECTIONS and
NCCL CTA limits come from `dist.env`). On CPU the collective runs on gloo's own threads
(async_op=True) while the main thread computes: cores are shared, so this measures scheduling.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import auto

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import MISSING

from hpcbench.benchmarks._collective_ops import (
    COLLECTIVES,
    DTYPES,
    NotApplicable,
    Point,
    Prepared,
)
from hpcbench.benchmarks.overlap.report import REPORT
from hpcbench.api import checks
from hpcbench.api.errors import UserError
from hpcbench.api.family import Choice, Family, choices
from hpcbench.measure.overlap_metrics import overlap_metrics
from hpcbench.measure.rank_timing import gather_times, time_ranks
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.measure.side_stream import durations, overlapped_on_side_stream
from hpcbench.api.sizes import format_bytes, parse_bytes
from hpcbench.measure.stragglers import straggler_columns, with_verdict
from hpcbench.api.tables import fmt, fmt_share, new_table, status_cell
from hpcbench.measure.timing import host_or_event, timed_columns


class Compute(Choice):
    gemm = auto()  # compute-bound
    memory = auto()  # a bandwidth-bound copy


# CUDA stream priorities run from 0 (the default, also the lowest) to negative numbers (higher): there is
# no priority below the default, so "low" is not offered
Priority = choices("Priority", ("default", "high"))
AsyncCollective = choices("AsyncCollective", (n for n in COLLECTIVES if n != "staged_all_reduce"))
Dtype = choices("Dtype", DTYPES)
ComputeDtype = choices("ComputeDtype", ("auto", *DTYPES))
_AUTO = {"cuda": {"gemm_mnk": [8192, 8192, 8192], "comm_sizes": ["16M", "64M", "256M"], "memory_bytes": "1G"},
         "cpu": {"gemm_mnk": [384, 384, 384], "comm_sizes": ["64K", "1M"], "memory_bytes": "32M"}}


# what identifies a point when two runs are compared (the world size is part of the environment)
PARAMS = ("collective", "comm_bytes", "comm_dtype", "compute", "compute_shape", "compute_repeats",
          "comm_priority", "cuda_device_max_connections", "nccl_min_ctas", "nccl_max_ctas")

@dataclass
class Config:
    """Types of the `overlap:` section; the defaults and their documentation: conf/benchmark/overlap.yaml."""

    compute: Compute = MISSING
    gemm_mnk: list[int] = MISSING
    compute_dtype: ComputeDtype = MISSING
    memory_bytes: str = MISSING
    compute_repeats: int = MISSING
    collective: AsyncCollective = MISSING
    comm_sizes: list[str] = MISSING
    comm_dtype: Dtype = MISSING
    comm_priority: Priority = MISSING
    iters: int = MISSING
    warmup_iters: int = MISSING


def validate(cfg: Config) -> None:
    if cfg.gemm_mnk and (len(cfg.gemm_mnk) != 3 or min(cfg.gemm_mnk) < 1):
        raise UserError("overlap.gemm_mnk must be [M, N, K] with positive sizes")
    checks.at_least("overlap", cfg, iters=1, warmup_iters=0, compute_repeats=1)
    for s in cfg.comm_sizes:
        parse_bytes(s, "overlap.comm_sizes")
    if cfg.memory_bytes != "auto":
        parse_bytes(cfg.memory_bytes, "overlap.memory_bytes")


def _compute(cfg: Config, device) -> tuple:
    """The compute phase as a callable, and a description for the row."""
    kind = device.type
    dtype = DTYPES[cfg.compute_dtype] if cfg.compute_dtype != "auto" else (
        torch.bfloat16 if kind == "cuda" else torch.float32)
    if cfg.compute == Compute.gemm:
        m, n, k = cfg.gemm_mnk or _AUTO[kind]["gemm_mnk"]
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        out = torch.empty(m, n, device=device, dtype=dtype)

        def fn():
            for _ in range(cfg.compute_repeats):
                torch.matmul(a, b, out=out)
        return fn, {"compute_shape": f"{m}x{n}x{k}", "compute_flops": 2 * m * n * k * cfg.compute_repeats}
    nbytes = parse_bytes(_AUTO[kind]["memory_bytes"] if cfg.memory_bytes == "auto" else cfg.memory_bytes)
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)

    def fn():
        for _ in range(cfg.compute_repeats):
            dst.copy_(src)
    return fn, {"compute_shape": format_bytes(nbytes), "compute_bytes": 2 * src.numel() * 4 * cfg.compute_repeats}


class _Overlapped:
    """One overlapped iteration; remembers each stream's duration for the iterations it ran."""

    def __init__(self, compute, prepared: Prepared, cuda: bool, priority: str):
        self.compute, self.prepared, self.cuda = compute, prepared, cuda
        self.records: list = []
        if cuda:
            self.side = torch.cuda.Stream(priority=-1 if priority == "high" else 0)  # torch clamps to the device's range

    def __call__(self):
        if self.cuda:  # returns once the NCCL stream is ordered before the side stream
            self.records.append(overlapped_on_side_stream(self.side, self.prepared.call, self.compute))
            return
        t0 = time.perf_counter()
        done = {}
        work = self.prepared.call(async_op=True)
        work.get_future().then(lambda _: done.setdefault("t", time.perf_counter()))
        c0 = time.perf_counter()
        self.compute()
        c1 = time.perf_counter()
        work.wait()
        self.records.append((done.get("t", time.perf_counter()) - t0, c1 - c0))

    def stream_times(self, last: int) -> tuple[list[float], list[float]]:
        """(collective, compute) durations of the last `last` iterations, in seconds."""
        return durations(self.records[-last:], self.cuda)


def _group(cfg: Config, ctx):
    if ctx.device.kind == "cuda" and cfg.comm_priority == "high" and ctx.world.backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts.is_high_priority_stream = True
        return dist.new_group(backend="nccl", pg_options=opts)
    return None


def run(cfg: Config, ctx):
    world, device = ctx.world, ctx.device.torch_device
    sizes = [parse_bytes(s) for s in (cfg.comm_sizes or _AUTO[device.type]["comm_sizes"])]
    ctx.set_total(len(sizes))
    compute, compute_desc = _compute(cfg, device)
    group = _group(cfg, ctx)
    knobs = {k.lower(): os.environ.get(k) for k in ("CUDA_DEVICE_MAX_CONNECTIONS", "NCCL_MIN_CTAS", "NCCL_MAX_CTAS")}
    for size in sizes:
        point = Point(cfg.collective, size, cfg.comm_dtype, "sum", COLLECTIVES[cfg.collective].placements[0])
        row = {"collective": cfg.collective, "comm_bytes": size, "comm_dtype": cfg.comm_dtype,
               "compute": cfg.compute, **compute_desc, "compute_repeats": cfg.compute_repeats,
               "comm_priority": cfg.comm_priority, "world_size": world.size, "backend": world.backend, **knobs}
        if ctx.already_measured(row):
            continue
        ctx.heartbeat(f"overlap {cfg.collective} {format_bytes(size)}")
        try:
            prepared = Prepared(point, world, group)
        except NotApplicable as exc:
            yield {**row, "status": STATUS_SKIPPED, "reason": str(exc)}
            continue
        prepared.reset()
        yield {**row, **_measure(compute, prepared, cfg, ctx)}


def _measure(compute, prepared: Prepared, cfg: Config, ctx) -> dict:
    world = ctx.world
    cuda = ctx.device.kind == "cuda"
    comm = prepared.call
    overlapped = _Overlapped(compute, prepared, cuda, cfg.comm_priority)

    def slowest(fn, waits=True):
        samples = time_ranks(fn, world, cfg.iters, cfg.warmup_iters, ctx.heartbeat, waits=waits)
        return gather_times(world, samples)

    t_comp, t_comm = slowest(compute, waits=False), slowest(comm)
    t_seq = slowest(lambda: (compute(), comm()))
    t_ovl = slowest(overlapped)
    comm_in, comp_in = overlapped.stream_times(cfg.iters)
    comm_ovl = float(np.median(world.gather_rows(comm_in).numpy().max(axis=0)))
    comp_ovl = float(np.median(world.gather_rows(comp_in).numpy().max(axis=0)))

    prepared.reset()  # the collective's answer must still be exact when it shares the device
    overlapped()
    if cuda:
        torch.cuda.synchronize()
    wrong = world.sum_int(prepared.wrong())
    if wrong:
        return {"status": STATUS_FAILED, "reason": f"{wrong} wrong elements in the overlapped collective",
                "wrong": wrong}
    med = {name: float(np.median(t.slowest_s)) for name, t in
           (("comp", t_comp), ("comm", t_comm), ("seq", t_seq), ("ovl", t_ovl))}
    metrics = overlap_metrics(med["comp"], med["comm"], med["seq"], med["ovl"], comp_ovl, comm_ovl)
    coll = COLLECTIVES[prepared.point.collective]
    busbw = lambda t: prepared.point.size_bytes / t / 1e9 * coll.busbw_factor(world.size)  # noqa: E731
    return {
        "status": STATUS_OK, "wrong": 0,
        **{f"t_{k}_us": v * 1e6 for k, v in med.items()},
        "t_comp_in_ovl_us": comp_ovl * 1e6, "t_comm_in_ovl_us": comm_ovl * 1e6,
        **{k: v for k, v in metrics.items() if k != "exposed_comm_s"},
        "exposed_comm_us": metrics["exposed_comm_s"] * 1e6,
        "busbw_alone_GBps": busbw(med["comm"]), "busbw_in_ovl_GBps": busbw(comm_ovl),
        **timed_columns(t_ovl.slowest_s, host_or_event(ctx.device.kind)),
        **{f"samples_{k}_s": t.slowest_s.tolist() for k, t in
           (("comp", t_comp), ("comm", t_comm), ("seq", t_seq))},
        **straggler_columns(ctx.device.kind, t_comp, t_comm, t_seq, t_ovl),
    }


def table(rows: list[dict], fallback: bool):
    t = new_table("compute-communication overlap (slowest rank, median)", fallback,
                  "gloo threads share the cores with compute",
                  ["collective", "size", "compute", "status", "T_comp us", "T_comm us", "T_seq us", "T_ovl us",
                   "hidden", "h*", "exposed us", "×seq", "of ideal", "comp slow", "comm slow"],
                  left=("collective", "compute", "status"))
    for r in rows:
        t.add_row(r["collective"], format_bytes(int(r["comm_bytes"])), f"{r['compute']} {r.get('compute_shape', '')}",
                  status_cell(r), fmt(r.get("t_comp_us"), ".1f"), fmt(r.get("t_comm_us"), ".1f"),
                  fmt(r.get("t_seq_us"), ".1f"), fmt(r.get("t_ovl_us"), ".1f"), fmt_share(r.get("hidden_fraction")),
                  fmt_share(r.get("hidden_fraction_bounded")), fmt(r.get("exposed_comm_us"), ".1f"),
                  fmt(r.get("speedup_vs_seq"), ".2f"), fmt(r.get("fraction_of_ideal"), ".0%"),
                  fmt(r.get("compute_slowdown"), "+.0%"), fmt(r.get("comm_slowdown"), "+.0%"))
    return with_verdict(t, rows)


def planned(cfg: Config, kind: str) -> list[dict]:
    return [{"collective": cfg.collective, "comm_bytes": parse_bytes(s), "compute": cfg.compute}
            for s in (cfg.comm_sizes or _AUTO[kind]["comm_sizes"])]


FAMILY = Family(
    name="overlap",
    summary="compute-communication overlap: hidden fraction, exposed communication, slowdowns",
    config=Config, run=run, params=PARAMS, distributed=True, validate=validate, table=table, report=REPORT,
    smoke=("overlap.comm_sizes=[64K]", "overlap.gemm_mnk=[128,128,128]", "overlap.iters=3", "overlap.warmup_iters=1"),
    planned=planned,
    case_id=lambda r: f"{r['collective']}-{format_bytes(int(r['comm_bytes'])).replace(' ', '')}-{r['compute']}",
)
