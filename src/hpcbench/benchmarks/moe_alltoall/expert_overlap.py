"""DualPipe's idea on one rank: micro-batch A runs its expert GEMMs while micro-batch B dispatches and
combines, on a second CUDA stream (GPU) or a second thread (CPU, where gloo's transfers and the
GEMMs share the cores: this measures scheduling, not hardware overlap).

A's GEMMs are grouped per local expert: each local expert multiplies the rows it received
(dequantized; BF16 on GPU, FP32 on CPU) by its own [hidden, expert_ffn] weight. B is the same point
with other token values. Reported (VISION.md §3, medians of the slowest rank): T_comp (A's GEMMs
alone), T_comm (B's dispatch + combine alone), T_seq (the two back to back), T_ovl (overlapped), each
side's duration inside the overlapped run, the hidden fraction and the other overlap measures.
After timing, B's received rows and combined tokens are checked exactly once more, overlapped.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from hpcbench.benchmarks.moe_alltoall.exchange import Exchange, unpack_rows
from hpcbench.benchmarks.moe_alltoall.metrics import sync, timed
from hpcbench.benchmarks.moe_alltoall.reference import check_combine, check_dispatch
from hpcbench.benchmarks.moe_alltoall.routing import Routing
from hpcbench.benchmarks.moe_alltoall.settings import AUTO_FFN, Point
from hpcbench.measure.overlap_metrics import overlap_metrics
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK
from hpcbench.measure.side_stream import durations, overlapped_on_side_stream
from hpcbench.measure.stragglers import straggler_columns
from hpcbench.measure.timing import host_or_event, timed_columns


class ExpertGemms:
    """The local experts' GEMMs over the rows a dispatch delivered (grouped per expert)."""

    def __init__(self, ex: Exchange, ffn: int, seed: int):
        device = ex.device
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        x, ids, _ = unpack_rows(ex.fmt, ex.recv)
        per = ex.routing.per_rank
        experts = ex.rank * per + torch.arange(per, device=device)
        if ex.fmt.layout == "per_expert":
            member = ex.recv_experts()[:, None] == experts[None, :]
        else:
            member = (ids[:, :, None] == experts[None, None, :]).any(dim=1)
        gen = torch.Generator(device=device).manual_seed(seed)
        hidden = ex.fmt.hidden
        self.inputs = [x[member[:, e]].to(dtype) for e in range(per)]
        self.weights = [torch.randn(hidden, ffn, generator=gen, device=device, dtype=dtype) * hidden ** -0.5
                        for _ in range(per)]
        self.outs = [torch.empty(a.shape[0], ffn, device=device, dtype=dtype) for a in self.inputs]
        self.flops = 2 * sum(a.shape[0] for a in self.inputs) * hidden * ffn

    def __call__(self) -> None:
        for a, w, o in zip(self.inputs, self.weights, self.outs):
            torch.mm(a, w, out=o)


class Overlapped:
    """One overlapped iteration; remembers each side's duration (communication, compute)."""

    def __init__(self, compute, comm, cuda: bool):
        self.compute, self.comm, self.cuda = compute, comm, cuda
        self.records: list = []
        if cuda:
            self.side = torch.cuda.Stream()
        else:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moe-comm")

    def _comm_on_thread(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        self.comm()
        return t0, time.perf_counter()

    def __call__(self) -> None:
        if self.cuda:
            self.records.append(overlapped_on_side_stream(self.side, self.comm, self.compute))
            return
        future = self.pool.submit(self._comm_on_thread)
        c0 = time.perf_counter()
        self.compute()
        c1 = time.perf_counter()
        t0, t1 = future.result()
        self.records.append((t1 - t0, c1 - c0))

    def side_times(self, last: int) -> tuple[list[float], list[float]]:
        """(communication, compute) durations of the last `last` iterations, in seconds."""
        return durations(self.records[-last:], self.cuda)

    def close(self) -> None:
        if not self.cuda:
            self.pool.shutdown()


def _second_batch(point: Point, routing: Routing, ctx) -> Exchange:
    b = Exchange(point.fmt, routing, ctx.world.rank, point.seed + 1, ctx.device.torch_device)
    b.counts()
    b.allocate()
    b.dispatch()
    b.expert_outputs()
    return b


def _recheck(b: Exchange, run, ctx) -> int:
    """B's rows and combined tokens, exact once more, after one overlapped iteration."""
    b.recv.fill_(0xFF)
    b.out.fill_(float("nan"))
    run()
    sync(ctx.device.torch_device)
    return ctx.world.sum_int(check_dispatch(b) + check_combine(b))


def overlapped_row(point: Point, routing: Routing, a: Exchange, cfg, ctx) -> dict:
    world, cuda = ctx.world, ctx.device.kind == "cuda"
    ffn = cfg.expert_ffn or AUTO_FFN[ctx.device.kind]
    gemms = ExpertGemms(a, ffn, point.seed)
    b = _second_batch(point, routing, ctx)
    run = Overlapped(gemms, b.dispatch_then_combine, cuda)
    try:
        t = {"comp": timed(gemms, cfg, ctx, waits=False), "comm": timed(b.dispatch_then_combine, cfg, ctx),
             "seq": timed(lambda: (gemms(), b.dispatch_then_combine()), cfg, ctx), "ovl": timed(run, cfg, ctx)}
        comm_in, comp_in = run.side_times(cfg.iters)
        wrong = _recheck(b, run, ctx)
    finally:
        run.close()
    head = {"expert_ffn": ffn, "compute_flops": gemms.flops, "wrong": wrong}
    if wrong:
        return {**head, "status": STATUS_FAILED, "reason": f"{wrong} wrong rows or tokens under overlap"}
    comm_ovl = float(np.median(world.gather_rows(comm_in).numpy().max(axis=0)))
    comp_ovl = float(np.median(world.gather_rows(comp_in).numpy().max(axis=0)))
    med = {k: float(np.median(v.slowest_s)) for k, v in t.items()}
    metrics = overlap_metrics(med["comp"], med["comm"], med["seq"], med["ovl"], comp_ovl, comm_ovl)
    return {**head, "status": STATUS_OK, **{f"t_{k}_us": v * 1e6 for k, v in med.items()},
            "t_comp_in_ovl_us": comp_ovl * 1e6, "t_comm_in_ovl_us": comm_ovl * 1e6,
            **{k: v for k, v in metrics.items() if k != "exposed_comm_s"},
            "exposed_comm_us": metrics["exposed_comm_s"] * 1e6,
            **timed_columns(t["ovl"].slowest_s, host_or_event(ctx.device.kind)),
            **{f"samples_{k}_s": t[k].slowest_s.tolist() for k in ("comp", "comm", "seq")},
            **straggler_columns(ctx.device.kind, *t.values())}
