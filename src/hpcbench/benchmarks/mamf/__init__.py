"""MAMF, Maximum Achievable Matmul FLOPS: the best TFLOP/s this device's matmul reaches over a search
of shapes, in the spirit of ml-engineering's mamf-finder (stas00/ml-engineering, compute/accelerator).

A datasheet peak is never reached; MAMF is the realistic ceiling a kernel can be held against.
Per dtype (bf16: torch.mm; fp8: torch._scaled_mm on E4M3 inputs with per-tensor scales of 1.0),
every shape of the search (M, N, K nested in that order, each a list or a range; see sweep.py) is
checked against a float64 reference and then timed with hpcbench's timer. Every point is kept, one
row each: TFLOP/s = 2MNK / median time, `tflops_max` from the fastest call, % of the dense peak.
After the sweep, one summary row per dtype (record "summary", not a point): the best shape and its
TFLOP/s (the MAMF), the best by the fastest call, and the arithmetic and geometric means of TFLOP/s
over every shape, covering earlier attempts' points when the run was resumed.

On a GPU the sweep starts after an accelerator warm-up (mamf.warmup_s, 30 s by default as in
mamf-finder): back-to-back matmuls of the largest shape still to measure, so that the first shapes
are not timed at the boost clocks of a cold GPU while the last ones run hot.
`best.mamf_best(run_dir)` reads a stored run's MAMF per dtype (for "% of MAMF" columns elsewhere).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import auto
from typing import Optional

from omegaconf import MISSING

from hpcbench.benchmarks.mamf import measure
from hpcbench.benchmarks.mamf.report import REPORT
from hpcbench.benchmarks.mamf.summary import merge_points, summary_rows
from hpcbench.benchmarks.mamf.sweep import Dims, resolve, search_order
from hpcbench.benchmarks.mamf.table import table
from hpcbench.api import checks
from hpcbench.api.errors import UserError
from hpcbench.api.family import Choice, Family
from hpcbench.api.tables import fmt


class Dtype(Choice):
    bf16 = auto()
    fp8 = auto()


# what identifies a point when two runs are compared (summary rows carry no M, N, K)
PARAMS = ("M", "N", "K", "dtype")
AUTO = {"cpu": "tiny", "cuda": "quick"}  # preset=auto on the CPU fallback / on a GPU
GPU_WARMUP_S = 30.0  # warmup_s=null on a GPU: mamf-finder's accelerator warm-up


@dataclass
class Config:
    """Types of the `mamf:` section; the defaults and their documentation: conf/benchmark/mamf.yaml."""

    preset: str = MISSING  # auto | a name in presets
    # per dimension a list or a [start, stop, step] range (see sweep.py); a non-empty one overrides the preset's
    m: list[int] = MISSING
    m_range: list[int] = MISSING
    n: list[int] = MISSING
    n_range: list[int] = MISSING
    k: list[int] = MISSING
    k_range: list[int] = MISSING
    presets: dict[str, Dims] = MISSING
    dtypes: list[Dtype] = MISSING
    seed: int = MISSING
    warmup_s: Optional[float] = MISSING  # null: GPU_WARMUP_S on a GPU, 0 on the CPU fallback
    tol_bf16: float = MISSING
    tol_fp8: float = MISSING


def _preset_name(cfg: Config, kind: str) -> str:
    name = AUTO[kind] if cfg.preset == "auto" else cfg.preset
    if name not in cfg.presets:
        raise UserError(f"mamf.preset={cfg.preset!r}: no such preset (available: auto, {', '.join(cfg.presets)})")
    return name


def shapes_for(cfg: Config, kind: str) -> list[tuple[int, int, int]]:
    """The search's shapes on a device of `kind` ("cpu" | "cuda"), in search order."""
    name = _preset_name(cfg, kind)
    shapes = search_order(*resolve(cfg, cfg.presets[name], "mamf", f"mamf.presets.{name}"))
    if not shapes:
        raise UserError(f"mamf: preset {name} with the sizes given leaves no shape to measure")
    return shapes


def validate(cfg: Config) -> None:
    if not cfg.dtypes:
        raise UserError("mamf.dtypes is empty: give at least one of bf16, fp8")
    if len(set(cfg.dtypes)) != len(cfg.dtypes):
        raise UserError(f"mamf.dtypes={[str(d) for d in cfg.dtypes]}: a dtype appears more than once")
    checks.positive("mamf", cfg, "tol_bf16", "tol_fp8")
    checks.at_least("mamf", cfg, seed=0)
    if cfg.warmup_s is not None and not cfg.warmup_s >= 0:
        raise UserError("mamf.warmup_s must be >= 0 (or null: 30 on a GPU, 0 on the CPU fallback)")
    for kind in ("cpu", "cuda") if cfg.preset == "auto" else ("cpu",):  # the device is not known yet
        shapes_for(cfg, kind)


def points(cfg: Config, kind: str) -> list[tuple[int, int, int, str]]:
    """(M, N, K, dtype) in measuring order: each dtype's search in turn, like one mamf-finder run each."""
    return [(M, N, K, str(dtype)) for dtype in cfg.dtypes for M, N, K in shapes_for(cfg, kind)]


def _warmup(todo: list[tuple[int, int, int, str]], cfg: Config, ctx) -> float:
    """The accelerator warm-up before the first point measured; the seconds spent."""
    seconds = cfg.warmup_s if cfg.warmup_s is not None else (0.0 if ctx.device.fallback else GPU_WARMUP_S)
    runnable = [p for p in todo if measure.skip_reason(p[3], ctx.device) is None]
    if seconds <= 0 or not runnable:
        return 0.0
    M, N, K, dtype = max(runnable, key=lambda p: p[0] * p[1] * p[2])  # the heaviest load heats the GPU most
    free = ctx.device.free_memory()
    if free is not None and measure.bytes_needed(M, N, K, dtype) > 0.9 * free:
        M, N, K, dtype = runnable[0]
    print(f"mamf: accelerator warm-up, {seconds:g} s of {dtype} {M}x{N}x{K}", file=sys.stderr)
    return measure.accelerator_warmup(seconds, M, N, K, dtype, cfg, ctx)


def run(cfg: Config, ctx):
    kind = "cpu" if ctx.device.fallback else "cuda"
    preset = _preset_name(cfg, kind)
    planned_points = points(cfg, kind)
    ctx.set_total(len(planned_points))
    todo = [p for p in planned_points if not ctx.already_measured(measure.base_row(*p))]
    warmed = _warmup(todo, cfg, ctx) if todo else 0.0
    rows = []
    for M, N, K, dtype in todo:
        row = {**measure.measure(M, N, K, dtype, cfg, ctx), "preset": preset}
        rows.append(row)
        yield row
    # the MAMF over every point of the run: a resumed run's earlier attempts count too
    earlier = [r for r in ctx.earlier_rows() if r.get("dtype") in {str(d) for d in cfg.dtypes}]
    for summary in summary_rows(merge_points(earlier, rows), [str(d) for d in cfg.dtypes]):
        yield {**summary, "preset": preset, "warmup_s": warmed}


def planned(cfg: Config, kind: str) -> list[dict]:
    return [measure.base_row(*p) for p in points(cfg, kind)]


FAMILY = Family(
    name="mamf",
    summary="Maximum achievable matmul FLOPS (mamf-finder): best BF16/FP8 TFLOP/s over a shape search",
    config=Config, run=run, params=PARAMS, validate=validate, table=table, report=REPORT,
    smoke=("mamf.preset=tiny", "mamf.warmup_s=0"),
    planned=planned,
    case_id=lambda r: f"{r['dtype']}-{fmt(r['M'])}x{fmt(r['N'])}x{fmt(r['K'])}",
    points_are=("record", "point"),  # not the per-dtype summaries
)
