"""Pipeline-parallel schedules run for real on the ranks, against the simulator's prediction.

For each schedule (torch's 1F1B, GPipe, Interleaved 1F1B, ZB1P, ZBV, DualPipeV, and hpcbench's
bidirectional DualPipe) on the run's ranks, one rank per pipeline rank:
  1. the schedule is built and checked (every F/B/W once; the simulator finds no deadlock);
  2. one untimed step checks the loss and every gradient against a single-process run of the same
     model on the same batch (fp32 tolerance) before anything is timed;
  3. `steps` timed steps record every action's start and end on every rank (host clock on CPU,
     CUDA events on GPU), gathered to rank 0.
Reported per schedule: step time, throughput, measured bubble (idle fraction of each rank's step),
the simulator's bubble for the costs this run measured, the DualPipe paper's closed form, peak
activations against the simulator's, time blocked on receives, and the overlap efficiency of
F&B pairs. In synthetic mode every action has a fixed duration, so the bubble reflects the
schedule rather than the machine. Chrome traces and a Gantt chart go to the run's directory.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from hpcbench.errors import UserError
from hpcbench.pipeline.executor import Executor, StepResult, Synthetic
from hpcbench.pipeline.model import MODEL_KINDS, ModelSpec, batch, build_chunks, divisors_hint, reference
from hpcbench.pipeline.schedules import SCHEDULES, build, check_name, model_chunks
from hpcbench.pipeline.simulator import Costs, Deadlock, closed_form_bubble, simulate
from hpcbench.pipeline.torch_runtime import TorchRuntime
from hpcbench.pipeline.torch_schedules import TORCH_SCHEDULES
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED

DISTRIBUTED = True

_AUTO = {"cuda": {"width": 2048, "microbatch_size": 8}, "cpu": {"width": 64, "microbatch_size": 4}}


@dataclass
class SyntheticConfig:
    enabled: bool = False
    F_ms: float = 10.0  # forward of one microbatch through one stage
    B_ms: float = 20.0  # full backward
    W_ms: float = 10.0  # weight part of a split backward (the input part is B - W)


# what identifies a point when two runs are compared (the world size is part of the environment)
PARAMS = ("schedule", "model", "width", "layers", "seq", "microbatch_size", "microbatches", "synthetic",
          "overlap")

@dataclass
class Config:
    schedules: list[str] = field(default_factory=lambda: list(SCHEDULES))
    microbatches: int = 0  # per step, the whole batch (DualPipe feeds half from each end); 0 = 4 x ranks
    model: str = "mlp"  # mlp | transformer
    width: int = 0  # hidden size; 0 = auto (2048 on CUDA, 64 on CPU)
    layers: int = 0  # blocks in the whole model; 0 = auto: 4 x ranks, which every schedule can split
    seq: int = 16  # tokens per sample (transformer)
    microbatch_size: int = 0  # samples per microbatch; 0 = auto (8 on CUDA, 4 on CPU)
    steps: int = 5
    warmup_steps: int = 1
    overlap: bool = True  # run F&B pairs concurrently (False: one after the other, for comparison)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    rtol: float = 1e-4  # gradient/loss parity with the single-process reference (relative to each tensor's max)
    traces: bool = True  # Chrome traces and Gantt charts in the run directory
    torch_runtime: bool = True  # also run torch's schedules on torch's own runtime (parity, step time)


def validate(cfg: Config) -> None:
    if not cfg.schedules:
        raise UserError("pipeline.schedules is empty (available: " + ", ".join(SCHEDULES) + ")")
    for name in cfg.schedules:
        try:
            check_name(name)
        except ValueError as exc:
            raise UserError(f"pipeline.schedules: {exc}") from None
    if cfg.model not in MODEL_KINDS:
        raise UserError(f"pipeline.model={cfg.model!r} is not one of {', '.join(MODEL_KINDS)}")
    if min(cfg.microbatches, cfg.width, cfg.layers, cfg.microbatch_size) < 0 or cfg.seq < 1:
        raise UserError("pipeline: microbatches/width/layers/microbatch_size must be >= 0 (0 = auto), seq >= 1")
    if cfg.steps < 1 or cfg.warmup_steps < 0:
        raise UserError("pipeline: steps must be >= 1 and warmup_steps >= 0")
    s = cfg.synthetic
    if s.enabled and not (s.F_ms > 0 and s.B_ms > 0 and 0 < s.W_ms < s.B_ms):
        raise UserError("pipeline.synthetic: F_ms and B_ms must be positive and 0 < W_ms < B_ms")


def _spec(cfg: Config, world_size: int, kind: str) -> ModelSpec:
    auto = _AUTO[kind]
    return ModelSpec(kind=cfg.model, width=cfg.width or auto["width"], layers=cfg.layers or 4 * world_size,
                     seq=cfg.seq, microbatch_size=cfg.microbatch_size or auto["microbatch_size"])


def p2p_latency(world, spec: ModelSpec, device: torch.device, iters: int = 20) -> float:
    """Half the median round trip of one activation between ranks 0 and 1 (0 on one rank)."""
    if world.size < 2:
        return 0.0
    import time

    buf = torch.zeros(spec.sample_shape(), device=device)
    samples = []
    world.barrier()
    if world.rank in (0, 1):
        peer = 1 - world.rank
        for i in range(iters + 3):
            t0 = time.perf_counter()
            if world.rank == 0:
                dist.send(buf, peer)
                dist.recv(buf, peer)
            else:
                dist.recv(buf, peer)
                dist.send(buf, peer)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                samples.append((time.perf_counter() - t0) / 2)
    world.barrier()
    return world.broadcast_object(statistics.median(samples) if world.rank == 0 else None)


def _parity(world, grads_by_chunk: dict, losses_by_mb: dict, spec: ModelSpec, chunks, total_mb: int, device,
            rtol: float) -> dict:
    """Rank 0 compares the pipeline's loss and gradients with the single-process reference."""
    grads = {c: [g.cpu() for g in gs] for c, gs in grads_by_chunk.items()}
    gathered = world.gather_object((grads, losses_by_mb))
    verdict = None
    if world.is_rank0:
        summed: dict[int, list[torch.Tensor]] = {}
        losses: dict[int, float] = {}
        for g, ls in gathered:
            losses.update(ls)
            for c, gs in g.items():
                summed[c] = [a + b for a, b in zip(summed[c], gs)] if c in summed else gs
        ref_loss, ref_grads = reference(spec, chunks, total_mb, device)
        loss = sum(losses.values())
        worst = 0.0
        for c, ref in enumerate(ref_grads):
            for got, want in zip(summed.get(c, []), ref):
                scale = float(want.abs().max()) or 1.0
                worst = max(worst, float((got - want.cpu()).abs().max()) / scale)
        missing = sorted(set(range(len(ref_grads))) - set(summed)) + sorted(set(range(total_mb)) - set(losses))
        loss_err = abs(loss - float(ref_loss)) / max(abs(float(ref_loss)), 1e-30)
        ok = not missing and worst <= rtol and loss_err <= rtol
        verdict = {"ok": ok, "loss": loss, "reference_loss": float(ref_loss), "grad_max_rel_err": worst,
                   "loss_rel_err": loss_err,
                   "reason": None if ok else (f"pipeline vs single-process reference: gradient rel err {worst:.3g}, "
                                              f"loss rel err {loss_err:.3g} (rtol {rtol:g})"
                                              + (f"; missing {missing[:4]}" if missing else ""))}
    return world.broadcast_object(verdict)


def effective_latency(schedule, steps: list[dict[int, StepResult]]) -> float | None:
    """Median time from the end of an action that sends to the start of the action on another rank
    that was already waiting for it: the point-to-point latency as the schedule sees it (posting,
    transfer, waking the receiver), which an idle ping-pong underestimates on a loaded machine."""
    from hpcbench.pipeline.executor import _input_key, _output_key

    by_label = {r: {str(a): a for a in schedule.actions[r]} for r in schedule.actions}
    hops = []
    for step in steps:
        sent, waited = {}, {}
        for rank, res in step.items():
            for rec in res.records:
                for a in by_label[rank][rec.label].parts():
                    out, inp = _output_key(schedule, a), _input_key(schedule, a)
                    if out is not None and schedule.stage_to_rank[out[1]] != rank:
                        sent[out] = rec.end
                    if inp is not None:
                        waited[inp] = (rec.start - rec.blocked, rec.start)
        hops += [waited[k][1] - sent[k] for k in waited.keys() & sent.keys() if sent[k] >= waited[k][0]]
    return statistics.median(hops) if hops else None


def _measured_costs(steps: list[dict[int, StepResult]], latency: float) -> Costs:
    """Mean measured duration per (stage, action kind), the mean F&B pair, and the dispatch gap."""
    per: dict[int, dict[str, list[float]]] = {}
    pairs = []
    for step in steps:
        for res in step.values():
            for rec in res.records:
                d = rec.end - rec.start
                if rec.kind == "FB":
                    pairs.append(d)
                else:
                    per.setdefault(rec.stage, {}).setdefault(rec.kind, []).append(d)
    per_stage = {s: {k: statistics.fmean(v) for k, v in kinds.items()} for s, kinds in per.items()}
    return Costs(per_stage=per_stage, FB=statistics.fmean(pairs) if pairs else None, p2p_latency=latency,
                 dispatch=statistics.fmean(_gaps(steps)) if _gaps(steps) else 0.0)


def _gaps(steps: list[dict[int, StepResult]]) -> list[float]:
    """Each rank's own time between the end of one action and the start of waiting for the next."""
    return [max(0.0, b.start - b.blocked - a.end) for step in steps for res in step.values()
            for a, b in zip(res.records, res.records[1:])]


def replay_costs(step: dict[int, StepResult], latency: float) -> Costs:
    """Every action of one measured step with its own measured duration: the simulator then
    replays that step, so what is left between the two is the model of dependencies and
    communication, not the spread of action times."""
    per_action = {rec.label: rec.end - rec.start for res in step.values() for rec in res.records}
    gaps = _gaps([step])
    return Costs(per_action=per_action, p2p_latency=latency, dispatch=statistics.fmean(gaps) if gaps else 0.0)


def _mean_kind(costs: Costs, kind: str) -> float | None:
    vals = [k[kind] for k in costs.per_stage.values() if kind in k]
    return statistics.fmean(vals) if vals else None


def align(step: dict[int, StepResult], shared_clock: bool) -> dict[int, StepResult]:
    """Put every rank's records on one time axis. Ranks on one host share time.perf_counter's
    clock, so their step origins give the offsets; across hosts the clocks are unrelated and the
    barrier before the step is the alignment (good to its skew, typically tens of microseconds)."""
    if not shared_clock:
        return step
    first = min(res.origin for res in step.values())
    return {r: res.shifted(res.origin - first) for r, res in step.items()}


def _summarise(name: str, schedule, steps: list[dict[int, StepResult]], latency: float, spec: ModelSpec,
               total_mb: int, cuda_peaks: list[int] | None, synthetic_s: dict | None,
               overlap: bool) -> tuple[dict, object, object]:
    from hpcbench.pipeline.trace import measured_timeline

    timelines = [measured_timeline(schedule, {r: res.records for r, res in step.items()}) for step in steps]
    step_s = [t.makespan for t in timelines]
    median_i = sorted(range(len(step_s)), key=step_s.__getitem__)[len(step_s) // 2]
    shown = timelines[median_i]
    ranks = sorted(shown.busy)
    bubble = statistics.median(t.mean_bubble_ratio for t in timelines)
    in_schedule = effective_latency(schedule, steps)
    hop = in_schedule if in_schedule is not None else latency
    costs = _measured_costs(steps, hop)
    replays = [simulate(schedule, replay_costs(step, hop)) for step in steps]
    replay_bubble = statistics.median(t.mean_bubble_ratio for t in replays)
    predicted = simulate(schedule, costs)
    f, b, w = (_mean_kind(costs, k) for k in ("F", "B", "W"))
    closed = None
    if f is not None and b is not None:
        # the paper's closed forms take uniform stages and W as part of B
        uniform = Costs(F=f, B=b, W=w if w is not None else b / 2, FB=costs.FB)
        closed = closed_form_bubble(name, schedule.num_stages if name == "dualpipev" else schedule.num_ranks, uniform)
    samples = total_mb * spec.microbatch_size
    median_step = statistics.median(step_s)
    row = {
        "step_ms": median_step * 1e3, "step_ms_min": min(step_s) * 1e3, "step_ms_max": max(step_s) * 1e3,
        # every timed step's makespan (earliest start to latest end over the ranks), for compare
        "n_samples": len(step_s), "median_s": median_step, "samples_s": step_s,
        "samples_per_s": samples / median_step,
        "tokens_per_s": samples * spec.seq / median_step if spec.kind == "transformer" else None,
        "bubble_ratio": bubble,
        "bubble_ratio_per_rank": [shown.bubble_ratio(r) for r in ranks],
        # the simulator fed this run's mean cost per stage and action kind, dispatch gap and hop latency
        "predicted_bubble_ratio": predicted.mean_bubble_ratio,
        "bubble_residual_pp": (bubble - predicted.mean_bubble_ratio) * 100,
        # the simulator replaying each timed step with every action's own measured duration: what is
        # left against the measurement is the model of dependencies and communication alone
        "replay_bubble_ratio": replay_bubble,
        "measured_idle_ms": shown.max_bubble * 1e3,
        "closed_form_bubble_ms": None if closed is None else closed * 1e3,
        "predicted_step_ms": predicted.makespan * 1e3,
        # synthetic mode: the schedule alone, from the configured durations (an ideal F&B pair
        # takes the longer of its halves), no latency: the target the measurement should approach
        "configured_bubble_ratio": None if not synthetic_s else simulate(schedule, Costs(
            F=synthetic_s["F"], B=synthetic_s["B"], W=synthetic_s["W"], I=synthetic_s["I"],
            FB=max(synthetic_s["F"], synthetic_s["B"]) if overlap else synthetic_s["F"] + synthetic_s["B"],
        )).mean_bubble_ratio,
        "blocked_ms_per_rank": [sum(r.blocked for r in steps[median_i][k].records) * 1e3 for k in ranks],
        "peak_activations_per_rank": [steps[median_i][k].peak_live_activations for k in ranks],
        "predicted_peak_activations_per_rank": [predicted.peak_activations.get(k, 0) for k in ranks],
        "peak_activation_bytes_per_rank": [steps[median_i][k].peak_activation_bytes for k in ranks],
        "peak_memory_bytes_per_rank": cuda_peaks,
        "measured_costs_ms": {str(s): {k: v * 1e3 for k, v in kinds.items()} for s, kinds in costs.per_stage.items()},
        "fb_pair_ms": None if costs.FB is None else costs.FB * 1e3,
        "dispatch_ms": costs.dispatch * 1e3,
        "p2p_latency_ms": latency * 1e3,  # idle ping-pong, half round trip
        "p2p_latency_in_schedule_ms": None if in_schedule is None else in_schedule * 1e3,  # what the simulator used
        "fb_overlap_efficiency": (None if costs.FB is None or f is None or b is None
                                  else (f + b - costs.FB) / min(f, b)),
        "synthetic_overruns": sum(res.synthetic_overruns for step in steps for res in step.values()),
    }
    return row, shown, predicted


def run(cfg: Config, ctx):
    validate(cfg)
    world, device = ctx.world, ctx.device.torch_device
    spec = _spec(cfg, world.size, device.type)
    total_mb = cfg.microbatches or 4 * world.size
    synthetic_s = ({"F": cfg.synthetic.F_ms / 1e3, "B": cfg.synthetic.B_ms / 1e3, "W": cfg.synthetic.W_ms / 1e3,
                    "I": (cfg.synthetic.B_ms - cfg.synthetic.W_ms) / 1e3} if cfg.synthetic.enabled else None)
    ctx.set_total(len(cfg.schedules))
    latency = p2p_latency(world, spec, device)
    common = {"model": spec.kind, "width": spec.width, "layers": spec.layers, "seq": spec.seq,
              "microbatch_size": spec.microbatch_size, "microbatches": total_mb, "world_size": world.size,
              "backend": world.backend, "synthetic": cfg.synthetic.enabled, "overlap": cfg.overlap,
              "timing_method": "cuda_event" if device.type == "cuda" else "perf_counter",
              "synthetic_ms": ({k: v * 1e3 for k, v in synthetic_s.items()} if synthetic_s else None)}
    shown, simulated = {}, {}
    shared_clock = len(set(world.hosts())) == 1
    for name in cfg.schedules:
        ctx.heartbeat(f"pipeline {name}")
        row = {**common, "schedule": name}
        if ctx.already_measured(row):
            continue
        try:
            schedule = build(name, world.size, total_mb)
            chunks_n = model_chunks(schedule)
            if spec.layers % chunks_n:
                raise ValueError(f"{name} cuts the model into {chunks_n} stages: {divisors_hint(spec.layers, chunks_n)}")
            simulate(schedule, Costs())  # a schedule that cannot finish is refused before it hangs ranks
        except (ValueError, Deadlock) as exc:
            yield {**row, "status": STATUS_SKIPPED, "reason": str(exc)}
            continue
        row.update(stages=schedule.num_stages, model_chunks=chunks_n)
        chunks = build_chunks(spec, chunks_n, device)
        executor = Executor(schedule, spec, chunks, world.rank, device,
                            synthetic=Synthetic(synthetic_s, device) if synthetic_s else None, overlap=cfg.overlap,
                            use_batch_p2p=world.backend == "nccl", on_action=ctx.at)
        xs, ys = batch(spec, total_mb, device)

        def step() -> tuple[StepResult, int | None]:
            world.barrier()
            executor.zero_grad()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            res = executor.step(xs, ys)
            ctx.heartbeat()
            return res, (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)

        first, _ = step()
        parity = _parity(world, executor.grads_by_chunk(), first.losses, spec, chunks, total_mb, device, cfg.rtol)
        row.update({k: v for k, v in parity.items() if k not in ("ok", "reason")})
        if not parity["ok"]:
            executor.overlap.close()
            yield {**row, "status": STATUS_FAILED, "reason": parity["reason"]}
            continue
        for _ in range(cfg.warmup_steps):
            step()
        timed, peaks = [], []
        for _ in range(cfg.steps):
            res, peak = step()
            gathered = world.gather_object((res, peak))
            if world.is_rank0:
                timed.append(align({r: g[0] for r, g in enumerate(gathered)}, shared_clock))
                peaks.append([g[1] for g in gathered])
        executor.overlap.close()
        on_torch = None
        if cfg.torch_runtime and not synthetic_s and name in TORCH_SCHEDULES:
            ctx.heartbeat(f"pipeline {name} on torch's runtime")
            on_torch = _torch_runtime(cfg, name, schedule, spec, chunks, world, device, xs, ys, total_mb)
        summary = None
        if world.is_rank0:
            cuda_peaks = [max(p[r] for p in peaks) for r in range(world.size)] if device.type == "cuda" else None
            metrics, shown[name], simulated[name] = _summarise(name, schedule, timed, latency, spec, total_mb, cuda_peaks,
                                                               synthetic_s, cfg.overlap)
            summary = {**row, "status": STATUS_OK, **metrics, **(on_torch or {})}
            if on_torch and on_torch.pop("torch_runtime_failure"):
                summary.update(status=STATUS_FAILED, reason=on_torch["torch_runtime_reason"])
        yield world.broadcast_object(summary)
    if cfg.traces and world.is_rank0 and shown and ctx.run_dir is not None:
        _write_artifacts(ctx.run_dir, shown, simulated)


def _torch_runtime(cfg: Config, name, schedule, spec, chunks, world, device, xs, ys, total_mb) -> dict:
    """The schedule on torch's own runtime: parity first, then the step time (slowest rank)."""
    runtime = TorchRuntime(name, schedule, chunks, world.rank, device)
    world.barrier()
    _, losses = runtime.step(xs, ys)
    parity = _parity(world, runtime.grads_by_chunk(), losses, spec, chunks, total_mb, device, cfg.rtol)
    out = {"torch_runtime_grad_max_rel_err": parity["grad_max_rel_err"],
           "torch_runtime_loss_rel_err": parity["loss_rel_err"], "torch_runtime_failure": not parity["ok"],
           "torch_runtime_reason": None if parity["ok"] else f"torch's runtime: {parity['reason']}"}
    if not parity["ok"]:
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


def _write_artifacts(run_dir, shown: dict, simulated: dict) -> None:
    from hpcbench.pipeline.trace import write_gantt, write_trace

    for name, tl in shown.items():
        write_trace(tl, f"{name} measured", run_dir / "traces" / f"pipeline-{name}-measured.json")
        write_trace(simulated[name], f"{name} simulated", run_dir / "traces" / f"pipeline-{name}-simulated.json")
    write_gantt(shown, run_dir / "pipeline-gantt-measured.png")
    write_gantt(simulated, run_dir / "pipeline-gantt-simulated.png")


def _pct(x) -> str:
    return "" if x is None else f"{x:.1%}"


def table(rows: list[dict], fallback: bool):
    from rich.table import Table

    first = rows[0]
    mode = (f"synthetic stages F/B/W = {first['synthetic_ms']['F']:g}/{first['synthetic_ms']['B']:g}/"
            f"{first['synthetic_ms']['W']:g} ms" if first.get("synthetic") else
            f"{first['model']} width {first['width']}, {first['layers']} layers")
    title = (f"Pipeline schedules: {first['world_size']} ranks ({first['backend']}), {first['microbatches']} "
             f"microbatches of {first['microbatch_size']}, {mode}")
    if fallback and not first.get("synthetic"):
        title += "  [yellow](CPU fallback: not performance numbers)[/]"
    t = Table(title=title, title_justify="left")
    cols = ("schedule", "status", "step ms", "samples/s", "bubble", "predicted", "closed form / idle ms",
            "peak act (pred)", "blocked ms", "F&B overlap", "parity err", "torch runtime ms")
    for col in cols:
        t.add_column(col, justify="left" if col in ("schedule", "status") else "right")
    for r in rows:
        if r["status"] != STATUS_OK:
            t.add_row(r["schedule"], f"{r['status']}: {(r.get('reason') or '')[:90]}", *[""] * (len(cols) - 2))
            continue
        cf = r.get("closed_form_bubble_ms")
        t.add_row(
            r["schedule"], r["status"], f"{r['step_ms']:.2f}", f"{r['samples_per_s']:.4g}",
            _pct(r["bubble_ratio"]), _pct(r["predicted_bubble_ratio"]),
            ("" if cf is None else f"{cf:.2f}") + f" / {r['measured_idle_ms']:.2f}",
            f"{max(r['peak_activations_per_rank'])} ({max(r['predicted_peak_activations_per_rank'])})",
            f"{max(r['blocked_ms_per_rank']):.2f}", _pct(r.get("fb_overlap_efficiency")),
            f"{r['grad_max_rel_err']:.1e}",
            "" if r.get("torch_runtime_step_ms") is None else f"{r['torch_runtime_step_ms']:.2f}")
    return t
