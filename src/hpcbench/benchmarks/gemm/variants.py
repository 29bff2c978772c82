"""The GEMM variants the gemm benchmark compares: Triton kernels and torch (cuBLAS/cuBLASLt) baselines.

Each variant is prepared once per shape, outside any timed region: weights (B) are quantized
offline, as in training with cached FP8 weights, and the activations (A) are quantized once for
the accuracy check. Timed callables then cover the GEMM alone, the activation quantization alone,
and both back to back (end to end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


@dataclass(frozen=True)
class Variant:
    kernel: str  # row label; torch_* are torch.matmul (cuBLAS) and torch._scaled_mm (cuBLASLt) on CUDA
    backend: str  # "triton" | "torch"
    dtype: str  # "bf16" | "fp8"
    scaling: str  # "none" | "tensor" | "row" | "block"


# Order matters: each shape runs the torch baseline before the Triton kernel of the same recipe,
# and the BF16 pair before FP8, so speedup columns can be filled as rows are written.
ALL_VARIANTS = [
    Variant("torch_bf16", "torch", "bf16", "none"),
    Variant("triton_bf16", "triton", "bf16", "none"),
    Variant("torch_fp8_tensor", "torch", "fp8", "tensor"),
    Variant("triton_fp8_tensor", "triton", "fp8", "tensor"),
    Variant("torch_fp8_row", "torch", "fp8", "row"),
    Variant("triton_fp8_row", "triton", "fp8", "row"),
    Variant("triton_fp8_block", "triton", "fp8", "block"),
]


@dataclass
class Prepared:
    gemm: Callable[[], torch.Tensor]  # the GEMM on prepared inputs
    quantize_act: Callable[[], object] | None  # activation quantization alone (FP8 only)
    end_to_end: Callable[[], torch.Tensor] | None  # quantize activations, then GEMM
    dequantized_ref: Callable[[], torch.Tensor] | None  # float64 reference from the FP8 inputs
    accumulation: str


def expand_scale(scale: torch.Tensor, rows: int, cols: int, scaling: str) -> torch.Tensor:
    """A dequantization scale broadcast to a (rows, cols) float64 tensor."""
    s = scale.double()
    if scaling == "tensor":
        return s.reshape(1, 1).expand(rows, cols)
    if scaling == "row":
        return s.reshape(rows, 1).expand(rows, cols)
    if scaling == "block":  # (ceil(rows/r), ceil(cols/128)) with r = 1 (tiles) or 128 (blocks)
        r = 1 if s.shape[0] == rows else 128
        return s.repeat_interleave(r, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
    raise ValueError(scaling)


def dequantize(q: torch.Tensor, scale: torch.Tensor, scaling: str) -> torch.Tensor:
    return q.double() * expand_scale(scale, q.shape[0], q.shape[1], scaling)


def _reference_from(aq, sa, bq, sb, scaling: str) -> Callable[[], torch.Tensor]:
    return lambda: dequantize(aq, sa, scaling) @ dequantize(bq, sb, scaling).T


# ---- torch baselines --------------------------------------------------------------------------

def torch_quantize(x: torch.Tensor, scaling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """What a torch user writes: amax, scale = amax / 448, divide, saturate, cast."""
    xf = x.float()
    amax = xf.abs().amax(dim=1, keepdim=True) if scaling == "row" else xf.abs().amax()
    scale = amax.clamp_min(1e-12) / FP8_MAX
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def prepare_torch(v: Variant, a: torch.Tensor, b: torch.Tensor, fast_accum: bool) -> Prepared:
    if v.dtype == "bf16":
        return Prepared(lambda: torch.matmul(a, b.t()), None, None, None, "fp32")
    if not hasattr(torch, "_scaled_mm"):
        raise NotSupported("this torch has no torch._scaled_mm")
    bq, sb = torch_quantize(b, v.scaling)
    aq, sa = torch_quantize(a, v.scaling)
    sb_t = sb.t() if v.scaling == "row" else sb  # (1, N) for row-wise, scalar for tensor-wise

    def scaled_mm(aq, sa):
        # B^T of an (N, K) row-major tensor is column-major: the TN layout cuBLASLt needs for FP8
        return torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb_t, out_dtype=torch.bfloat16,
                                use_fast_accum=fast_accum)

    try:
        scaled_mm(aq, sa)
    except (RuntimeError, NotImplementedError) as exc:
        raise NotSupported(f"torch._scaled_mm ({v.scaling}-wise): {str(exc).splitlines()[0]}") from exc
    return Prepared(
        gemm=lambda: scaled_mm(aq, sa),
        quantize_act=lambda: torch_quantize(a, v.scaling),
        end_to_end=lambda: scaled_mm(*torch_quantize(a, v.scaling)),
        dequantized_ref=_reference_from(aq, sa, bq, sb, v.scaling),
        accumulation="fast" if fast_accum else "fp32",
    )


# ---- Triton kernels ---------------------------------------------------------------------------

def prepare_triton(v: Variant, a: torch.Tensor, b: torch.Tensor, hopper: bool) -> Prepared:
    from hpcbench.kernels import quantize
    from hpcbench.kernels.matmul import matmul

    if v.dtype == "bf16":
        return Prepared(lambda: matmul(a, b), None, None, None, "fp32")
    if v.scaling == "block":
        from hpcbench.kernels.matmul_fp8_block import matmul_fp8_block

        quant_a, quant_b = quantize.quantize_1x128, quantize.quantize_128x128

        def run(aq, sa):
            return matmul_fp8_block(aq, bq, sa, sb)

        accumulation = "fp32_promote_k128"
    else:
        quant_a = quant_b = quantize.quantize_tensorwise if v.scaling == "tensor" else quantize.quantize_rowwise

        def run(aq, sa):
            return matmul(aq, bq, sa, sb, scaling=v.scaling)

        # Triton's Hopper default for FP8 dots: no extra promotion (like cuBLAS fast accumulation)
        accumulation = "fast" if hopper else "fp32"
    bq, sb = quant_b(b)
    aq, sa = quant_a(a)
    return Prepared(
        gemm=lambda: run(aq, sa),
        quantize_act=lambda: quant_a(a),
        end_to_end=lambda: run(*quant_a(a)),
        dequantized_ref=_reference_from(aq, sa, bq, sb, v.scaling),
        accumulation=accumulation,
    )


class NotSupported(Exception):
    """The variant cannot run here (recorded as a skip with this reason)."""
