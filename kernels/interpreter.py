"""Defects of Triton's CPU interpreter (TRITON_INTERPRET=1) and the narrow workarounds for them.

Known in triton 3.9's interpreter, each probed here on a tiny input rather than assumed:
  bf16_dot            tl.dot on bfloat16 operands multiplies the raw bit patterns (garbage).
  fp8_cast_rounding   float32 -> float8e4nv drops the carry at binade edges (126.24 -> 64, not 128).
  bf16_cast_rounding  float32 -> bfloat16 truncates instead of rounding to nearest even.
The workarounds apply only when interpreting *and* the probe finds the defect; compiled GPU code
never takes them:
  bf16_dot            the kernel upcasts its bf16 tiles to fp32 before tl.dot (DOT_IN_FP32).
  *_cast_rounding     the kernel stores into a float32 buffer and torch performs the final cast.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _probe_dot(a_ptr, b_ptr, c_ptr):
    offs = tl.arange(0, 16)
    a = tl.load(a_ptr + offs[:, None] * 16 + offs[None, :])
    b = tl.load(b_ptr + offs[:, None] * 16 + offs[None, :])
    tl.store(c_ptr + offs[:, None] * 16 + offs[None, :], tl.dot(a, b))


@triton.jit
def _probe_cast(x_ptr, y_ptr, n):
    offs = tl.arange(0, 16)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, x.to(y_ptr.dtype.element_ty), mask=mask)


def _cast_is_wrong(dtype: torch.dtype, values: list[float]) -> bool:
    x = torch.zeros(16, dtype=torch.float32)
    x[: len(values)] = torch.tensor(values)
    y = torch.empty(16, dtype=dtype)
    _probe_cast[(1,)](x, y, len(values))
    return not torch.equal(y.float()[: len(values)], x[: len(values)].to(dtype).float())


@functools.cache
def defects() -> dict[str, bool]:
    """Which known interpreter defects this Triton has (all False when not interpreting)."""
    if not interpreting():
        return {"bf16_dot": False, "fp8_cast_rounding": False, "bf16_cast_rounding": False}
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(16, 16, generator=gen).bfloat16()
    b = torch.randn(16, 16, generator=gen).bfloat16()
    c = torch.empty(16, 16)
    _probe_dot[(1,)](a, b, c)
    ref = a.float() @ b.float()
    return {
        "bf16_dot": not torch.allclose(c, ref, rtol=1e-4, atol=1e-4),
        "fp8_cast_rounding": _cast_is_wrong(torch.float8_e4m3fn, [126.24, -126.24, 0.3, 3.1, 447.9]),
        "bf16_cast_rounding": _cast_is_wrong(torch.bfloat16, [58.25, -87.4, 1.00390625 + 2**-10, 3.14159]),
    }


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """Whether a kernel must upcast `dtype` tiles to fp32 before tl.dot (interpreter bf16 defect)."""
    return dtype == torch.bfloat16 and defects()["bf16_dot"]


def store_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the buffer a kernel stores into, so that the final cast to `dtype` is correct."""
    if dtype == torch.bfloat16 and defects()["bf16_cast_rounding"]:
        return torch.float32
    if dtype == torch.float8_e4m3fn and defects()["fp8_cast_rounding"]:
        return torch.float32
    return dtype
