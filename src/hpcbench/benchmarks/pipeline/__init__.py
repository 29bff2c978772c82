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

`hpcbench simulate` (hpcbench.pipeline.predict) predicts the same schedules with no processes.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from omegaconf import MISSING

from hpcbench.benchmarks.pipeline.common import Setup
from hpcbench.benchmarks.pipeline.measure import measure_schedule
from hpcbench.benchmarks.pipeline.report import REPORT
from hpcbench.benchmarks.pipeline.summary import write_artifacts
from hpcbench.api import checks
from hpcbench.api.errors import UserError
from hpcbench.api.family import Family, choices
from hpcbench.pipeline.ir import Schedule
from hpcbench.pipeline.model import DTYPES, MODEL_KINDS, divisors_hint
from hpcbench.pipeline.schedules import SCHEDULES, build, model_chunks
from hpcbench.pipeline.simulator import Costs, Deadlock, simulate
from hpcbench.results.schema import STATUS_OK, STATUS_SKIPPED
from hpcbench.measure.stragglers import with_verdict
from hpcbench.api.tables import fmt, fmt_share, new_table, status_cell
from hpcbench.pipeline.split_backward import W_METHOD

ScheduleName = choices("Schedule", SCHEDULES)
Model = choices("Model", MODEL_KINDS)
Dtype = choices("Dtype", ("auto", *DTYPES))
BatchP2P = choices("BatchP2P", ("auto", "true", "false"))

# what identifies a point when two runs are compared (the world size is part of the environment)
PARAMS = ("schedule", "model", "width", "layers", "seq", "microbatch_size", "microbatches", "dtype", "synthetic",
          "overlap", "batch_p2p")


@dataclass
class SyntheticConfig:
    """Types of `pipeline.synthetic`; defaults and documentation: conf/benchmark/pipeline.yaml."""

    enabled: bool = MISSING
    F_ms: float = MISSING  # forward of one microbatch through one stage
    B_ms: float = MISSING  # full backward
    W_ms: float = MISSING  # weight part of a split backward (the input part is B - W)


@dataclass
class Config:
    """Types of the `pipeline:` section; the defaults and their documentation: conf/benchmark/pipeline.yaml."""

    schedules: list[ScheduleName] = MISSING
    microbatches: int = MISSING  # per step, the whole batch; 0 = 4 x ranks
    model: Model = MISSING
    width: int = MISSING  # 0 = auto
    layers: int = MISSING  # 0 = 4 x ranks
    seq: int = MISSING
    microbatch_size: int = MISSING  # 0 = auto
    dtype: Dtype = MISSING  # auto: by device
    steps: int = MISSING
    warmup_steps: int = MISSING
    overlap: bool = MISSING  # F&B pairs concurrently
    batch_p2p: BatchP2P = MISSING  # point-to-point in batch_isend_irecv groups; auto: on NCCL
    synthetic: SyntheticConfig = MISSING
    rtol: float = MISSING  # loss/gradient parity with the single-process reference; 0 = auto: by dtype
    traces: bool = MISSING
    torch_runtime: bool = MISSING


def validate(cfg: Config) -> None:
    if not cfg.schedules:
        raise UserError("pipeline.schedules is empty (available: " + ", ".join(SCHEDULES) + ")")
    auto = {k: "0 = auto" for k in ("microbatches", "width", "layers", "microbatch_size", "rtol")}
    checks.at_least("pipeline", cfg, auto, microbatches=0, width=0, layers=0, microbatch_size=0, rtol=0, seq=1,
                    steps=1, warmup_steps=0)
    s = cfg.synthetic
    if s.enabled and not (s.F_ms > 0 and s.B_ms > 0 and 0 < s.W_ms < s.B_ms):
        raise UserError("pipeline.synthetic: F_ms and B_ms must be positive and 0 < W_ms < B_ms")


def _plan(name: str, ranks: int, microbatches: int, layers: int) -> Schedule:
    """The schedule for these ranks and batch, or ValueError/Deadlock: why it cannot run."""
    schedule = build(name, ranks, microbatches)
    chunks_n = model_chunks(schedule)
    if layers % chunks_n:
        raise ValueError(f"{name} cuts the model into {chunks_n} stages: {divisors_hint(layers, chunks_n)}")
    simulate(schedule, Costs())  # a schedule that cannot finish is refused before it hangs ranks
    return schedule


def check_world(cfg: Config, kind: str, world: int) -> None:
    """A run none of whose schedules can take its shape is refused before any rank starts; where
    some can, the others are skipped rows that say why (a comparison across schedules)."""
    microbatches, layers = cfg.microbatches or 4 * world, cfg.layers or 4 * world
    why = {}
    for name in map(str, cfg.schedules):
        try:
            _plan(name, world, microbatches, layers)
        except (ValueError, Deadlock) as exc:
            why[name] = str(exc)
        else:
            return
    raise UserError(f"pipeline.schedules={list(why)}: none runs {microbatches} microbatches and {layers} layers on "
                    f"{world} ranks: " + "; ".join(f"{n}: {r}" for n, r in why.items()))


def run(cfg: Config, ctx):
    ctx.set_total(len(cfg.schedules))
    s = Setup.of(cfg, ctx)
    common = s.common_columns()
    shown, simulated = {}, {}
    for name in map(str, cfg.schedules):
        ctx.heartbeat(f"pipeline {name}")
        row = {**common, "schedule": name}
        if ctx.already_measured(row):
            continue
        try:
            schedule = _plan(name, s.world.size, s.total_mb, s.spec.layers)
        except (ValueError, Deadlock) as exc:
            yield {**row, "status": STATUS_SKIPPED, "reason": str(exc)}
            continue
        split = any(a.kind == "W" for actions in schedule.actions.values() for a in actions)
        row.update(stages=schedule.num_stages, model_chunks=model_chunks(schedule),
                   w_method=W_METHOD if split else None)  # how W ran, for schedules that split the backward
        out, timelines = measure_schedule(s, name, schedule, row)
        if timelines is not None:
            shown[name], simulated[name] = timelines
        yield out
    if cfg.traces and s.world.is_rank0 and shown and ctx.run_dir is not None:
        write_artifacts(ctx.run_dir, shown, simulated)


COLUMNS = ["schedule", "status", "step ms", "samples/s", "bubble", "predicted", "closed form / idle ms",
           "peak act (pred)", "blocked ms", "F&B overlap", "parity err", "torch runtime ms"]


# Below ~50 us an action is as short as Python's dispatch of its kernels (VISION section 4.8): the
# measured gaps are then the host's, and so are the bubble and the F&B overlap.
HOST_BOUND_MS = 0.05


def _title(rows: list[dict]) -> str:
    first = rows[0]
    ms = first.get("synthetic_ms") or {}
    dtype = f", {first['dtype']}" if first.get("dtype") else ""
    mode = (f"synthetic stages F/B/W = {ms['F']:g}/{ms['B']:g}/{ms['W']:g} ms" if first.get("synthetic") else
            f"{first['model']} width {fmt(first['width'])}, {fmt(first['layers'])} layers{dtype}")
    p2p = ", batched p2p" if first.get("batch_p2p") in (True,) else ""  # a numpy bool when read back
    return (f"Pipeline schedules: {fmt(first['world_size'])} ranks ({first['backend']}{p2p}), "
            f"{fmt(first['microbatches'])} microbatches of {fmt(first['microbatch_size'])}, {mode}{_compute_note(rows)}")


def _compute_note(rows: list[dict]) -> str:
    """On CUDA: how long the measured actions last, and a warning when dispatch, not compute,
    is what the schedule measured."""
    per_action = [ms for r in rows if r.get("status") == STATUS_OK and r.get("timing_method") == "cuda_event"
                  and not r.get("synthetic") and isinstance(r.get("measured_costs_ms"), dict)
                  for kinds in r["measured_costs_ms"].values() if isinstance(kinds, dict) for ms in kinds.values()]
    if not per_action:
        return ""
    note = f", per-action compute ~ {statistics.median(per_action):.3g} ms"
    if min(per_action) < HOST_BOUND_MS:
        note += (f"\nwarning: host dispatch dominates (shortest action {min(per_action) * 1e3:.0f} us < "
                 f"{HOST_BOUND_MS * 1e3:.0f} us): bubble and overlap numbers are not the GPU's; raise width or "
                 f"microbatch_size")
    return note


def _cells(r: dict) -> list[str]:
    if r["status"] != STATUS_OK:
        return [r["schedule"], status_cell(r, 90), *[""] * (len(COLUMNS) - 2)]
    cf, idle = fmt(r.get("closed_form_bubble_ms"), ".2f"), fmt(r.get("measured_idle_ms"), ".2f")
    return [r["schedule"], status_cell(r), fmt(r.get("step_ms"), ".2f"), fmt(r.get("samples_per_s"), ".4g"),
            fmt(r.get("bubble_ratio"), ".1%"), fmt(r.get("predicted_bubble_ratio"), ".1%"), f"{cf} / {idle}",
            f"{fmt(max(r['peak_activations_per_rank']))} ({fmt(max(r['predicted_peak_activations_per_rank']))})",
            fmt(max(r["blocked_ms_per_rank"]), ".2f"), fmt_share(r.get("fb_overlap_efficiency"), ".1%"),
            fmt(r.get("grad_max_rel_err"), ".1e"), fmt(r.get("torch_runtime_step_ms"), ".2f")]


def table(rows: list[dict], fallback: bool):
    first = rows[0]
    t = new_table(_title(rows), fallback and not first.get("synthetic"), "the ranks share the CPU's cores",
                  COLUMNS, left=("schedule", "status"))
    for r in rows:
        t.add_row(*_cells(r))
    return with_verdict(t, rows)


def _simulate_command(argv: list[str]) -> int:
    """--schedule S --ranks P --microbatches M: predict a pipeline schedule's timeline and bubble"""
    from hpcbench.pipeline import predict

    return predict.main(argv)


FAMILY = Family(
    name="pipeline",
    summary="pipeline-parallel schedules executed on the ranks: step time, bubble vs simulator and closed form",
    config=Config, run=run, params=PARAMS, distributed=True, validate=validate, check_world=check_world,
    table=table, report=REPORT,
    smoke=("pipeline.width=16", "pipeline.steps=2", "pipeline.warmup_steps=0", "pipeline.traces=false"),
    planned=lambda cfg, kind: [{"schedule": str(s)} for s in cfg.schedules],
    case_id=lambda r: str(r["schedule"]),
    commands={"simulate": _simulate_command},
)
