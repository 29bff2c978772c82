"""Grouped expert GEMMs of MoE layers: DeepGEMM's contiguous, masked and k-grouped layouts, BF16 and
block-scaled FP8, Triton kernels against torch baselines.

For every point (layout x shape x routing draw), G experts receive token counts from the
moe_alltoall routing generator (uniform or skewed; optionally empty experts), and every variant
(`variants.py`: Triton, a per-expert torch loop, torch._grouped_mm) is checked against a float64
reference on the valid rows, with the rows it must not write filled with a sentinel first, before
it is timed. A failed check is a failed row with no speed.

Metrics per row: TFLOP/s on valid rows only (2*valid_m*N*K; k_grouped 2*M*N*sum_k), GB/s with
DeepGEMM's byte count (see `problems.py`: FP8 inputs 1 B, BF16 2 B, BF16 output 2 B, k_grouped's
FP32 output 4 B), % of the dtype's dense peak, FP8 speedup over the same backend's BF16 variant,
calc_diff / SQNR / max relative error against the original and the dequantized inputs.
Layouts, shapes and the config: `settings.py`, conf/benchmark/grouped_gemm.yaml.
"""

from __future__ import annotations

import torch

from hpcbench.benchmarks.grouped_gemm.measure import measure
from hpcbench.benchmarks.grouped_gemm.problems import build, bytes_needed, check_capacity, flops, group_sizes, routing_columns
from hpcbench.benchmarks.grouped_gemm.report import REPORT
from hpcbench.benchmarks.grouped_gemm import settings
from hpcbench.benchmarks.grouped_gemm.settings import Config, Point, label_of, points
from hpcbench.benchmarks.grouped_gemm.table import table
from hpcbench.benchmarks.grouped_gemm.variants import ALL_VARIANTS, NotSupported, Variant
from hpcbench.api.family import Family
from hpcbench.models.hardware import supports_fp8
from hpcbench.results.schema import STATUS_SKIPPED

# what identifies a point when two runs are compared
PARAMS = ("layout", "G", "M", "N", "K", "max_m", "routing", "imbalance", "empty_experts", "kernel")


def selected_variants(cfg: Config) -> list[Variant]:
    return [v for v in ALL_VARIANTS if v.dtype in cfg.dtypes and v.backend in cfg.backends]


def _device_kind(ctx) -> str:
    return "cpu" if ctx.device.fallback else "cuda"


def _skip_reason(v: Variant, point: Point, problem_flops: int, cfg: Config, ctx) -> str | None:
    if v.dtype == "fp8" and ctx.device.kind == "cuda" and not supports_fp8(ctx.device.capability):
        cc = ".".join(map(str, ctx.device.capability))
        return f"FP8 needs compute capability >= 8.9, this GPU has {cc}"
    if v.backend == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (Linux only)"
        if ctx.device.fallback and problem_flops > cfg.interpret_max_flops:
            return (f"too large for the Triton interpreter ({problem_flops:.3g} FLOPs > "
                    f"grouped_gemm.interpret_max_flops={cfg.interpret_max_flops:g})")
    return None


def _base_row(point: Point, v: Variant, cfg: Config) -> dict:
    return {**point.params(), "kernel": v.kernel, "backend": v.backend, "dtype": v.dtype,
            "alignment": point.alignment, "seed": point.seed, "shape_set": cfg.shapes}


def run(cfg: Config, ctx):
    todo = points(cfg, _device_kind(ctx))
    variants = selected_variants(cfg)
    ctx.set_total(len(todo) * len(variants))
    for point in todo:
        # a point whose variants are all stored is skipped whole; a partly stored one measures the rest
        if not ctx.already_measured(*[_base_row(point, v, cfg) for v in variants]):
            ctx.heartbeat(f"grouped_gemm {point.label}")
            yield from _run_point(point, variants, cfg, ctx)


def _run_point(point: Point, variants: list[Variant], cfg: Config, ctx):
    free = ctx.device.free_memory()
    if free is not None and bytes_needed(point) > 0.9 * free:
        reason = f"needs ~{bytes_needed(point) / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {ctx.device.kind}"
        for v in variants:
            yield {**_base_row(point, v, cfg), "status": STATUS_SKIPPED, "reason": reason}
        return
    problem = build(point, group_sizes(point), ctx.device.torch_device)
    shared = {**routing_columns(problem), "flops": flops(problem)}
    reference = None  # float64 result of the original inputs on the valid rows, shared by the variants
    bf16_time: dict[str, float] = {}
    for v in variants:
        if ctx.already_measured(_base_row(point, v, cfg)):  # an earlier attempt stored it
            stored = ctx.stored_row(_base_row(point, v, cfg))
            if v.dtype == "bf16" and stored and stored.get("median_s"):  # the FP8 rows' baseline still
                bf16_time[v.backend] = stored["median_s"]
            continue
        row = {**_base_row(point, v, cfg), **shared}
        reason = _skip_reason(v, point, shared["flops"], cfg, ctx)
        if reason:
            yield {**row, "status": STATUS_SKIPPED, "reason": reason}
            continue
        if reference is None:
            reference = problem.reference(problem.a, problem.b)
        try:
            row.update(measure(v, problem, reference, cfg, ctx, bf16_time))
        except NotSupported as exc:
            row.update(status=STATUS_SKIPPED, reason=str(exc))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            row.update(status=STATUS_SKIPPED, reason="out of device memory")
        yield row


def planned(cfg: Config, kind: str) -> list[dict]:
    return [{**p.params(), "kernel": v.kernel} for p in points(cfg, kind) for v in selected_variants(cfg)]


def validate(cfg: Config) -> None:
    settings.validate(cfg)
    check_capacity(points(cfg, None) + (points(cfg, "cuda") if cfg.shapes == "auto" else []))


FAMILY = Family(
    name="grouped_gemm",
    summary="MoE grouped expert GEMMs (contiguous, masked, k-grouped): FP8 block-scaled vs BF16, Triton vs torch",
    config=Config, run=run, params=PARAMS, validate=validate, table=table, report=REPORT,
    smoke=("grouped_gemm.shapes=smoke", "grouped_gemm.empty_experts=1"),
    planned=planned,
    case_id=lambda r: f"{r['kernel']}-{label_of(r).replace(' ', '-')}",
)
