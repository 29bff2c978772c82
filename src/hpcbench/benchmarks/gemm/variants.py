"""The GEMM variants the gemm benchmark compares: Triton kernels and torch (cuBLAS/cuBLASLt) baselines.

Each variant is prepared once per shape, outside any timed region: weights (B) are quantized
offline, as in training with cached FP8 weights, and the activations (A) are quantized once for
the accuracy check. Timed callables then cover the GEMM alone, the activation quantization alone,
and both back to back (end to end).

Each prepared variant names its accumulation mode (`hpcbench.measure.accuracy`: fp32 | fast |
fp32_promote_k128), which sets the tolerance it is checked against. FP8 MMAs on Ada (sm_89) and
Hopper (sm_90) both keep a reduced-precision accumulator: any FP8 dot that never promotes on a GPU
is "fast", whatever the architecture; only the CPU paths (the Triton interpreter, CPU
`torch._scaled_mm`) accumulate in full FP32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from hpcbench.measure.accuracy import FAST, FP32, PROMOTED_K128

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


@dataclass(frozen=True)
class Variant:
    kernel: str  # row label; torch_* are torch.matmul (cuBLAS) and torch._scaled_mm (cuBLASLt) on CUDA
    backend: str  # "triton" | "torch"
    dtype: str  # "bf16" | "fp8"
    scaling: str  # "none" | "tensor" | "row" | "block"
    # torch._scaled_mm's use_fast_accum for tensor- and row-wise torch variants (gemm.scaled_mm_accum:
    # fast -> True, fp32 -> False, the latter named *_fp32acc); None where there is no such choice
    fast_accum: bool | None = None


# Order matters: each shape runs the torch baselines before the Triton kernel of the same recipe,
# and the BF16 pair before FP8, so speedup columns can be filled as rows are written.
ALL_VARIANTS = [
    Variant("torch_bf16", "torch", "bf16", "none"),
    Variant("triton_bf16", "triton", "bf16", "none"),
    Variant("torch_fp8_tensor", "torch", "fp8", "tensor", fast_accum=True),
    Variant("torch_fp8_tensor_fp32acc", "torch", "fp8", "tensor", fast_accum=False),
    Variant("triton_fp8_tensor", "triton", "fp8", "tensor"),
    Variant("torch_fp8_row", "torch", "fp8", "row", fast_accum=True),
    Variant("torch_fp8_row_fp32acc", "torch", "fp8", "row", fast_accum=False),
    Variant("triton_fp8_row", "triton", "fp8", "row"),
    Variant("torch_fp8_block", "torch", "fp8", "block"),  # cuBLASLt 1x128 / 128x128 (CUDA >= 12.9, sm_90)
    Variant("triton_fp8_block", "triton", "fp8", "block"),
]


@dataclass
class Prepared:
    gemm: Callable[[], torch.Tensor]  # the GEMM on prepared inputs
    quantize_act: Callable[[], object] | None  # activation quantization alone (FP8 only)
    end_to_end: Callable[[], torch.Tensor] | None  # quantize activations, then GEMM
    dequantized_ref: Callable[[], torch.Tensor] | None  # float64 reference from the FP8 inputs
    accumulation: str
    # the Triton kernel implementation the GEMM launches (hpcbench.kernels.select: "tma_persistent"
    # on Hopper, "pointer" elsewhere); None for the torch baselines
    kernel_impl: str | None = None


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

def torch_quantize(x: torch.Tensor, scaling: str, block_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """What a torch user writes: amax, scale = amax / 448, divide, saturate, cast.

    scaling "block": one scale per `block_rows` x 128 block (1: activation tiles, 128: weight
    blocks), shape (ceil(rows / block_rows), ceil(cols / 128)); edges padded with zeros."""
    if scaling == "block":
        return _torch_quantize_blocks(x, block_rows)
    xf = x.float()
    amax = xf.abs().amax(dim=1, keepdim=True) if scaling == "row" else xf.abs().amax()
    scale = amax.clamp_min(1e-12) / FP8_MAX
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def _torch_quantize_blocks(x: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    R, C = x.shape
    rb, cb = math.ceil(R / rows), math.ceil(C / 128)
    xf = torch.zeros(rb * rows, cb * 128, dtype=torch.float32, device=x.device)
    xf[:R, :C] = x.float()
    blocks = xf.view(rb, rows, cb, 128)
    scale = blocks.abs().amax(dim=(1, 3)).clamp_min(1e-12) / FP8_MAX  # (rb, cb)
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q.view(rb * rows, cb * 128)[:R, :C].contiguous(), scale


def prepare_torch(v: Variant, a: torch.Tensor, b: torch.Tensor) -> Prepared:
    cpu = a.device.type != "cuda"
    if v.dtype == "bf16":
        return Prepared(lambda: torch.matmul(a, b.t()), None, None, None, FP32)
    if not hasattr(torch, "_scaled_mm"):
        raise NotSupported("this torch has no torch._scaled_mm")
    if v.scaling == "block":
        return _prepare_torch_block(a, b)
    fast_accum = bool(v.fast_accum)
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
    # the CPU implementation ignores use_fast_accum and accumulates in FP32; cuBLASLt without fast
    # accumulation promotes the tensor-core sums to FP32 every 128 of K
    accumulation = FP32 if cpu else (FAST if fast_accum else PROMOTED_K128)
    return Prepared(
        gemm=lambda: scaled_mm(aq, sa),
        quantize_act=lambda: torch_quantize(a, v.scaling),
        end_to_end=lambda: scaled_mm(*torch_quantize(a, v.scaling)),
        dequantized_ref=_reference_from(aq, sa, bq, sb, v.scaling),
        accumulation=accumulation,
    )


def _cublas_block_scale_a(sa: torch.Tensor) -> torch.Tensor:
    """torch's layout for 1x128 scales of A (M, K): shape (M, K/128), stride (1, M)."""
    return sa.t().contiguous().t()


def _cublas_block_scale_b(sb: torch.Tensor) -> torch.Tensor:
    """torch's layout for 128x128 scales of B^T (K, N), B (N, K): shape (round_up(K/128, 4), N/128),
    the transpose of a contiguous (N/128, round_up(K/128, 4)) tensor (the padding is never read)."""
    nb, kb = sb.shape
    padded = torch.ones(nb, 4 * math.ceil(kb / 4), dtype=sb.dtype, device=sb.device)
    padded[:, :kb] = sb
    return padded.t()


def _prepare_torch_block(a: torch.Tensor, b: torch.Tensor) -> Prepared:
    """DeepSeek-V3's recipe through cuBLASLt: 1x128 activation tiles, 128x128 weight blocks
    (torch built with CUDA >= 12.9, on sm_90). Elsewhere NotSupported, with torch's reason
    (torch 2.13's CPU implementation refuses block-wise scales: "Invalid scaling configuration")."""
    bq, sb = torch_quantize(b, "block", block_rows=128)
    aq, sa = torch_quantize(a, "block", block_rows=1)
    scale_b = _cublas_block_scale_b(sb)
    F = torch.nn.functional

    def scaled_mm(aq, sa):
        scale_a = _cublas_block_scale_a(sa)
        if hasattr(F, "scaled_mm") and hasattr(F, "ScalingType"):  # torch >= 2.10: explicit recipes
            return F.scaled_mm(aq, bq.t(), scale_a, F.ScalingType.BlockWise1x128,
                               scale_b, F.ScalingType.BlockWise128x128, output_dtype=torch.bfloat16)
        return torch._scaled_mm(aq, bq.t(), scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)

    try:
        scaled_mm(aq, sa)
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        where = (f"sm_{''.join(map(str, torch.cuda.get_device_capability(a.device)))}, CUDA {torch.version.cuda}"
                 if a.device.type == "cuda" else a.device.type)
        raise NotSupported(f"block-wise _scaled_mm needs a torch built with CUDA >= 12.9, on sm_90; torch "
                           f"{torch.__version__} on {where}: {str(exc).splitlines()[0]}") from exc

    def quantize_act():
        return torch_quantize(a, "block", block_rows=1)

    return Prepared(
        gemm=lambda: scaled_mm(aq, sa),
        quantize_act=quantize_act,
        end_to_end=lambda: scaled_mm(*quantize_act()),
        dequantized_ref=_reference_from(aq, sa, bq, sb, "block"),
        accumulation=PROMOTED_K128,  # the scales are applied per 128 of K, in FP32
    )


# ---- Triton kernels ---------------------------------------------------------------------------

def prepare_triton(v: Variant, a: torch.Tensor, b: torch.Tensor) -> Prepared:
    from hpcbench.kernels import matmul as mm
    from hpcbench.kernels import matmul_fp8_block as block
    from hpcbench.kernels import quantize

    if v.dtype == "bf16":
        return Prepared(lambda: mm.matmul(a, b), None, None, None, FP32, kernel_impl=mm.kernel_impl(a, b))
    if v.scaling == "block":
        quant_a, quant_b = quantize.quantize_1x128, quantize.quantize_128x128
        impl_of = block.kernel_impl

        def run(aq, sa):
            return block.matmul_fp8_block(aq, bq, sa, sb)

        accumulation = PROMOTED_K128
    else:
        quant_a = quant_b = quantize.quantize_tensorwise if v.scaling == "tensor" else quantize.quantize_rowwise
        impl_of = mm.kernel_impl

        def run(aq, sa):
            return mm.matmul(aq, bq, sa, sb, scaling=v.scaling)

        accumulation = fp8_dot_accumulation(a.device)
    bq, sb = quant_b(b)
    aq, sa = quant_a(a)
    return Prepared(
        gemm=lambda: run(aq, sa),
        quantize_act=lambda: quant_a(a),
        end_to_end=lambda: run(*quant_a(a)),
        dequantized_ref=_reference_from(aq, sa, bq, sb, v.scaling),
        accumulation=accumulation,
        kernel_impl=impl_of(aq, bq),
    )


def fp8_dot_accumulation(device: torch.device) -> str:
    """The accumulation of a Triton FP8 `tl.dot` with no promotion in the kernel: "fast" on any
    GPU (Hopper's default max_num_imprecise_acc=2**30 never promotes; Ada's FP8 mma.sync has the
    same reduced accumulator and Triton never promotes there), "fp32" in the CPU interpreter."""
    return FAST if device.type == "cuda" else FP32


class NotSupported(Exception):
    """The variant cannot run here (recorded as a skip with this reason)."""
