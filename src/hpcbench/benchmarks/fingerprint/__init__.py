"""Node fingerprint: one quick pass over every family, sized for the device, and one summary table.

`hpcbench benchmark=fingerprint` runs the suite of conf/benchmark/fingerprint.yaml (gemm,
collectives, overlap, pipeline, moe_alltoall, then this family, each at a size for the detected
device) and ends with one line per metric:

  matmul_bf16_tflops / matmul_fp8_tflops   the gemm family's fastest ok kernel at
                                           `fingerprint.gemm_shape` (TFLOP/s, % of the dense peak)
  hbm_copy_GBps                            measured here: a device copy, (read + write) / time,
                                           checked bit for bit; the slowest rank's device
  all_reduce_busbw_GBps                    measured here: one all_reduce of
                                           `fingerprint.all_reduce_bytes` (nccl-tests' busbw)
  overlap_hidden_fraction                  the overlap family's hidden fraction, largest message
  pipeline_bubble_1f1b / _dualpipe         the pipeline family's measured bubble ratio
  moe_dispatch_GBps / moe_combine_GBps     the moe_alltoall family's logical bandwidth

Each line stands beside the published anchor that matches its metric, hardware and configuration
(`hpcbench.models.anchors`), as % of anchor with a verdict: ok, below anchor by more than
`fingerprint.tolerance_pct`, or "no anchor" when none matches (never a guess; always on the CPU
fallback). A line whose source did not run or failed its check says so instead of a value.

The other families' rows are read back from this run's rows.jsonl (only rank 0 writes it), so
this family runs last. `compare` joins two fingerprints on `metric`.

The family is not `distributed`: it starts no ranks of its own, and uses the suite's when a
multi-rank family runs beside it (as in benchmark=fingerprint): the all_reduce on all of them, the
copy on each one's device. Alone (suite=[fingerprint]) it runs in one process and its all_reduce
line is a recorded skip. (Declared distributed, it would be grouped with the other multi-rank
families in one pytest-benchmark smoke run, and its YAML's sizes would then resize theirs.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from omegaconf import MISSING

from hpcbench.benchmarks.fingerprint import lines as L
from hpcbench.benchmarks.fingerprint.probes import hbm_copy, large_all_reduce
from hpcbench.benchmarks.fingerprint.report import REPORT
from hpcbench.benchmarks.fingerprint.table import table
from hpcbench.benchmarks.fingerprint.verdict import FAILED, Judged, judge
from hpcbench.api import checks
from hpcbench.api.errors import UserError
from hpcbench.api.family import Family
from hpcbench.results.schema import ROWS_FILE
from hpcbench.api.sizes import format_bytes, parse_bytes

# what identifies a line when two fingerprints are compared
PARAMS = ("metric",)


@dataclass
class BytesByDevice:
    cpu: str = MISSING
    cuda: str = MISSING


@dataclass
class ShapeByDevice:
    cpu: list[int] = MISSING
    cuda: list[int] = MISSING


@dataclass
class Config:
    """Types of the `fingerprint:` section; defaults and documentation: conf/benchmark/fingerprint.yaml."""

    copy_bytes: BytesByDevice = MISSING
    all_reduce_bytes: BytesByDevice = MISSING
    iters: int = MISSING
    warmup_iters: int = MISSING
    gemm_shape: ShapeByDevice = MISSING
    tolerance_pct: float = MISSING


def validate(cfg: Config) -> None:
    for key in ("copy_bytes", "all_reduce_bytes"):
        for kind in ("cpu", "cuda"):
            n = parse_bytes(getattr(getattr(cfg, key), kind), f"fingerprint.{key}.{kind}")
            if n % 4:
                raise UserError(f"fingerprint.{key}.{kind}={n} B is not a whole number of float32 elements")
    for kind in ("cpu", "cuda"):
        shape = getattr(cfg.gemm_shape, kind)
        if len(shape) != 3 or min(shape) < 1:
            raise UserError(f"fingerprint.gemm_shape.{kind} must be [M, N, K] with positive sizes")
    checks.at_least("fingerprint", cfg, iters=1, warmup_iters=0)
    if not 0 <= cfg.tolerance_pct < 100:
        raise UserError("fingerprint.tolerance_pct must be in [0, 100)")


def _stored_rows(ctx) -> dict[str, list[dict]]:
    from hpcbench.api import registry
    from hpcbench.results.reader import read_jsonl

    if ctx.run_dir is None:
        return []
    rows = read_jsonl(ctx.run_dir / ROWS_FILE, [])
    params = {name: fam.params for name, fam in registry.families().items() if name != FAMILY.name}
    return L.latest(rows, params)


def summary_lines(by_family: dict[str, list[dict]], probes: dict, cfg: Config, kind: str, ranks: int) -> list[L.Line]:
    """Every metric's line, from the stored rows of the other families and this family's probes."""
    shape = tuple(getattr(cfg.gemm_shape, kind))
    copy_bytes, reduce_bytes = (parse_bytes(getattr(getattr(cfg, k), kind)) for k in ("copy_bytes", "all_reduce_bytes"))
    # the all_reduce anchors name NCCL's algorithm as the rows rule of conf/anchors.yaml records it
    reduce_config = {"ranks": ranks, "bytes": reduce_bytes, "nccl_algo": os.environ.get("NCCL_ALGO") or "default",
                     "placement": "in_place", "dtype": "float32"}
    return [
        L.matmul(L.MATMUL_BF16, "bf16", by_family.get("gemm", []), shape),
        L.matmul(L.MATMUL_FP8, "fp8", by_family.get("gemm", []), shape),
        L.measured(L.HBM_COPY, probes["copy"], f"fingerprint copy of {format_bytes(copy_bytes)}, each of {ranks} rank(s) in turn",
                   {"ranks": ranks}),
        L.measured(L.ALL_REDUCE, probes["all_reduce"],
                   f"fingerprint all_reduce of {format_bytes(reduce_bytes)} on {ranks} rank(s)", reduce_config),
        L.hidden_fraction(by_family.get("overlap", [])),
        L.bubble(L.BUBBLE_1F1B, "1f1b", by_family.get("pipeline", [])),
        L.bubble(L.BUBBLE_DUALPIPE, "dualpipe", by_family.get("pipeline", [])),
        L.moe(L.MOE_DISPATCH, "dispatch", by_family.get("moe_alltoall", [])),
        L.moe(L.MOE_COMBINE, "combine", by_family.get("moe_alltoall", [])),
    ]


def summary_row(line: L.Line, cfg: Config, ctx) -> dict:
    """One line as a row: its value, and its anchor and verdict."""
    m = line.metric
    judged = judge(m.name, line.value, ctx.device.name, ctx.device.fallback, line.config or {}, cfg.tolerance_pct,
                   m.higher_is_better)
    if line.status == "failed":  # its source failed its check: no number to hold against an anchor
        judged = Judged(FAILED)
    row = {**line.row, "tolerance_pct": cfg.tolerance_pct, **judged.columns()}
    row.setdefault("world_size", ctx.world.size if ctx.world else 1)
    return row


def run(cfg: Config, ctx):
    kind = ctx.device.kind
    ctx.set_total(len(L.METRICS))
    if ctx.already_measured(*({"metric": m.name} for m in L.METRICS)):
        return
    iters, warmup = cfg.iters, cfg.warmup_iters
    copy = hbm_copy(parse_bytes(getattr(cfg.copy_bytes, kind)), ctx)
    reduce = large_all_reduce(parse_bytes(getattr(cfg.all_reduce_bytes, kind)), iters, warmup, ctx)
    if ctx.world is not None and not ctx.world.is_rank0:
        return  # rank 0 alone reads the stored rows (it wrote them) and yields the summary
    ranks = ctx.world.size if ctx.world else 1
    for line in summary_lines(_stored_rows(ctx), {"copy": copy, "all_reduce": reduce}, cfg, kind, ranks):
        yield summary_row(line, cfg, ctx)


def _fleet_command(argv: list[str]) -> int:
    """RUN [RUN ...]: rank the nodes of a fleet (one fingerprint run per node) and flag the stragglers"""
    from hpcbench.analysis import fleet_cli

    return fleet_cli.main(argv)


FAMILY = Family(
    name="fingerprint",
    summary="node fingerprint: every family once, sized for the device; one summary against published anchors",
    config=Config, run=run, params=PARAMS, validate=validate, table=table, report=REPORT,
    # alone, in one process: the copy is measured, the all_reduce and the other families' lines are skips
    smoke=("fingerprint.copy_bytes.cpu=256K",),
    planned=lambda cfg, kind: [{"metric": m.name} for m in L.METRICS],
    case_id=lambda r: str(r["metric"]),
    commands={"fleet": _fleet_command},
)
