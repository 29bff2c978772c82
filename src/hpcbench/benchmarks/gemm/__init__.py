"""FP8 vs BF16 GEMM: Triton kernels against cuBLAS/cuBLASLt baselines, with accuracy.

For every shape (M, N, K), C = A @ B^T with A (M, K) activations and B (N, K) weights drawn from a
normal distribution (never zeros: constant data runs faster on Hopper). Every variant is checked
against a float64 reference before it is timed; a variant that misses its tolerance is recorded as
failed and no speed is reported for it.

Metrics (VISION.md sec. 3): TFLOP/s = 2MNK / median time; % of the dtype's dense peak; FP8/BF16
speedup for the GEMM alone and including activation quantization; calc_diff, SQNR and max
relative error against the dequantized FP8 inputs (kernel and accumulation error, "_deq") and
against the original BF16 inputs (end-to-end error, "_orig").

Tolerances follow the accumulation (`hpcbench.accuracy.fp8_tolerance`): an FP8 dot accumulated in
the tensor core's ~13-bit accumulator over all of K ("fast": cuBLAS use_fast_accum, Triton's FP8
dot on sm_89/sm_90) loses accuracy roughly like K^2 in calc_diff, so its tolerance grows with K;
promoted ("fp32_promote_k128") and full FP32 accumulation keep the floor. Each row records its
`accumulation` and the tolerances applied (`tol_deq`, `tol_orig`), and Triton rows the kernel
implementation that ran (`kernel_impl`: "tma_persistent" on Hopper, "pointer" elsewhere; see
hpcbench.kernels.select). The torch tensor- and row-wise
baselines run with fast accumulation, FP32-promoted accumulation (`*_fp32acc`), or both, side by
side (gemm.scaled_mm_accum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional
from enum import auto
from types import SimpleNamespace

import torch
from omegaconf import MISSING

from hpcbench.accuracy import accuracy, fp8_tolerance
from hpcbench.benchmarks.gemm.report import REPORT
from hpcbench.benchmarks.gemm.variants import ALL_VARIANTS, NotSupported, Prepared, Variant, prepare_torch, prepare_triton
from hpcbench.errors import ImpossibleMeasurement, UserError
from hpcbench.family import Choice, Family
from hpcbench.hardware import peak_tflops, supports_fp8
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.shapes import expand, load_preset
from hpcbench.tables import fmt, new_table
from hpcbench.timing import tflops, time_fn, timed_columns


class Dtype(Choice):
    bf16 = auto()
    fp8 = auto()


class Scaling(Choice):
    tensor = auto()  # one scale per tensor
    row = auto()  # one scale per row
    block = auto()  # 1x128 activation tiles, 128x128 weight blocks


class Backend(Choice):
    triton = auto()  # hpcbench's Triton kernels
    torch = auto()  # torch.matmul (cuBLAS) and torch._scaled_mm (cuBLASLt)


class ScaledMMAccum(Choice):
    fast = auto()  # use_fast_accum=True: the tensor-core accumulator over all of K
    fp32 = auto()  # use_fast_accum=False: promoted to FP32 every 128 of K (kernels named *_fp32acc)


# what identifies a point when two runs are compared (joined on these, never on row order)
PARAMS = ("M", "N", "K", "kernel")


@dataclass
class Config:
    """Types of the `gemm:` section; the defaults and their documentation: conf/benchmark/gemm.yaml."""

    shapes: str = MISSING  # auto | custom | a preset in conf/shapes/gemm/
    custom: list[list[int]] = MISSING
    dtypes: list[Dtype] = MISSING
    fp8_scalings: list[Scaling] = MISSING
    backends: list[Backend] = MISSING
    seed: int = MISSING
    scaled_mm_accum: list[ScaledMMAccum] = MISSING
    scaled_mm_fast_accum: Optional[bool] = MISSING  # the key before scaled_mm_accum: true = [fast], false = [fp32]
    time_quantization: bool = MISSING
    tol_bf16: float = MISSING
    tol_fp8_kernel: float = MISSING
    tol_fp8_e2e: float = MISSING
    fast_accum_bits: int = MISSING
    fast_accum_margin: float = MISSING
    interpret_max_flops: float = MISSING


def validate(cfg: Config) -> None:
    for key in ("tol_bf16", "tol_fp8_kernel", "tol_fp8_e2e", "interpret_max_flops", "fast_accum_margin"):
        if not getattr(cfg, key) > 0:
            raise UserError(f"gemm.{key} must be positive")
    if not 1 <= cfg.fast_accum_bits <= 52:
        raise UserError("gemm.fast_accum_bits must be between 1 and 52")
    if not cfg.scaled_mm_accum:
        raise UserError("gemm.scaled_mm_accum needs at least one of fast, fp32")
    if not selected_variants(cfg):
        raise UserError("gemm: the dtypes/fp8_scalings/backends selection leaves no kernel to run")
    if cfg.shapes != "auto" or cfg.custom:  # read now, so that bad shapes stop the run before it starts
        shapes_for(cfg, None)


def shapes_for(cfg: Config, ctx) -> list[tuple[int, int, int]]:
    if cfg.shapes == "custom":
        return expand({"mnk": [list(s) for s in cfg.custom]}, where="gemm.custom")
    if cfg.custom:
        raise UserError("gemm.custom is only read with gemm.shapes=custom")
    name = cfg.shapes
    if name == "auto":
        name = "smoke" if ctx.device.fallback else "square"
    return load_preset("gemm", name)


def selected_variants(cfg: Config) -> list[Variant]:
    accum = {ScaledMMAccum.fast: True, ScaledMMAccum.fp32: False}
    wanted_fast = ({cfg.scaled_mm_fast_accum} if cfg.scaled_mm_fast_accum is not None
                   else {accum[a] for a in cfg.scaled_mm_accum})
    return [v for v in ALL_VARIANTS
            if v.dtype in cfg.dtypes and v.backend in cfg.backends
            and (v.dtype == "bf16" or v.scaling in cfg.fp8_scalings)
            and (v.fast_accum is None or v.fast_accum in wanted_fast)]


def _bytes_needed(M: int, N: int, K: int) -> int:
    """Peak memory of one shape: BF16 and FP8 inputs, float64 inputs and references, outputs."""
    inputs = (M * K + N * K) * (2 + 1 + 8 + 8)  # bf16, fp8, float64 original and dequantized
    outputs = M * N * (2 + 8 + 8 + 8)  # bf16 result, float64 result and two references
    return inputs + outputs


def _triton_status() -> str | None:
    """None when Triton kernels can run, else the reason they cannot."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (Linux only)"
    return None


def _skip_reason(v: Variant, M: int, N: int, K: int, cfg: Config, ctx) -> str | None:
    if v.dtype == "fp8" and ctx.device.kind == "cuda" and not supports_fp8(ctx.device.capability):
        cc = ".".join(map(str, ctx.device.capability))
        return f"FP8 needs compute capability >= 8.9, this GPU has {cc}"
    if v.backend == "triton":
        reason = _triton_status()
        if reason:
            return reason
        if ctx.device.fallback and 2 * M * N * K > cfg.interpret_max_flops:
            return f"too large for the Triton interpreter (2MNK > gemm.interpret_max_flops={cfg.interpret_max_flops:g})"
    return None


def run(cfg: Config, ctx):
    shapes = shapes_for(cfg, ctx)
    variants = selected_variants(cfg)
    ctx.set_total(len(shapes) * len(variants))
    for M, N, K in shapes:
        # resume skips a shape only with all its kernels: the FP8 rows' speedups need the BF16 one
        if not ctx.already_measured(*[_base_row(v, M, N, K, cfg) for v in variants]):
            yield from _run_shape(M, N, K, variants, cfg, ctx)


def _base_row(v: Variant, M: int, N: int, K: int, cfg: Config) -> dict:
    return {"shape_set": cfg.shapes, "M": M, "N": N, "K": K, "kernel": v.kernel, "backend": v.backend,
            "dtype": v.dtype, "scaling": v.scaling, "flops": 2 * M * N * K}


def _run_shape(M, N, K, variants, cfg: Config, ctx):
    dev = ctx.device.torch_device
    free = ctx.device.free_memory()
    if free is not None and _bytes_needed(M, N, K) > 0.9 * free:
        reason = f"needs ~{_bytes_needed(M, N, K) / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {ctx.device.kind}"
        for v in variants:
            yield {**_base_row(v, M, N, K, cfg), "status": STATUS_SKIPPED, "reason": reason}
        return
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + M * 1_000_003 + N * 1009 + K)
    a = torch.randn(M, K, device=dev, generator=gen).to(torch.bfloat16)
    b = torch.randn(N, K, device=dev, generator=gen).to(torch.bfloat16)
    reference = None  # float64 A @ B^T of the original inputs, shared by all variants
    bf16_time: dict[str, float] = {}  # backend -> median of its BF16 GEMM
    torch_time: dict[str, float] = {}  # scaling -> median of the torch baseline for that recipe (fast first)
    for v in variants:
        row = _base_row(v, M, N, K, cfg)
        reason = _skip_reason(v, M, N, K, cfg, ctx)
        if reason:
            yield {**row, "status": STATUS_SKIPPED, "reason": reason}
            continue
        if reference is None:
            reference = a.double() @ b.double().T
        try:
            row.update(_measure(v, a, b, reference, cfg, ctx, bf16_time, torch_time))
        except NotSupported as exc:
            row.update(status=STATUS_SKIPPED, reason=str(exc))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            row.update(status=STATUS_SKIPPED, reason="out of device memory")
        yield row


def _prepare(v: Variant, a, b, cfg: Config, ctx) -> Prepared:
    if v.backend == "torch":
        return prepare_torch(v, a, b)
    return prepare_triton(v, a, b)


def tolerances(v: Variant, K: int, accumulation: str, cfg: Config) -> dict:
    """calc_diff tolerances against the original inputs (tol_orig) and, for FP8, the dequantized
    ones (tol_deq): the configured floors plus the modelled error of the accumulation mode over K."""
    if v.dtype == "bf16":
        return {"tol_orig": cfg.tol_bf16, "tol_deq": None}
    extra = fp8_tolerance(0.0, K, accumulation, cfg.fast_accum_bits, cfg.fast_accum_margin)
    return {"tol_orig": cfg.tol_fp8_e2e + extra, "tol_deq": cfg.tol_fp8_kernel + extra}


def _check(v: Variant, out, reference, prepared: Prepared, K: int, cfg: Config) -> tuple[dict, str | None]:
    """Accuracy columns, the accumulation and tolerances applied and, if one is missed, the reason."""
    orig = accuracy(out, reference)
    deq = accuracy(out, prepared.dequantized_ref()) if prepared.dequantized_ref else orig
    cols = {"accumulation": prepared.accumulation,
            **tolerances(v, K, prepared.accumulation, cfg)}
    for tag, m in (("deq", deq), ("orig", orig)):
        cols.update({f"calc_diff_{tag}": m["calc_diff"], f"sqnr_{tag}_db": m["sqnr_db"],
                     f"max_rel_err_{tag}": m["max_rel_err"]})
    checks = [("original inputs", orig["calc_diff"], cols["tol_orig"])]
    if v.dtype == "fp8":
        checks.append(("dequantized inputs", deq["calc_diff"], cols["tol_deq"]))
    for against, value, tol in checks:
        if not value <= tol:  # also catches NaN
            return cols, f"calc_diff {value:.3g} > tolerance {tol:g} against {against}"
    return cols, None


def _measure(v: Variant, a, b, reference, cfg: Config, ctx, bf16_time, torch_time) -> dict:
    prepared = _prepare(v, a, b, cfg, ctx)
    cols, failure = _check(v, prepared.gemm(), reference, prepared, a.shape[1], cfg)
    cols["kernel_impl"] = prepared.kernel_impl  # which Triton kernel ran (None: torch)
    if failure:
        return {**cols, "status": STATUS_FAILED, "reason": failure}
    timing = time_fn(prepared.gemm, ctx.device.torch_device, ctx.timing)
    median = timing.stats.median_s
    cols.update(timed_columns(timing.samples_s, timing.method))
    peak = None if ctx.device.fallback else peak_tflops(ctx.device.name, v.dtype)
    try:
        cols["tflops"] = tflops(2 * a.shape[0] * b.shape[0] * a.shape[1], median, peak)
    except ImpossibleMeasurement as exc:
        return {**cols, "status": STATUS_FAILED, "reason": str(exc)}
    cols["peak_tflops"] = peak
    cols["pct_peak"] = 100 * cols["tflops"] / peak if peak else None
    if v.dtype == "bf16":
        bf16_time[v.backend] = median
    if v.backend == "torch":
        if v.fast_accum is not False or v.scaling not in torch_time:  # Triton's FP8 dots are fast too
            torch_time[v.scaling] = median
    elif v.scaling in torch_time:
        cols["vs_torch"] = torch_time[v.scaling] / median  # >1: the Triton kernel is faster
    if v.dtype == "fp8":
        base = bf16_time.get(v.backend)
        cols["speedup_vs_bf16"] = base / median if base else None
        if cfg.time_quantization:
            quant = time_fn(prepared.quantize_act, ctx.device.torch_device, ctx.timing)
            e2e = time_fn(prepared.end_to_end, ctx.device.torch_device, ctx.timing)
            cols.update(quant_median_s=quant.stats.median_s, e2e_median_s=e2e.stats.median_s,
                        e2e_samples_s=e2e.samples_s,
                        speedup_vs_bf16_with_quant=base / e2e.stats.median_s if base else None)
    return {**cols, "status": STATUS_OK, "reason": None}


# ---- terminal table ---------------------------------------------------------------------------

_STATUS = {STATUS_OK: "[green]ok[/]", STATUS_FAILED: "[red]FAILED[/]"}


def _ms(r: dict, key: str) -> str:
    return fmt(r[key] * 1e3 if r.get(key) is not None else None, ".4g")


def table(rows: list[dict], fallback: bool):
    t = new_table("GEMM C = A @ B^T", fallback, "Triton interpreter",
                  ["M×N×K", "kernel", "status", "median ms", "p10–p90 ms", "CV", "TFLOP/s", "% peak", "×BF16",
                   "×BF16+q", "calc_diff", "SQNR dB"], left=("M×N×K", "kernel", "status"))
    for col in t.columns:
        col.no_wrap = True
    for r in rows:
        ok = r.get("status") == STATUS_OK
        t.add_row(
            f"{fmt(r['M'])}×{fmt(r['N'])}×{fmt(r['K'])}", r["kernel"],
            _STATUS.get(r.get("status"), "[dim]skipped[/]"),
            _ms(r, "median_s") if ok else (r.get("reason") or "")[:60],
            f"{_ms(r, 'p10_s')}–{_ms(r, 'p90_s')}" if ok else "",
            fmt(r.get("cv"), ".1%"), fmt(r.get("tflops"), ".4g"), fmt(r.get("pct_peak"), ".1f"),
            fmt(r.get("speedup_vs_bf16"), ".2f"), fmt(r.get("speedup_vs_bf16_with_quant"), ".2f"),
            fmt(r.get("calc_diff_orig"), ".2e"), fmt(r.get("sqnr_orig_db"), ".1f"),
        )
    return t


def planned(cfg: Config, kind: str) -> list[dict]:
    ctx = SimpleNamespace(device=SimpleNamespace(fallback=kind == "cpu"))  # all shapes_for reads
    return [{"kernel": v.kernel, "M": M, "N": N, "K": K}
            for M, N, K in shapes_for(cfg, ctx) for v in selected_variants(cfg)]


FAMILY = Family(
    name="gemm",
    summary="FP8 vs BF16 GEMM: Triton kernels against cuBLAS/cuBLASLt, with accuracy",
    config=Config, run=run, params=PARAMS, validate=validate, table=table, report=REPORT,
    smoke=("gemm.shapes=custom", "gemm.custom=[[48,40,160]]"),
    planned=planned,
    case_id=lambda r: f"{r['kernel']}-{fmt(r['M'])}x{fmt(r['N'])}x{fmt(r['K'])}",
)
