"""Runs a planned suite: plan (hpcbench.core.plan) -> families -> rows -> results store -> terminal tables.

A run goes through four phases, each its own function: join the world (ranks, device), open the
run (lock, resume state, metadata), measure (each family's rows written as they come, each with the
energy, power and clocks of its GPUs while it was measured: `hpcbench.measure.energy`), and record the end
(status, counts read back from the stored rows, the columnar copy). A run with an injected fault
(HPCBENCH_INJECT_FAULT, a testing aid) says so in its metadata and in every row (`injected_fault`).
A suite with a multi-rank family, started without a launcher, starts local ranks that each come
back through `run_rank`; the launcher says how they ended and this module records it.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from hpcbench.measure import energy, timing

from hpcbench.api import registry
from hpcbench.core.plan import RunPlan
from hpcbench.core.context import RunContext
from hpcbench.api.errors import ReportedUserError, RunFailed, UserError
from hpcbench.api.family import point_label
from hpcbench.core.progress import ProgressReporter
from hpcbench.measure.rank_timing import check_fault_env, injected_fault
from hpcbench.core.resume import Previous, lock_run, previous_state
from hpcbench.results import RunWriter
from hpcbench.results.schema import SCHEMA_VERSION, STATUS_FAILED
from hpcbench.results.writer import record_failure, status_counts
from hpcbench.runtime.device import resolve_device
from hpcbench.runtime.distributed import World, adopt_slurm_environment, init_world, shutdown_world
from hpcbench.runtime.environment import collect_environment
from hpcbench.runtime.launch import launch_local
from hpcbench.runtime.ranks import is_rank0, launched_ranks
from hpcbench.runtime.signals import Terminated, stop_ends_process, stop_raises, stops_deferred
from hpcbench.runtime.watchdog import BOARD_ENV, Watchdog, diagnose, inject_fault, snapshot, store_from_env
from hpcbench.api.tables import console

ENDINGS = {KeyboardInterrupt: "interrupted", Terminated: "terminated"}


def run(plan: RunPlan, run_dir: Path) -> int:
    """Run every family of the plan's suite; returns the exit status (1 if any point failed)."""
    if plan.suite.distributed and not launched_ranks():
        return _launch_ranks(plan, run_dir)
    if not plan.suite.distributed and launched_ranks() and not is_rank0():
        return 0  # srun started one task per GPU, but these families run in one process: rank 0's
    stop_raises()  # scancel and SLURM's time limit: unwind so the run is recorded as cut short
    return run_rank(plan, run_dir)


def _launch_ranks(plan: RunPlan, run_dir: Path) -> int:
    outcome = launch_local(plan.local_world(), run_rank, (plan, str(run_dir)), run_dir.name, plan.dist.timeout_s)
    if outcome.failure:
        record_failure(run_dir, outcome.failure)
    if outcome.user_error:
        raise ReportedUserError(outcome.failure)  # rank 0 already printed the one line
    if outcome.failure:
        raise RunFailed(outcome.failure)
    return outcome.status


@dataclass
class Run:
    """One process's share of a run, as the phases build it."""

    plan: RunPlan
    ctx: RunContext
    writer: RunWriter
    rank0: bool
    metadata: dict = field(default_factory=dict)
    prev: Previous = field(default_factory=Previous)
    rows: dict = field(default_factory=dict)  # family -> rows of this attempt, for the tables
    lock: object = None
    meter: object = None  # energy.EnergyMeter, or energy.Absent saying why there is none: the whole point
    timed: object = None  # energy.TimedEnergy: the point's timed repetitions only
    opened: bool = False  # the run's metadata says "running": its end must be recorded

    @property
    def world(self) -> World | None:
        return self.ctx.world

    @property
    def suite(self):
        return self.plan.suite


def run_rank(plan: RunPlan, run_dir: Path | str) -> int:
    """This process's share of the run: all of it, or one rank of a multi-rank run."""
    r = _join(plan, Path(run_dir))
    try:
        with stops_deferred():  # a stop while the run is being opened lands once it is open
            _open(r)
        with r.ctx.progress:
            _measure(r)
        r.metadata["status"] = "complete"
    except BaseException as exc:
        if r.opened:
            _record_error(r, exc)
        raise
    finally:
        if r.opened:
            _record_end(r)
        else:  # not this attempt's run to record (locked by another process, or never opened)
            _close(r)
    if r.rank0:
        print_tables(r.rows, r.ctx.device.fallback)
        Console(stderr=True).print(f"results: {r.ctx.run_dir}", highlight=False)
        if r.ctx.resumed_points or r.ctx.kept_points:
            kept = (f"; {r.ctx.kept_points} measured again with the rest of their group were not stored again"
                    if r.ctx.kept_points else "")
            print(f"resumed: {r.ctx.resumed_points} point(s) already in this run were not measured again{kept} "
                  "(force=true re-measures them)", file=sys.stderr)
    if r.world:
        shutdown_world()
    return 1 if r.metadata["points"][STATUS_FAILED] else 0


def _join(plan: RunPlan, run_dir: Path) -> Run:
    """Phase 1: the device, and the world of ranks when a family needs one. Rank 0 is decided here."""
    suite, dc = plan.suite, plan.dist
    world = None
    if suite.distributed:
        adopt_slurm_environment()
        os.environ.update({str(k): str(v) for k, v in dc.env.items()})
        if os.environ.get("OMP_NUM_THREADS") is None:  # ranks sharing the cores should not oversubscribe them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    device = resolve_device(plan.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if suite.distributed:
        world = init_world(device, dc.backend, dc.timeout_s)
        run_dir = Path(world.broadcast_object(str(run_dir)))  # ranks > 0 may not know rank 0's directory
        check_fault_env(world.size)  # a slow fault on a rank this world does not have would go unseen
    rank0 = world.is_rank0 if world else is_rank0()
    # a Hydra sweep job writes to <sweep>/<job number>: its run id names both
    run_id = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.isdigit() else run_dir.name
    ctx = RunContext(device=device, run_id=run_id, timing=plan.timing_for(device.kind), run_dir=run_dir,
                     progress=ProgressReporter(enabled=rank0), world=world, single_run=plan.single_run)
    return Run(plan, ctx, RunWriter(run_dir, enabled=rank0), rank0, rows={n: [] for n in suite.names})


def _open(r: Run) -> None:
    """Phase 2: lock the run, read what earlier attempts stored (resume), write config and metadata."""
    ctx, world = r.ctx, r.world
    r.metadata = {**collect_environment(ctx.device, ctx.run_id), "suite": r.suite.names, "status": "running",
                  # what identifies a point of each family: compare joins on it without importing the family
                  "params": {f.name: list(f.params) for f in r.suite.families}}
    if injected_fault():
        r.metadata["injected_fault"] = injected_fault()
    if world:
        dc = r.plan.dist
        r.metadata["distributed"] = {"backend": world.backend, "world_size": world.size, "hosts": world.hosts(),
                                     "timeout_s": dc.timeout_s}
        ctx.watchdog = Watchdog(store_from_env(ctx.run_dir.name), world.rank, world.size, dc.timeout_s,
                                on_hang=lambda msg: _on_hang(msg, r), label_store=store_from_env(ctx.run_dir.name)).start()
    error = None
    if r.rank0:
        try:
            r.lock = lock_run(ctx.run_dir)  # held until the run is written
            r.prev = previous_state(ctx.run_dir)
        except UserError as exc:
            error = str(exc)
    if world:  # every rank skips the same points (and stops together on an error)
        error, r.prev.done, r.prev.next_point, r.prev.rows = world.broadcast_object(
            (error, r.prev.done, r.prev.next_point, r.prev.rows))
    if error:
        raise UserError(error)
    force = r.plan.force
    if r.prev.attempts:
        r.metadata.update(attempts=r.prev.attempts, resumed=not force,
                          suite=list(dict.fromkeys([*r.prev.suite, *r.suite.names])),
                          params={**r.prev.params, **r.metadata["params"]})
    ctx.done = set() if force else r.prev.done
    ctx.earlier = {} if force else r.prev.rows
    r.writer.write_config(r.plan.config_yaml, r.plan.hydra_record)
    r.writer.write_metadata(r.metadata)
    r.opened = True


def _measure(r: Run) -> None:
    """Phase 3: each family's rows, written as they come, each with its energy columns."""
    ctx, point = r.ctx, r.prev.next_point
    fault = injected_fault()
    r.meter = energy.open_meter(ctx.device.kind, ctx.device.index or 0)
    r.timed = energy.TimedEnergy(energy.open_meter(ctx.device.kind, ctx.device.index or 0))
    for fam in r.suite.families:
        ctx.benchmark, ctx.params = fam.name, fam.params
        for row, timed, whole in _metered(fam.run(r.suite.configs[fam.name], ctx), r):
            if fam.is_point(row) and ctx.stored(row):  # a point is stored once: the earlier row stays
                continue
            row = {"schema_version": SCHEMA_VERSION, "run_id": ctx.run_id, "benchmark": fam.name, "point": point,
                   "device": ctx.device.name, "device_kind": ctx.device.kind, "fallback": ctx.device.fallback,
                   "finished_at": _now(), **row, **energy.row_energy(timed, whole, row),
                   **({"injected_fault": fault} if fault else {})}
            with stops_deferred():  # the row and the in-memory copy the tables print, together
                r.writer.append(row)
                r.rows[fam.name].append(row)
            if fam.is_point(row):  # fits and projections are not counted as progress
                label = point_label(row, fam.params)
                ctx.progress.advance(f"{fam.name} {label}: {row.get('status')}"
                                     + (f" ({row['reason']})" if row.get("reason") else ""))
            if r.world:  # kill/hang faults (runtime.watchdog); slow ones act in the timed loops (rank_timing)
                inject_fault(r.world.rank, point)
            point += 1


def _metered(rows, r: Run):
    """(row, timed reading, whole-point reading) for each row of a family: one meter runs while the
    family computes the row, the other only inside its timed loops (None where it had none). On a
    multi-rank CUDA run every rank's GPU is read (all ranks produce the same rows)."""
    rows = iter(rows)
    while True:
        r.timed.begin_point()
        r.meter.start()
        try:
            with timing.observing_timed_spans(r.timed.span):
                row = next(rows)
        except StopIteration:
            r.meter.stop()
            return
        whole, timed = r.meter.stop(), r.timed.reading()
        if r.world and r.ctx.device.kind == "cuda":
            whole, timed = _all_ranks(r.world, whole, timed)
        yield row, timed, whole


def _all_ranks(world: World, whole, timed):
    """Both readings summed over every rank's GPU; timed is None unless every rank had one."""
    blank = energy.Reading(None, 0.0, None, 0, energy.NO_TIMED_SPAN)
    table = world.gather_rows([*energy.to_floats(whole), *energy.to_floats(timed or blank),
                               float(timed is not None)]).numpy()
    other = "another rank's GPU had no reading"
    whole = energy.combine([energy.from_floats(v[:4], whole.reason or other) for v in table])
    if not table[:, 8].all():
        return whole, None
    return whole, energy.combine([energy.from_floats(v[4:8], (timed.reason if timed else None) or other)
                                  for v in table])


def _record_error(r: Run, exc: BaseException) -> None:
    r.metadata["status"] = ENDINGS.get(type(exc), "error")
    r.metadata["cut_short"] = True  # every row completed before this is in rows.jsonl
    r.metadata["error"] = f"{type(exc).__name__}: {exc}"
    ctx = r.ctx
    if r.world and isinstance(exc, RuntimeError) and ctx.watchdog and ctx.watchdog.store is not None:
        # a peer's failure surfaces here as a backend error: say which rank and collective
        board = snapshot(ctx.watchdog.store, r.world.size)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        r.metadata["error"] = f"{diagnose(board, time.time())} ({first_line[:160]})"
        raise RunFailed(r.metadata["error"]) from exc


def _record_end(r: Run) -> None:
    """Phase 4: the final metadata, its counts read back from the stored rows (every attempt's), so
    they agree with rows.jsonl whenever a stop request lands; then the columnar copy."""
    with stops_deferred():
        r.writer.close()
        stored, damaged = r.writer.stored()
        r.metadata.update(finished_at=_now(),
                          points=status_counts(stored) if r.rank0 else status_counts(
                              [x for rows in r.rows.values() for x in rows]))
        if "hpcbench.kernels.interpreter" in sys.modules:
            from hpcbench.kernels.interpreter import defects

            r.metadata["triton_interpreter_defects"] = defects()
        r.writer.write_metadata(r.metadata)
        if r.metadata["status"] == "terminated":
            stop_ends_process()  # recorded: a further stop request may end us
        if r.rank0 and not damaged:
            _compact(r.writer, stored)
        _close(r)


def _close(r: Run) -> None:
    if r.meter is not None:
        r.meter.close()
    if r.timed is not None:
        r.timed.close()
    if r.lock is not None:
        r.lock.close()
        r.lock = None
    if r.ctx.watchdog:
        r.ctx.watchdog.stop()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _compact(writer: RunWriter, rows: list[dict]) -> None:
    """The columnar copy is a convenience: failing to write it must not fail a measured run."""
    try:
        writer.compact(rows)
    except Exception as exc:  # noqa: BLE001 - disk full, pyarrow type edge: rows.jsonl has it all
        print(f"hpcbench: warning: rows.arrow not written ({type(exc).__name__}: {exc})", file=sys.stderr)


def _on_hang(message: str, r: Run) -> None:
    """Called from the watchdog thread while the main thread is stuck: record, say, then exit."""
    if r.rank0:  # the counts read back from the stored rows, as _record_end would
        r.writer.write_metadata({**r.metadata, "status": "error", "error": message,
                                 "points": status_counts(r.writer.stored()[0])})
    if not os.environ.get(BOARD_ENV):  # under hpcbench's own launcher, it prints one summary instead
        print(f"hpcbench: error: rank {r.world.rank}: {message}", file=sys.stderr, flush=True)


def print_tables(rows: dict[str, list[dict]], fallback: bool) -> None:
    out = console()
    for name, fam_rows in rows.items():
        fam = registry.families().get(name)
        if fam is not None and fam.table is not None and fam_rows:
            out.print(fam.table(fam_rows, fallback))
