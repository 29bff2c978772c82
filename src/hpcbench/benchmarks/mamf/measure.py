"""One MAMF point: C = A @ B^T for one shape and dtype, checked against float64, then timed.

Layout as in mamf-finder: A is (M, K) row-major, B is (N, K) row-major used through its transposed
view, C (M, N) is preallocated and written in place, so the timed call allocates nothing.
- bf16: torch.mm (cuBLAS on a GPU).
- fp8: torch._scaled_mm on E4M3 inputs with per-tensor scales of 1.0 (cuBLASLt), BF16 output and
  the default FP32-promoted accumulation (use_fast_accum=False, as mamf-finder calls it).
  mamf-finder writes an FP8 C; a BF16 C is what FP8 training GEMMs produce, and it can be checked
  against float64 with a tight tolerance. For these compute-bound shapes C's bytes are a small
  share of the traffic.
Inputs are random normal (never zeros: constant data runs faster on Hopper).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hpcbench.measure.accuracy import calc_diff
from hpcbench.api.errors import ImpossibleMeasurement
from hpcbench.models.hardware import peak_tflops, supports_fp8
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.measure.timing import tflops, time_fn, timed_columns

ELEMENT_BYTES = {"bf16": 2, "fp8": 1}
_TORCH_DTYPE = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}


@dataclass
class Prepared:
    a: torch.Tensor  # (M, K) in the dtype measured
    b: torch.Tensor  # (N, K) in the dtype measured
    call: Callable[[], torch.Tensor]  # writes C = A @ B^T into the preallocated output and returns it


def base_row(M: int, N: int, K: int, dtype: str) -> dict:
    return {"record": "point", "M": M, "N": N, "K": K, "dtype": dtype, "flops": 2 * M * N * K, "out_dtype": "bf16"}


def bytes_needed(M: int, N: int, K: int, dtype: str) -> int:
    """Peak memory of a point: the float32 draws, the inputs, their float64 copies, C, the reference."""
    inputs = (M * K + N * K) * (4 + ELEMENT_BYTES[dtype] + 8)
    return inputs + M * N * (2 + 8 + 8)


def _probe_scaled_mm(device: torch.device) -> str | None:
    """None when torch._scaled_mm runs here, else why not (one line)."""
    try:
        a = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
        b = torch.ones(16, 32, device=device).to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return f"torch._scaled_mm does not run on {device.type}: {first}"
    return None


_probed: dict[str, str | None] = {}


def skip_reason(dtype: str, device) -> str | None:
    """Why `dtype` cannot be measured on this device (DeviceInfo), or None."""
    if dtype != "fp8":
        return None
    if device.kind == "cuda" and not supports_fp8(device.capability):
        cc = ".".join(map(str, device.capability))
        return f"FP8 needs compute capability >= 8.9, this GPU has {cc}"
    key = str(device.torch_device)
    if key not in _probed:
        _probed[key] = _probe_scaled_mm(device.torch_device)
    return _probed[key]


def prepare(M: int, N: int, K: int, dtype: str, seed: int, device: torch.device) -> Prepared:
    gen = torch.Generator(device=device).manual_seed(seed + M * 1_000_003 + N * 1009 + K)
    a = torch.randn(M, K, device=device, generator=gen).to(_TORCH_DTYPE[dtype])
    b = torch.randn(N, K, device=device, generator=gen).to(_TORCH_DTYPE[dtype])
    out = torch.empty(M, N, device=device, dtype=torch.bfloat16)
    bt = b.t()  # a view: B stays (N, K) row-major, the layout cuBLASLt's FP8 path requires
    if dtype == "bf16":
        def call():
            return torch.mm(a, bt, out=out)
    else:
        one = torch.ones((), device=device)  # per-tensor scales of 1.0 (prepared outside the timed call)

        def call():
            return torch._scaled_mm(a, bt, scale_a=one, scale_b=one, out_dtype=torch.bfloat16, out=out)
    return Prepared(a, b, call)


def check(prepared: Prepared, tolerance: float) -> tuple[float, str | None]:
    """calc_diff of C against the float64 product of the same (BF16 or E4M3) inputs, and the failure."""
    out = prepared.call()
    reference = prepared.a.double() @ prepared.b.double().T
    diff = calc_diff(out, reference)
    del reference
    if not diff <= tolerance:  # also catches NaN
        return diff, f"calc_diff {diff:.3g} > tolerance {tolerance:g} against float64"
    return diff, None


def measure(M: int, N: int, K: int, dtype: str, cfg, ctx) -> dict:
    """The row of one point: skipped (with the reason), failed (the check or an impossible time), or ok."""
    row = base_row(M, N, K, dtype)
    ctx.heartbeat(f"mamf {dtype} {M}x{N}x{K}")
    reason = skip_reason(dtype, ctx.device)
    free = ctx.device.free_memory()
    if reason is None and free is not None and bytes_needed(M, N, K, dtype) > 0.9 * free:
        reason = (f"needs ~{bytes_needed(M, N, K, dtype) / 2**30:.1f} GiB, "
                  f"{free / 2**30:.1f} GiB free on {ctx.device.kind}")
    if reason:
        return {**row, "status": STATUS_SKIPPED, "reason": reason}
    tolerance = cfg.tol_bf16 if dtype == "bf16" else cfg.tol_fp8
    try:
        prepared = prepare(M, N, K, dtype, cfg.seed, ctx.device.torch_device)
        diff, failure = check(prepared, tolerance)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {**row, "status": STATUS_SKIPPED, "reason": "out of device memory"}
    except RuntimeError as exc:  # e.g. cuBLASLt's FP8 path refuses sizes that are not multiples of 16
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return {**row, "status": STATUS_SKIPPED, "reason": f"torch refused the shape: {first}"}
    row.update(calc_diff=diff, tolerance=tolerance)
    if failure:
        return {**row, "status": STATUS_FAILED, "reason": failure}
    timing = time_fn(prepared.call, ctx.device.torch_device, ctx.timing)
    row.update(timed_columns(timing.samples_s, timing.method))
    peak = None if ctx.device.fallback else peak_tflops(ctx.device.name, dtype)
    try:
        row["tflops"] = tflops(row["flops"], timing.stats.median_s, peak)
        row["tflops_max"] = tflops(row["flops"], timing.stats.min_s, peak)  # mamf-finder's "max": the fastest call
    except ImpossibleMeasurement as exc:
        return {**row, "status": STATUS_FAILED, "reason": str(exc)}
    row["peak_tflops"] = peak
    row["pct_peak"] = 100 * row["tflops"] / peak if peak else None
    return {**row, "status": STATUS_OK, "reason": None}


def accelerator_warmup(seconds: float, M: int, N: int, K: int, dtype: str, cfg, ctx) -> float:
    """Run one shape's matmul back to back for `seconds`, so that the sweep starts with the clocks
    and temperature a sustained load settles at (mamf-finder's 30 s on its first shape); returns
    the seconds spent. Nothing of it is recorded as a measurement."""
    if seconds <= 0:
        return 0.0
    device = ctx.device.torch_device
    prepared = prepare(M, N, K, dtype, cfg.seed, device)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):  # a few launches per host check, so the queue never runs dry or grows long
            prepared.call()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ctx.heartbeat()
    return time.perf_counter() - start
