"""Runs the configured suite: config -> benchmark -> rows -> results store -> terminal table."""

from __future__ import annotations

import datetime as _dt
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console

from hpcbench import benchmarks
from hpcbench.errors import UserError
from hpcbench.progress import ProgressReporter
from hpcbench.results import RunWriter
from hpcbench.results.schema import SCHEMA_VERSION, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.runtime.device import DeviceInfo, resolve_device
from hpcbench.runtime.environment import collect_environment
from hpcbench.runtime.ranks import is_rank0
from hpcbench.timing import TimingPolicy


@dataclass
class RunContext:
    """What a benchmark may use from the harness."""

    device: DeviceInfo
    run_id: str
    timing: TimingPolicy
    progress: ProgressReporter = field(default_factory=lambda: ProgressReporter(enabled=False))

    def set_total(self, points: int) -> None:
        self.progress.add_total(points)


def _one_line(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
    return f"{key}: {msg}" if key else msg


def benchmark_config(name: str, module, section) -> object:
    """The `<name>:` config section validated against the benchmark's Config dataclass."""
    try:
        if OmegaConf.is_config(section):
            section = OmegaConf.to_container(section)
        merged = OmegaConf.merge(OmegaConf.structured(module.Config), section or {})
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
    label = " ".join(str(row[k]) for k in ("kernel", "M", "N", "K") if k in row)
    return f"{label}: {row.get('status')}" + (f" ({row['reason']})" if row.get("reason") else "")


def run(cfg: DictConfig, run_dir: Path) -> int:
    """Run every benchmark of `cfg.suite`; returns the exit status (1 if any point failed)."""
    suite = list(cfg.suite)
    selected = [(name, benchmarks.load(name)) for name in suite]
    configs = {name: benchmark_config(name, module, cfg.get(name)) for name, module in selected}
    device = resolve_device(cfg.device.type)
    ctx = RunContext(device=device, run_id=run_dir.name, timing=timing_policy(cfg, device),
                     progress=ProgressReporter(enabled=is_rank0()))
    writer = RunWriter(run_dir, enabled=is_rank0())
    metadata = {**collect_environment(device, ctx.run_id), "suite": suite, "status": "running"}
    writer.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    writer.write_metadata(metadata)
    rows: dict[str, list[dict]] = {name: [] for name in suite}
    point = 0
    try:
        with ctx.progress:
            for name, module in selected:
                for row in module.run(configs[name], ctx):
                    row = {"schema_version": SCHEMA_VERSION, "run_id": ctx.run_id, "benchmark": name, "point": point,
                           "device": device.name, "device_kind": device.kind, "fallback": device.fallback,
                           "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(), **row}
                    writer.append(row)
                    rows[name].append(row)
                    point += 1
                    ctx.progress.advance(f"{name} {_point_label(row)}")
        metadata["status"] = "complete"
    except BaseException as exc:
        metadata["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        metadata["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        all_rows = [r for rs in rows.values() for r in rs]
        metadata.update(
            finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(),
            points={s: sum(r["status"] == s for r in all_rows) for s in (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED)},
        )
        if "hpcbench.kernels.interpreter" in sys.modules:
            from hpcbench.kernels.interpreter import defects

            metadata["triton_interpreter_defects"] = defects()
        writer.write_metadata(metadata)
        writer.close()
    if is_rank0():
        print_tables(rows, device.fallback)
        Console(stderr=True).print(f"results: {run_dir}", highlight=False)
    return 1 if metadata["points"][STATUS_FAILED] else 0


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
