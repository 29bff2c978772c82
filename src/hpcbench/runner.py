"""Runs the configured suite: config -> benchmark -> rows -> results store -> terminal table."""

from __future__ import annotations

import datetime as _dt
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
import torch
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from hpcbench import benchmarks
from hpcbench.errors import RunFailed, UserError
from hpcbench.progress import ProgressReporter
from hpcbench.resume import Previous, lock_run, point_key, previous_state
from hpcbench.results import RunWriter
from hpcbench.results.schema import SCHEMA_VERSION, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.runtime.device import DeviceInfo, device_kind, resolve_device
from hpcbench.runtime.distributed import BACKEND_CHOICES, World, adopt_slurm_environment, init_world, launched_ranks, shutdown_world
from hpcbench.runtime.launch import _raise_terminated, launch_local, local_nproc
from hpcbench.runtime.watchdog import BOARD_ENV, Watchdog, diagnose, inject_fault, snapshot, store_from_env
from hpcbench.runtime.environment import collect_environment
from hpcbench.runtime.ranks import global_rank, is_rank0
from hpcbench.timing import TimingPolicy


@dataclass
class RunContext:
    """What a benchmark may use from the harness."""

    device: DeviceInfo
    run_id: str
    timing: TimingPolicy
    progress: ProgressReporter = field(default_factory=lambda: ProgressReporter(enabled=False))
    world: World | None = None  # the ranks of a multi-rank benchmark
    watchdog: Watchdog | None = None
    run_dir: Path | None = None  # for artifacts beside the rows (traces, charts); written by rank 0 only
    done: set = field(default_factory=set)  # points an earlier attempt of this run stored (resume)
    benchmark: str = ""  # the family being run
    params: tuple[str, ...] = ()  # its PARAMS
    resumed_points: int = 0
    earlier: dict = field(default_factory=dict)  # benchmark -> ok rows an earlier attempt stored

    def earlier_rows(self) -> list[dict]:
        """The current family's rows stored by earlier attempts of this run (resume), so that
        what is derived from all points (a fit) covers the skipped ones too."""
        return list(self.earlier.get(self.benchmark, []))

    def already_measured(self, *points: dict) -> bool:
        """True when an earlier attempt of this run stored every one of these points (each a dict
        holding the family's PARAMS): the family then skips them. Always False with force=true."""
        if not self.done or not points:
            return False
        if all(point_key(self.benchmark, self.params, p) in self.done for p in points):
            self.resumed_points += len(points)
            return True
        return False

    def set_total(self, points: int) -> None:
        self.progress.add_total(points)

    def at(self, where: str) -> None:
        """Finer progress inside a point whose ranks do different work (a pipeline action)."""
        if self.watchdog is not None:
            self.watchdog.at(where)

    def heartbeat(self, label: str | None = None) -> None:
        """Progress mark for the watchdog: call at each point (with a label) and each timed sample."""
        if self.watchdog is not None:
            self.watchdog.tick(label)


def _one_line(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
    return f"{key}: {msg}" if key else msg


def benchmark_config(name: str, schema: type, section) -> object:
    """The `<name>:` config section validated against its dataclass schema."""
    try:
        if OmegaConf.is_config(section):
            section = OmegaConf.to_container(section)
        merged = OmegaConf.merge(OmegaConf.structured(schema), section or {})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise UserError(f"{name}.{_one_line(exc)}") from None


def timing_policy(cfg: DictConfig, device: DeviceInfo) -> TimingPolicy:
    section = cfg.timing.gpu if device.kind == "cuda" else cfg.timing.cpu
    try:
        return TimingPolicy(**OmegaConf.to_container(section))
    except (TypeError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _point_label(row: dict) -> str:
    keys = ("kernel", "M", "N", "K", "collective", "record", "size_bytes", "comm_bytes", "placement", "mode",
            "bucket_cap_mb", "schedule")
    label = " ".join(str(row[k]) for k in keys if row.get(k) is not None)
    return f"{label}: {row.get('status')}" + (f" ({row['reason']})" if row.get("reason") else "")


@dataclass(frozen=True)
class DistConfig:
    nproc: str = "auto"  # local ranks started when no launcher did: auto = one per GPU, 2 on CPU
    backend: str = "auto"  # nccl on CUDA, gloo on CPU
    timeout_s: float = 300.0  # a rank making no progress this long stops the run, naming the rank
    env: dict = field(default_factory=dict)  # set on every rank before CUDA/NCCL start (NCCL_*, CUDA_*)


def dist_config(cfg: DictConfig) -> DistConfig:
    dc = benchmark_config("dist", DistConfig, cfg.get("dist"))
    if dc.nproc != "auto" and (not str(dc.nproc).isdigit() or int(dc.nproc) < 1):
        raise UserError(f"dist.nproc={dc.nproc!r}: use auto or a positive integer")
    if dc.backend not in BACKEND_CHOICES:
        raise UserError(f"dist.backend={dc.backend!r} is not one of {', '.join(BACKEND_CHOICES)}")
    if not dc.timeout_s > 0:
        raise UserError("dist.timeout_s must be positive")
    return dc


def _selected(cfg: DictConfig):
    suite = list(cfg.suite)
    selected = [(name, benchmarks.load(name)) for name in suite]
    configs = {name: benchmark_config(name, module.Config, cfg.get(name)) for name, module in selected}
    for name, module in selected:
        if hasattr(module, "validate"):  # value checks, before any rank is started
            module.validate(configs[name])
    distributed = any(getattr(module, "DISTRIBUTED", False) for _, module in selected)
    return suite, selected, configs, distributed


def run(cfg: DictConfig, run_dir: Path) -> int:
    """Run every benchmark of `cfg.suite`; returns the exit status (1 if any point failed).

    A suite with a multi-rank benchmark, started without a launcher, starts its own local ranks,
    each of which comes back through `run_rank`."""
    _, _, _, distributed = _selected(cfg)  # bad config is a user error before any rank starts
    if distributed and not launched_ranks():
        dc = dist_config(cfg)
        kind = device_kind(cfg.device.type)
        if dc.backend == "nccl" and kind != "cuda":
            raise UserError("dist.backend=nccl needs a CUDA device")
        return launch_local(local_nproc(dc.nproc, kind), OmegaConf.to_yaml(cfg, resolve=True), run_dir, dc.timeout_s)
    if not distributed and launched_ranks() and global_rank() != 0:
        return 0  # srun started one task per GPU, but these benchmarks run in one process: rank 0's
    if threading.current_thread() is threading.main_thread():
        # scancel and SLURM's time limit send SIGTERM: unwind so the run is recorded as cut short
        signal.signal(signal.SIGTERM, _raise_terminated)
    return run_rank(cfg, run_dir)


def run_rank(cfg: DictConfig, run_dir: Path) -> int:
    """This process's share of the run: all of it, or one rank of a multi-rank run."""
    suite, selected, configs, distributed = _selected(cfg)
    world = None
    if distributed:
        dc = dist_config(cfg)
        adopt_slurm_environment()
        os.environ.update({str(k): str(v) for k, v in dc.env.items()})
        if os.environ.get("OMP_NUM_THREADS") is None:  # ranks sharing the cores should not oversubscribe them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    device = resolve_device(cfg.device.type, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if distributed:
        world = init_world(device, dc.backend, dc.timeout_s)
        run_dir = Path(world.broadcast_object(str(run_dir)))  # ranks > 0 may not know rank 0's directory
    rank0 = world.is_rank0 if world else is_rank0()
    # a Hydra sweep job writes to <sweep>/<job number>: its run id names both
    run_id = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.isdigit() else run_dir.name
    ctx = RunContext(device=device, run_id=run_id, timing=timing_policy(cfg, device), run_dir=run_dir,
                     progress=ProgressReporter(enabled=rank0), world=world)
    writer = RunWriter(run_dir, enabled=rank0)
    metadata = {**collect_environment(device, ctx.run_id), "suite": suite, "status": "running",
                # what identifies a point of each family: compare joins on it without importing the family
                "params": {name: list(getattr(module, "PARAMS", ())) for name, module in selected}}
    if world:
        metadata["distributed"] = {"backend": world.backend, "world_size": world.size, "hosts": world.hosts(),
                                   "timeout_s": dc.timeout_s}
        ctx.watchdog = Watchdog(store_from_env(run_dir.name), world.rank, world.size, dc.timeout_s,
                                on_hang=lambda msg: _on_hang(msg, writer, metadata, world.rank),
                                label_store=store_from_env(run_dir.name)).start()
    error, prev, lock = None, Previous(), None
    if rank0:
        try:
            lock = lock_run(run_dir)  # held until the run is written
            prev = previous_state(run_dir)
        except UserError as exc:
            error = str(exc)
    if world:  # every rank skips the same points (and stops together on an error)
        error, prev.done, prev.next_point, prev.rows = world.broadcast_object(
            (error, prev.done, prev.next_point, prev.rows))
    if error:
        raise UserError(error)
    point = prev.next_point
    if prev.attempts:
        metadata.update(attempts=prev.attempts, resumed=not cfg.get("force", False),
                        suite=list(dict.fromkeys([*prev.suite, *suite])), params={**prev.params, **metadata["params"]})
    ctx.done = set() if cfg.get("force", False) else prev.done
    ctx.earlier = {} if cfg.get("force", False) else prev.rows
    writer.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    writer.write_metadata(metadata)
    rows: dict[str, list[dict]] = {name: [] for name in suite}
    try:
        with ctx.progress:
            for name, module in selected:
                ctx.benchmark, ctx.params = name, tuple(getattr(module, "PARAMS", ()))
                for row in module.run(configs[name], ctx):
                    row = {"schema_version": SCHEMA_VERSION, "run_id": ctx.run_id, "benchmark": name, "point": point,
                           "device": device.name, "device_kind": device.kind, "fallback": device.fallback,
                           "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(), **row}
                    writer.append(row)
                    rows[name].append(row)
                    ctx.progress.advance(f"{name} {_point_label(row)}")
                    if world:
                        inject_fault(world.rank, point)
                    point += 1
        metadata["status"] = "complete"
        if ctx.resumed_points and rank0:
            print(f"resumed: {ctx.resumed_points} point(s) already in this run were not measured again "
                  "(force=true re-measures them)", file=sys.stderr)
    except BaseException as exc:
        metadata["status"] = {"KeyboardInterrupt": "interrupted", "Terminated": "terminated"}.get(
            type(exc).__name__, "error")
        metadata["cut_short"] = True  # every row completed before this is in rows.jsonl
        metadata["error"] = f"{type(exc).__name__}: {exc}"
        if world and isinstance(exc, RuntimeError) and ctx.watchdog and ctx.watchdog.store is not None:
            # a peer's failure surfaces here as a backend error: say which rank and collective
            metadata["error"] = _peer_failure(exc, ctx)
            raise RunFailed(metadata["error"]) from exc
        raise
    finally:
        all_rows = [r for rs in rows.values() for r in rs]
        metadata.update(
            finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(),
            # every row the run holds, earlier attempts' included
            points={s: prev.points.get(s, 0) + sum(r["status"] == s for r in all_rows)
                    for s in (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED)},
        )
        if "hpcbench.kernels.interpreter" in sys.modules:
            from hpcbench.kernels.interpreter import defects

            metadata["triton_interpreter_defects"] = defects()
        writer.write_metadata(metadata)
        writer.close()
        if metadata["status"] == "terminated" and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # recorded: a further stop request may end us
        _compact(writer)
        if lock is not None:
            lock.close()
        if ctx.watchdog:
            ctx.watchdog.stop()
    if rank0:
        print_tables(rows, device.fallback)
        Console(stderr=True).print(f"results: {run_dir}", highlight=False)
    if world:
        shutdown_world()
    return 1 if metadata["points"][STATUS_FAILED] else 0


def _compact(writer: RunWriter) -> None:
    """The columnar copy is a convenience: failing to write it must not fail a measured run."""
    try:
        writer.compact()
    except Exception as exc:  # noqa: BLE001 - disk full, pyarrow type edge: rows.jsonl has it all
        print(f"hpcbench: warning: rows.arrow not written ({type(exc).__name__}: {exc})", file=sys.stderr)


def _peer_failure(exc: BaseException, ctx: RunContext) -> str:
    board = snapshot(ctx.watchdog.store, ctx.world.size)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{diagnose(board, time.time())} ({first_line[:160]})"


def _on_hang(message: str, writer: RunWriter, metadata: dict, rank: int) -> None:
    """Called from the watchdog thread while the main thread is stuck: record, say, then exit."""
    if rank == 0:
        writer.write_metadata({**metadata, "status": "error", "error": message})
    if not os.environ.get(BOARD_ENV):  # under hpcbench's own launcher, it prints one summary instead
        print(f"hpcbench: error: rank {rank}: {message}", file=sys.stderr, flush=True)


def console() -> Console:
    """stdout console; when piped, wide enough that tables are not squeezed to 80 columns."""
    out = Console()
    return out if out.is_terminal else Console(width=200)


def print_tables(rows: dict[str, list[dict]], fallback: bool) -> None:
    out = console()
    for name, bench_rows in rows.items():
        module = benchmarks.load(name)
        if hasattr(module, "table") and bench_rows:
            out.print(module.table(bench_rows, fallback))
