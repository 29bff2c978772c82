"""One schedule on the ranks: gradient parity with the single-process reference, then the timed
steps (gathered to rank 0), then the same schedule on torch's own runtime.

Straggler report (`hpcbench.measure.stragglers`): a rank's own time in a step is its wall-clock step time
less the time it sat blocked on receives (waiting for other ranks is theirs to answer for). The
injected slow fault (HPCBENCH_INJECT_FAULT=slow:RANK:MS) delays the rank's every timed step, after
the barrier and inside the step's wall time."""

from __future__ import annotations

import time

import numpy as np
import torch

from hpcbench.benchmarks.pipeline.common import Setup
from hpcbench.benchmarks.pipeline.summary import Steps, align, summarise
from hpcbench.pipeline.clocks import Synthetic
from hpcbench.pipeline.executor import Executor, StepResult
from hpcbench.pipeline.ir import Schedule
from hpcbench.pipeline.model import batch, build_chunks, reference
from hpcbench.pipeline.schedules import model_chunks
from hpcbench.pipeline.torch_runtime import TorchRuntime
from hpcbench.pipeline.torch_schedules import TORCH_SCHEDULES
from hpcbench.measure.rank_timing import fault_delay
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK
from hpcbench.runtime.environment import node_name
from hpcbench.measure.stragglers import Rule, analyze, columns


def parity(s: Setup, grads_by_chunk: dict, losses_by_mb: dict, chunks) -> dict:
    """Rank 0 compares the pipeline's loss and gradients with the single-process reference; every
    rank gets the verdict."""
    grads = {c: [g.cpu() for g in gs] for c, gs in grads_by_chunk.items()}
    gathered = s.world.gather_object((grads, losses_by_mb))
    return s.world.broadcast_object(_verdict(s, gathered, chunks) if s.world.is_rank0 else None)


def _verdict(s: Setup, gathered: list, chunks) -> dict:
    summed: dict[int, list[torch.Tensor]] = {}
    losses: dict[int, float] = {}
    for g, ls in gathered:
        losses.update(ls)
        for c, gs in g.items():
            summed[c] = [a + b for a, b in zip(summed[c], gs)] if c in summed else gs
    ref_loss, ref_grads = reference(s.spec, chunks, s.total_mb, s.device)
    loss = sum(losses.values())
    worst = 0.0
    for c, ref in enumerate(ref_grads):
        for got, want in zip(summed.get(c, []), ref):
            scale = float(want.abs().max()) or 1.0
            worst = max(worst, float((got - want.cpu()).abs().max()) / scale)
    missing = sorted(set(range(len(ref_grads))) - set(summed)) + sorted(set(range(s.total_mb)) - set(losses))
    loss_err = abs(loss - float(ref_loss)) / max(abs(float(ref_loss)), 1e-30)
    rtol = s.rtol
    ok = not missing and worst <= rtol and loss_err <= rtol
    return {"ok": ok, "loss": loss, "reference_loss": float(ref_loss), "grad_max_rel_err": worst,
            "loss_rel_err": loss_err,
            "reason": None if ok else (f"pipeline vs single-process reference: gradient rel err {worst:.3g}, "
                                       f"loss rel err {loss_err:.3g} (rtol {rtol:g})"
                                       + (f"; missing {missing[:4]}" if missing else ""))}


def measure_schedule(s: Setup, name: str, schedule: Schedule, row: dict) -> tuple[dict, tuple | None]:
    """The schedule's row (the same on every rank), and on rank 0 its (measured, simulated) timelines."""
    world, device, cfg = s.world, s.device, s.cfg
    chunks = build_chunks(s.spec, model_chunks(schedule), device)
    executor = Executor(schedule, s.spec, chunks, world.rank, device,
                        synthetic=Synthetic(s.synthetic_s, device) if s.synthetic_s else None, overlap=cfg.overlap,
                        use_batch_p2p=s.batch_p2p, on_action=s.ctx.at)
    xs, ys = batch(s.spec, s.total_mb, device)
    first, _, first_wall = _step(s, executor, xs, ys)
    verdict = parity(s, executor.grads_by_chunk(), first.losses, chunks)
    row.update({k: v for k, v in verdict.items() if k not in ("ok", "reason")})
    if not verdict["ok"]:
        executor.overlap.close()
        return {**row, "status": STATUS_FAILED, "reason": verdict["reason"]}, None
    timed, peaks, own = _timed_steps(s, executor, xs, ys, first_wall)
    executor.overlap.close()
    on_torch = None
    if cfg.torch_runtime and not s.synthetic_s and name in TORCH_SCHEDULES:
        s.ctx.heartbeat(f"pipeline {name} on torch's runtime")
        on_torch = _torch_runtime(s, name, schedule, chunks, xs, ys)
    summary, timelines = None, None
    if world.is_rank0:
        cuda_peaks = [max(p[r] for p in peaks) for r in range(world.size)] if device.type == "cuda" else None
        metrics, shown, simulated = summarise(s, name, schedule, timed, cuda_peaks)
        timelines = (shown, simulated)
        summary = {**row, "status": STATUS_OK, **metrics, **(on_torch or {}), **own}
        if on_torch and on_torch.pop("torch_runtime_failure"):
            summary.update(status=STATUS_FAILED, reason=on_torch["torch_runtime_reason"])
    return world.broadcast_object(summary), timelines


def _step(s: Setup, executor: Executor, xs, ys, delay=None) -> tuple[StepResult, int | None, float]:
    """One step after a barrier, gradients zeroed; with the device's peak memory on CUDA and the
    step's wall time on this rank (the executor synchronises the device before it returns).
    `delay`: the injected fault of a timed step, inside the wall time."""
    device = s.device
    s.world.barrier()
    executor.zero_grad()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    if delay is not None:
        delay()
    res = executor.step(xs, ys)
    wall = time.perf_counter() - t0
    s.ctx.heartbeat()
    return res, (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None), wall


def _timed_steps(s: Setup, executor: Executor, xs, ys, first_wall: float) -> tuple[Steps, list[list], dict]:
    """Warm-up steps, then the timed ones; rank 0 gets every rank's records (aligned) and peaks,
    and the straggler columns of the ranks' own step times."""
    for _ in range(s.cfg.warmup_steps):
        _step(s, executor, xs, ys)
    delay = fault_delay(s.world.rank)
    timed, peaks, own, wall = [], [], [], []
    for _ in range(s.cfg.steps):
        res, peak, w = _step(s, executor, xs, ys, delay)
        gathered = s.world.gather_object((res, peak, w, node_name(), first_wall))
        if s.world.is_rank0:
            timed.append(align({r: g[0] for r, g in enumerate(gathered)}, s.shared_clock))
            peaks.append([g[1] for g in gathered])
            wall.append([g[2] for g in gathered])
            own.append([g[2] - sum(rec.blocked for rec in g[0].records) for g in gathered])
    report = {}
    if s.world.is_rank0:
        nodes, firsts = [g[3] for g in gathered], np.array([g[4] for g in gathered])
        report = columns(analyze(np.array(own).T, Rule.for_device(s.device.type), np.array(wall).T, firsts, nodes,
                                 basis="step less blocked"))
    return timed, peaks, report


def _torch_runtime(s: Setup, name: str, schedule: Schedule, chunks, xs, ys) -> dict:
    """The schedule on torch's own runtime: parity first, then the step time (slowest rank)."""
    world, cfg = s.world, s.cfg
    runtime = TorchRuntime(name, schedule, chunks, world.rank, s.device)
    world.barrier()
    _, losses = runtime.step(xs, ys)
    verdict = parity(s, runtime.grads_by_chunk(), losses, chunks)
    out = {"torch_runtime_grad_max_rel_err": verdict["grad_max_rel_err"],
           "torch_runtime_loss_rel_err": verdict["loss_rel_err"], "torch_runtime_failure": not verdict["ok"],
           "torch_runtime_reason": None if verdict["ok"] else f"torch's runtime: {verdict['reason']}"}
    if not verdict["ok"]:
        return out
    for _ in range(cfg.warmup_steps):
        world.barrier()
        runtime.step(xs, ys)
    times = []
    for _ in range(cfg.steps):
        world.barrier()
        times.append(runtime.step(xs, ys)[0])
    slowest = world.gather_rows(times).max(dim=0).values
    out["torch_runtime_step_ms"] = float(slowest.median()) * 1e3
    return out
