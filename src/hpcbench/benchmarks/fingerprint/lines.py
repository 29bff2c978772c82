"""The summary lines: which stored row of which family each metric is read from.

Every line comes from rows this run stored (rows.jsonl, every attempt's, the last of a repeated
point winning), except the two the fingerprint measures itself (`probes`). A line whose source
point is absent says why and has no value; one whose source failed its check is failed too.
Rates (TFLOP/s, GB/s) carry their source's raw time samples, so `compare` tests them like the
source point; fractions (hidden share, bubble) have none and are shown, not tested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.api.sizes import format_bytes


@dataclass(frozen=True)
class Metric:
    name: str  # the `metric` column, and the anchor's metric name
    label: str  # what the table calls it
    unit: str
    higher_is_better: bool = True


MATMUL_BF16 = Metric("matmul_bf16_tflops", "BF16 matmul", "TFLOP/s")
MATMUL_FP8 = Metric("matmul_fp8_tflops", "FP8 matmul", "TFLOP/s")
HBM_COPY = Metric("hbm_copy_GBps", "device memory copy (read + write)", "GB/s")
ALL_REDUCE = Metric("all_reduce_busbw_GBps", "all_reduce busbw", "GB/s")
HIDDEN = Metric("overlap_hidden_fraction", "communication hidden behind compute", "fraction")
BUBBLE_1F1B = Metric("pipeline_bubble_1f1b", "1F1B bubble (measured)", "fraction", higher_is_better=False)
BUBBLE_DUALPIPE = Metric("pipeline_bubble_dualpipe", "DualPipe bubble (measured)", "fraction", higher_is_better=False)
MOE_DISPATCH = Metric("moe_dispatch_GBps", "MoE dispatch (logical)", "GB/s")
MOE_COMBINE = Metric("moe_combine_GBps", "MoE combine (logical)", "GB/s")

METRICS = (MATMUL_BF16, MATMUL_FP8, HBM_COPY, ALL_REDUCE, HIDDEN, BUBBLE_1F1B, BUBBLE_DUALPIPE, MOE_DISPATCH,
           MOE_COMBINE)

TIME_COLUMNS = ("timing_method", "n_samples", "median_s", "p10_s", "p90_s", "iqr_s", "cv", "min_s", "max_s",
                "samples_s")


@dataclass(frozen=True)
class Line:
    """A metric's value (None when it has none), where it came from, and what an anchor matches on."""

    metric: Metric
    status: str
    value: float | None = None
    reason: str | None = None
    source: str | None = None  # the family and point the value was read from
    config: dict | None = None  # the configuration an anchor must match (hpcbench.models.anchors' keys)
    extra: dict | None = None  # peak, time samples and other columns carried over

    @property
    def row(self) -> dict:
        """The line as row columns; `anchor_config` is what conf/anchors.yaml's rule for these rows
        matches anchors on (`config_from`), as this family did."""
        m = self.metric
        ranks = (self.config or {}).get("ranks")
        return {"metric": m.name, "label": m.label, "unit": m.unit, "higher_is_better": m.higher_is_better,
                "status": self.status, "reason": self.reason, "value": self.value, "source": self.source,
                "anchor_config": self.config, **({"world_size": ranks} if ranks is not None else {}),
                **(self.extra or {})}


def latest(rows: list[dict], params: dict[str, tuple[str, ...]]) -> dict[str, list[dict]]:
    """Rows by family, the last stored row of each point only (a resumed or forced attempt's)."""
    out: dict[str, dict] = {}
    for r in rows:
        name = r.get("benchmark")
        keys = params.get(name)
        if keys is None:
            continue
        out.setdefault(name, {})[tuple(str(r.get(k)) for k in keys) + (str(r.get("record")),)] = r
    return {name: list(points.values()) for name, points in out.items()}


def _times(row: dict) -> dict:
    return {k: row[k] for k in TIME_COLUMNS if row.get(k) is not None}


def _absent(metric: Metric, family: str, what: str) -> Line:
    return Line(metric, STATUS_SKIPPED, reason=f"no {what} in this run's {family} rows (is {family} in the suite?)")


def _not_ok(metric: Metric, rows: list[dict], source: Callable[[dict], str]) -> Line:
    """The line of a metric none of whose candidate rows is ok: failed if one failed, else skipped."""
    failed = [r for r in rows if r.get("status") == STATUS_FAILED]
    r = (failed or rows)[0]
    status = STATUS_FAILED if failed else STATUS_SKIPPED
    return Line(metric, status, reason=f"{source(r)}: {r.get('reason') or r.get('status')}", source=source(r))


def _one_rank(metric: Metric, family: str, row: dict) -> Line | None:
    if int(row.get("world_size") or 0) < 2:
        return Line(metric, STATUS_SKIPPED, source=family,
                    reason=f"{family} ran on {row.get('world_size')} rank: nothing crosses a link on one rank")
    return None


def matmul(metric: Metric, dtype: str, rows: list[dict], shape: tuple[int, int, int]) -> Line:
    """The fastest ok kernel of `dtype` at the fingerprint's GEMM shape."""
    M, N, K = shape
    mine = [r for r in rows if r.get("dtype") == dtype and (r.get("M"), r.get("N"), r.get("K")) == (M, N, K)
            and r.get("pass") in (None, "fprop")]  # the forward GEMM (the gemm family may time dgrad, wgrad too)
    source = lambda r: f"gemm {r.get('M')}x{r.get('N')}x{r.get('K')} {r.get('kernel')}"
    if not mine:
        return _absent(metric, "gemm", f"{dtype} {M}x{N}x{K} point")
    ok = [r for r in mine if r.get("status") == STATUS_OK and r.get("tflops") is not None]
    if not ok:
        return _not_ok(metric, mine, source)
    best = max(ok, key=lambda r: r["tflops"])
    config = {"M": M, "N": N, "K": K, **{k: best.get(k) for k in ("kernel", "scaling", "accumulation")}}
    return Line(metric, STATUS_OK, best["tflops"], source=source(best), config=config,
                extra={"peak": best.get("peak_tflops"), "pct_peak": best.get("pct_peak"), **_times(best)})


def hidden_fraction(rows: list[dict]) -> Line:
    """The overlap family's hidden fraction at its largest message."""
    if not rows:
        return _absent(HIDDEN, "overlap", "point")
    largest = max(rows, key=lambda r: (int(r.get("comm_bytes") or 0), r.get("status") == STATUS_OK))
    source = lambda r: (f"overlap {r.get('collective')} {format_bytes(int(r.get('comm_bytes') or 0))} "
                        f"with {r.get('compute')} {r.get('compute_shape') or ''}").strip()
    if largest.get("status") != STATUS_OK:
        return _not_ok(HIDDEN, [largest], source)
    return _one_rank(HIDDEN, "overlap", largest) or Line(
        HIDDEN, STATUS_OK, largest.get("hidden_fraction"), source=source(largest),
        config={"collective": largest.get("collective"), "bytes": largest.get("comm_bytes"),
                "ranks": largest.get("world_size")},
        extra={"t_comp_us": largest.get("t_comp_us"), "t_comm_us": largest.get("t_comm_us"),
               "t_ovl_us": largest.get("t_ovl_us")})


def bubble(metric: Metric, schedule: str, rows: list[dict]) -> Line:
    """A schedule's measured bubble ratio (idle share of each rank's step), the simulator's beside it."""
    mine = [r for r in rows if r.get("schedule") == schedule]
    if not mine:
        return _absent(metric, "pipeline", f"{schedule} schedule")
    row = mine[-1]
    source = lambda r: f"pipeline {schedule} ({r.get('world_size')} ranks, {r.get('microbatches')} microbatches)"
    if row.get("status") != STATUS_OK:
        return _not_ok(metric, [row], source)
    return _one_rank(metric, "pipeline", row) or Line(
        metric, STATUS_OK, row.get("bubble_ratio"), source=source(row),
        config={"schedule": schedule, "ranks": row.get("world_size"), "microbatches": row.get("microbatches")},
        extra={"predicted": row.get("predicted_bubble_ratio"), "step_ms": row.get("step_ms")})


_MOE_CONFIG = ("impl", "layout", "dispatch_dtype", "tokens_per_rank", "hidden", "num_experts", "top_k", "routing")


def _moe_preference(r: dict) -> tuple:
    """The largest point; at equal size the anchored recipe (FP8 dispatch, per-rank layout)."""
    return (int(r.get("tokens_per_rank") or 0), int(r.get("hidden") or 0), r.get("dispatch_dtype") == "fp8",
            r.get("layout") == "per_rank", r.get("status") == STATUS_OK)


def moe(metric: Metric, phase: str, rows: list[dict]) -> Line:
    """DeepEP's logical bandwidth of a phase at the largest point measured."""
    mine = [r for r in rows if r.get("phase") == phase]
    if not mine:
        return _absent(metric, "moe_alltoall", f"{phase} row")
    row = max(mine, key=_moe_preference)
    source = lambda r: (f"moe_alltoall {r.get('impl')} {r.get('dispatch_dtype')} {r.get('layout')} "
                        f"{r.get('tokens_per_rank')} tokens x {r.get('hidden')}, top-{r.get('top_k')}")
    if row.get("status") != STATUS_OK:
        return _not_ok(metric, [row], source)
    config = {"ranks": row.get("world_size"), **{k: row.get(k) for k in _MOE_CONFIG}}
    return _one_rank(metric, "moe_alltoall", row) or Line(
        metric, STATUS_OK, row.get("logical_GBps"), source=source(row), config=config, extra=_times(row))


def measured(metric: Metric, probe: dict | None, source: str, config: dict) -> Line:
    """A line the fingerprint measured itself (`probes`)."""
    if probe is None:
        return Line(metric, STATUS_SKIPPED, reason="not measured")
    extra = {k: v for k, v in probe.items() if k not in ("status", "reason", "value")}
    return Line(metric, probe["status"], probe.get("value"), reason=probe.get("reason"), source=source,
                config=config, extra=extra)
