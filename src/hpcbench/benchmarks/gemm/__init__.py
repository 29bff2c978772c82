"""FP8 vs BF16 GEMM: Triton kernels against cuBLAS/cuBLASLt baselines, with accuracy.

For every shape (M, N, K), C = A @ B^T with A (M, K) activations and B (N, K) weights drawn from a
normal distribution (never zeros: constant data runs faster on Hopper). Every variant is checked
against a float64 reference before it is timed; a variant that misses its tolerance is recorded as
failed and no speed is reported for it.

gemm.passes adds the backward GEMMs of the same layer (column `pass`): dgrad dX = dY W and wgrad
dW = dY^T X, with the re-layouts and re-quantizations each FP8 pass needs timed as its
quantization (benchmarks/gemm/passes.py). M, N, K always name the layer (X (M, K), W (N, K));
the tolerances use each pass's own contraction length (K, N, M).

Every FP8 row also carries the roofline model's predicted FP8/BF16 speedup (hpcbench.models.roofline;
blank where the device's peaks are unknown, the CPU fallback included), and with gemm.mamf_run
set, BF16 and FP8 rows their TFLOP/s as a percentage of the best that a MAMF run of the same
device measured for that dtype (`pct_mamf`).

Metrics (VISION.md sec. 3): TFLOP/s = 2MNK / median time; % of the dtype's dense peak; FP8/BF16
speedup for the GEMM alone and including activation quantization; calc_diff, SQNR and max
relative error against the dequantized FP8 inputs (kernel and accumulation error, "_deq") and
against the original BF16 inputs (end-to-end error, "_orig").

Tolerances follow the accumulation (`hpcbench.measure.accuracy.fp8_tolerance`): an FP8 dot accumulated in
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
from enum import auto
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch
from omegaconf import MISSING

from hpcbench.models import roofline
from hpcbench.measure.accuracy import accuracy, fp8_tolerance
from hpcbench.benchmarks.gemm import passes as training_passes
from hpcbench.benchmarks.gemm.mamf_of_device import mamf_of_device
from hpcbench.benchmarks.gemm.report import REPORT
from hpcbench.benchmarks.gemm.table import table
from hpcbench.benchmarks.gemm.variants import ALL_VARIANTS, NotSupported, Prepared, Variant, prepare_torch, prepare_triton
from hpcbench.api import checks
from hpcbench.api.errors import ImpossibleMeasurement, UserError
from hpcbench.api.family import Choice, Family
from hpcbench.models.hardware import peak_tflops, supports_fp8
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.api.shapes import expand, load_preset
from hpcbench.api.tables import fmt
from hpcbench.measure.timing import tflops, time_fn, timed_columns


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


class Pass(Choice):
    fprop = auto()  # Y = X W^T, contraction K
    dgrad = auto()  # dX = dY W, contraction N
    wgrad = auto()  # dW = dY^T X, contraction M (tokens)


class ScaledMMAccum(Choice):
    fast = auto()  # use_fast_accum=True: the tensor-core accumulator over all of K
    fp32 = auto()  # use_fast_accum=False: promoted to FP32 every 128 of K (kernels named *_fp32acc)


# what identifies a point when two runs are compared (joined on these, never on row order)
PARAMS = ("M", "N", "K", "kernel", "pass")


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
    passes: list[Pass] = MISSING
    roofline_pct_gemm: float = MISSING
    roofline_pct_mem: float = MISSING
    roofline_min_kernel_s: float = MISSING
    mamf_run: Optional[str] = MISSING


def validate(cfg: Config) -> None:
    checks.positive("gemm", cfg, "tol_bf16", "tol_fp8_kernel", "tol_fp8_e2e", "interpret_max_flops", "fast_accum_margin")
    checks.at_least("gemm", cfg, seed=0)
    if not 1 <= cfg.fast_accum_bits <= 52:
        raise UserError(f"gemm.fast_accum_bits={cfg.fast_accum_bits}: use an integer from 1 to 52 (mantissa bits)")
    if not cfg.scaled_mm_accum:
        raise UserError("gemm.scaled_mm_accum needs at least one of fast, fp32")
    if not cfg.passes:
        raise UserError("gemm.passes needs at least one of fprop, dgrad, wgrad")
    for key in ("roofline_pct_gemm", "roofline_pct_mem"):
        if not 0 < getattr(cfg, key) <= 1:
            raise UserError(f"gemm.{key} must be in (0, 1]")
    if not cfg.roofline_min_kernel_s >= 0:
        raise UserError("gemm.roofline_min_kernel_s must be >= 0")
    if cfg.mamf_run is not None:
        if not Path(cfg.mamf_run).exists():
            raise UserError(f"gemm.mamf_run={cfg.mamf_run}: no such file or directory")
        from hpcbench.benchmarks.mamf.best import mamf_best

        mamf_best(cfg.mamf_run)  # a path that is no MAMF run stops here, with its one-line reason
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


def _bytes_needed(M: int, N: int, K: int, passes=("fprop",)) -> int:
    """Peak memory of one shape: BF16 and FP8 inputs, float64 inputs and references, outputs (the
    backward passes add dY (M, N) and outputs of (M, K) and (N, K))."""
    backward = any(p != "fprop" for p in passes)
    inputs = (M * K + N * K + (M * N if backward else 0)) * (2 + 1 + 8 + 8)  # bf16, fp8, float64 original and dequantized
    outputs = max(M * N, M * K, N * K) if backward else M * N
    return inputs + outputs * (2 + 8 + 8 + 8)  # bf16 result, float64 result and two references


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
    pass_names = [str(p) for p in cfg.passes]
    ctx.set_total(len(shapes) * len(pass_names) * len(variants))
    extras = _RunExtras(machine=_machine(cfg, ctx), mamf=mamf_of_device(cfg.mamf_run, ctx))
    for M, N, K in shapes:
        # a shape whose kernels are all stored is skipped whole; a partly stored one measures the rest
        if not ctx.already_measured(*[_base_row(v, M, N, K, p, cfg) for p in pass_names for v in variants]):
            yield from _run_shape(M, N, K, pass_names, variants, cfg, ctx, extras)


@dataclass
class _RunExtras:
    machine: roofline.Machine | None  # None: no roofline prediction (unknown peaks, CPU fallback)
    mamf: dict | None  # dtype -> best MAMF TFLOP/s of this device; None: no pct_mamf column


def _machine(cfg: Config, ctx) -> roofline.Machine | None:
    if ctx.device.fallback:
        return None
    return roofline.machine_for(ctx.device.name, cfg.roofline_pct_gemm, cfg.roofline_pct_mem,
                                cfg.roofline_min_kernel_s)


def _base_row(v: Variant, M: int, N: int, K: int, pass_name: str, cfg: Config) -> dict:
    return {"shape_set": cfg.shapes, "M": M, "N": N, "K": K, "kernel": v.kernel, "pass": pass_name,
            "backend": v.backend, "dtype": v.dtype, "scaling": v.scaling, "flops": 2 * M * N * K}


def _predicted(v: Variant, M: int, N: int, K: int, pass_name: str, machine) -> dict:
    """The roofline's FP8/BF16 speedups for an FP8 row (blank without the device's peaks)."""
    if v.dtype != "fp8":
        return {}
    if machine is None:
        return {"predicted_speedup": None, "predicted_speedup_gemm": None, "predicted_speedup_step": None}
    one = roofline.predict(machine, pass_name, v.scaling, M, N, K)
    return {"predicted_speedup": one.speedup, "predicted_speedup_gemm": one.speedup_gemm,
            "predicted_speedup_step": roofline.predict_step(machine, v.scaling, M, N, K).speedup}


def _run_shape(M, N, K, pass_names, variants, cfg: Config, ctx, extras: _RunExtras):
    dev = ctx.device.torch_device
    free = ctx.device.free_memory()
    need = _bytes_needed(M, N, K, pass_names)
    if free is not None and need > 0.9 * free:
        reason = f"needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free on {ctx.device.kind}"
        for p in pass_names:
            for v in variants:
                yield {**_base_row(v, M, N, K, p, cfg), "status": STATUS_SKIPPED, "reason": reason}
        return
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + M * 1_000_003 + N * 1009 + K)
    x = torch.randn(M, K, device=dev, generator=gen).to(torch.bfloat16)
    w = torch.randn(N, K, device=dev, generator=gen).to(torch.bfloat16)
    # drawn after X and W, so that the forward pass sees the same data with or without backward passes
    dy = (torch.randn(M, N, device=dev, generator=gen).to(torch.bfloat16)
          if any(p != "fprop" for p in pass_names) else None)
    for pass_name in pass_names:
        reference = None  # float64 result of the pass on the original inputs, shared by all variants
        bf16_time: dict[str, float] = {}  # backend -> median of its BF16 GEMM
        torch_time: dict[str, float] = {}  # scaling -> median of the torch baseline for that recipe (fast first)
        for v in variants:
            if ctx.already_measured(_base_row(v, M, N, K, pass_name, cfg)):  # an earlier attempt stored it
                stored = ctx.stored_row(_base_row(v, M, N, K, pass_name, cfg))
                if stored and stored.get("median_s"):  # still the baseline of the FP8 rows after it
                    _note_baseline(v, stored["median_s"], bf16_time, torch_time)
                continue
            row = {**_base_row(v, M, N, K, pass_name, cfg), **_predicted(v, M, N, K, pass_name, extras.machine)}
            reason = _skip_reason(v, M, N, K, cfg, ctx)
            if reason:
                yield {**row, "status": STATUS_SKIPPED, "reason": reason}
                continue
            if reference is None:
                reference = training_passes.reference(pass_name, x, w, dy)
            try:
                row.update(_measure(v, pass_name, (x, w, dy), reference, cfg, ctx, bf16_time, torch_time))
            except NotSupported as exc:
                row.update(status=STATUS_SKIPPED, reason=str(exc))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                row.update(status=STATUS_SKIPPED, reason="out of device memory")
            if extras.mamf is not None and row.get("tflops") is not None and extras.mamf.get(v.dtype):
                row["mamf_tflops"] = extras.mamf[v.dtype]
                row["pct_mamf"] = 100 * row["tflops"] / extras.mamf[v.dtype]
            yield row


def _prepare(v: Variant, pass_name: str, x, w, dy) -> Prepared:
    if pass_name != "fprop":
        return training_passes.prepare_backward(v, pass_name, x, w, dy)
    if v.backend == "torch":
        return prepare_torch(v, x, w)
    return prepare_triton(v, x, w)


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


def _note_baseline(v: Variant, median: float, bf16_time: dict, torch_time: dict) -> None:
    """Remember a kernel's median where later rows of the shape are compared with it."""
    if v.dtype == "bf16":
        bf16_time[v.backend] = median
    if v.backend == "torch" and (v.fast_accum is not False or v.scaling not in torch_time):
        torch_time[v.scaling] = median  # the fast-accumulation baseline first: Triton's FP8 dots are fast too


def _measure(v: Variant, pass_name: str, tensors, reference, cfg: Config, ctx, bf16_time, torch_time) -> dict:
    prepared = _prepare(v, pass_name, *tensors)
    M, N, K = tensors[0].shape[0], tensors[1].shape[0], tensors[0].shape[1]
    contraction = training_passes.contraction(pass_name, M, N, K)
    cols, failure = _check(v, prepared.gemm(), reference, prepared, contraction, cfg)
    cols["kernel_impl"] = prepared.kernel_impl  # which Triton kernel ran (None: torch)
    if failure:
        return {**cols, "status": STATUS_FAILED, "reason": failure}
    timing = time_fn(prepared.gemm, ctx.device.torch_device, ctx.timing)
    median = timing.stats.median_s
    cols.update(timed_columns(timing.samples_s, timing.method))
    peak = None if ctx.device.fallback else peak_tflops(ctx.device.name, v.dtype)
    try:
        cols["tflops"] = tflops(2 * M * N * K, median, peak)
    except ImpossibleMeasurement as exc:
        return {**cols, "status": STATUS_FAILED, "reason": str(exc)}
    cols["peak_tflops"] = peak
    cols["pct_peak"] = 100 * cols["tflops"] / peak if peak else None
    _note_baseline(v, median, bf16_time, torch_time)
    if v.backend != "torch" and v.scaling in torch_time:
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


def planned(cfg: Config, kind: str) -> list[dict]:
    ctx = SimpleNamespace(device=SimpleNamespace(fallback=kind == "cpu"))  # all shapes_for reads
    return [{"kernel": v.kernel, "M": M, "N": N, "K": K, "pass": str(p)}
            for M, N, K in shapes_for(cfg, ctx) for p in cfg.passes for v in selected_variants(cfg)]


def case_id(row: dict) -> str:
    """`kernel-MxNxK` for the forward pass (the ids before gemm.passes existed), else `kernel-pass-MxNxK`."""
    shape = f"{fmt(row['M'])}x{fmt(row['N'])}x{fmt(row['K'])}"
    pass_name = row.get("pass") or "fprop"
    return f"{row['kernel']}-{shape}" if pass_name == "fprop" else f"{row['kernel']}-{pass_name}-{shape}"


FAMILY = Family(
    name="gemm",
    summary="FP8 vs BF16 GEMM: Triton kernels against cuBLAS/cuBLASLt, with accuracy",
    config=Config, run=run, params=PARAMS, validate=validate, table=table, report=REPORT,
    smoke=("gemm.shapes=custom", "gemm.custom=[[48,40,160]]"),
    planned=planned,
    case_id=case_id,
    param_defaults={"pass": "fprop"},  # runs made before gemm.passes existed measured the forward GEMM
)
