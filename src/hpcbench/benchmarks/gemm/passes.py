"""The three training GEMMs of a linear layer Y = X @ W^T, each as C = A @ B^T with K-major A and B.

    X (M, K) activations, W (N, K) weights, dY (M, N) the gradient of Y.

    pass   computes              A (rows, k)   B (cols, k)   C          contraction
    fprop  Y  = X  W^T           X   (M, K)    W   (N, K)    (M, N)     K  (in-features)
    dgrad  dX = dY W             dY  (M, N)    W^T (K, N)    (M, K)     N  (out-features)
    wgrad  dW = dY^T X           dY^T (N, M)   X^T (K, M)    (N, K)     M  (tokens)

FLOPs are 2MNK in every pass. FP8 operands must be K-major (cuBLASLt's "TN" layout, FP8 wgmma):
every FP8 pass other than fprop first re-lays out or re-quantizes some of its operands, and that
work is timed with the pass's quantization (`quant_median_s`, and end to end):

  recipe  scale axis                        dgrad                         wgrad
  tensor  one per tensor                    dY cast; W's FP8 copy         FP8 copies of dY and X
                                            transposed                    (cast in dgrad / fprop)
                                                                          transposed
  row     one per row of the K-major        dY cast per row (over N);     dY^T and X^T cast per
          operand: the pass's contraction   W^T re-quantized per row      row (over M) from BF16
                                            from BF16                     transposes
  block   DeepSeek-V3: A in 1x128 tiles,    dY in 1x128 tiles; W's FP8    dY and X in 128x1 tiles
          B in 128x128 blocks (fprop,       128x128 blocks transposed     (1x128 along M of dY^T
          dgrad) or 1x128 tiles (wgrad)     (block scales survive the     and X^T), transpose fused
                                            transpose)                    into the cast ("1D1D")

The rule behind the table: a tensor needed in a layout other than the one it was first quantized
in is transposed as FP8 where its scales survive the transpose (per tensor, 128x128 blocks), and
re-quantized from BF16 along the new axis where they do not (per row, 1x128 tiles). Each tensor's
first quantization is charged to the pass that first reads it (X to fprop, dY to dgrad); the
weight's quantization in its forward layout is done once per step and, as in fprop, not charged
to any pass (FP8 weights cached for the step).

The BF16 baselines read whatever layout they are given: torch.matmul takes the transposed views
as they are (cuBLAS handles any layout at full speed); the Triton BF16 kernel gets contiguous
K-major copies made outside any timed region, its best case, so FP8's speedup is not flattered.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hpcbench.measure.accuracy import FAST, FP32, PROMOTED_K128
from hpcbench.benchmarks.gemm.variants import (
    NotSupported,
    Prepared,
    Variant,
    _cublas_block_scale_a,
    _cublas_block_scale_b,
    dequantize,
    fp8_dot_accumulation,
    torch_quantize,
)

FPROP, DGRAD, WGRAD = "fprop", "dgrad", "wgrad"
PASSES = (FPROP, DGRAD, WGRAD)


def gemm_dims(pass_name: str, M: int, N: int, K: int) -> tuple[int, int, int]:
    """(rows, cols, contraction) of the pass's C = A @ B^T for the layer shape (M, N, K)."""
    return {FPROP: (M, N, K), DGRAD: (M, K, N), WGRAD: (N, K, M)}[pass_name]


def contraction(pass_name: str, M: int, N: int, K: int) -> int:
    """The reduction length: what the accumulation error (and its tolerance) grows with."""
    return gemm_dims(pass_name, M, N, K)[2]


def operands(pass_name: str, x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The BF16 (A, B) of the pass, as views (A (rows, k), B (cols, k))."""
    if pass_name == FPROP:
        return x, w
    if pass_name == DGRAD:
        return dy, w.t()
    if pass_name == WGRAD:
        return dy.t(), x.t()
    raise ValueError(pass_name)


def reference(pass_name: str, x, w, dy) -> torch.Tensor:
    """float64 result of the pass on the original inputs."""
    a, b = operands(pass_name, x, w, dy)
    return a.double() @ b.double().T


# ---- quantizers per backend -------------------------------------------------------------------
#
# kinds: tensor (one scale), row (one per row), tile (1x128 along the row), block (128x128),
# tile_t (x (M, C) -> x^T (C, M) in 1x128 tiles along M: 128x1 tiles of x, transpose fused)

def _triton_quantizers() -> dict[str, Callable]:
    from hpcbench.kernels import quantize as q

    return {"tensor": q.quantize_tensorwise, "row": q.quantize_rowwise, "tile": q.quantize_1x128,
            "block": q.quantize_128x128, "tile_t": q.quantize_128x1}


def _torch_quantizers() -> dict[str, Callable]:
    return {"tensor": lambda x: torch_quantize(x, "tensor"), "row": lambda x: torch_quantize(x, "row"),
            "tile": lambda x: torch_quantize(x, "block", block_rows=1),
            "block": lambda x: torch_quantize(x, "block", block_rows=128),
            "tile_t": lambda x: torch_quantize(transposed(x), "block", block_rows=1)}


def transposed(t: torch.Tensor) -> torch.Tensor:
    """t^T as a new row-major tensor (strides (rows, 1) even where a dimension is 1, which
    .contiguous() leaves as it is): one read and one write of t."""
    out = torch.empty((t.shape[1], t.shape[0]), dtype=t.dtype, device=t.device)
    return out.copy_(t.t())


def _fp8_transpose(q: torch.Tensor, scale: torch.Tensor, scaling: str):
    """An FP8 tensor (and its scales, when they are per block) transposed to K-major: the scales of
    a whole tensor and of 128x128 blocks stay valid under transposition."""
    return transposed(q), (transposed(scale) if scaling == "block" else scale)


def quantizers(backend: str) -> dict[str, Callable]:
    return _triton_quantizers() if backend == "triton" else _torch_quantizers()


def cast_plan(pass_name: str, scaling: str, quant: dict[str, Callable], x, w, dy):
    """(setup, cast): setup() runs untimed once and returns the state cast needs (FP8 copies an
    earlier pass or the step's weight quantization made); cast(state) is the pass's timed work,
    returning (aq, sa, bq, sb) in the layouts the GEMM reads. (dequantize() tells 1x128 tiles
    from 128x128 blocks by the scale's shape, so the block recipe needs no third name.)"""
    act = {"tensor": "tensor", "row": "row", "block": "tile"}[scaling]
    if pass_name == DGRAD:
        if scaling == "row":  # per-row scales of W are along K: re-quantize W^T along N from BF16
            return (lambda: None), (lambda _: (*quant["row"](dy), *quant["row"](transposed(w))))
        weight = "tensor" if scaling == "tensor" else "block"
        return ((lambda: quant[weight](w)),
                lambda wq: (*quant[act](dy), *_fp8_transpose(*wq, scaling)))
    if pass_name == WGRAD:
        if scaling == "tensor":  # dY's FP8 copy from dgrad, X's from fprop: transposed
            return ((lambda: (quant["tensor"](dy), quant["tensor"](x))),
                    lambda s: (*_fp8_transpose(*s[0], "tensor"), *_fp8_transpose(*s[1], "tensor")))
        if scaling == "row":
            return (lambda: None), (lambda _: (*quant["row"](transposed(dy)), *quant["row"](transposed(x))))
        return (lambda: None), (lambda _: (*quant["tile_t"](dy), *quant["tile_t"](x)))
    raise ValueError(pass_name)


# ---- GEMMs ------------------------------------------------------------------------------------

def _triton_gemm(pass_name: str, v: Variant) -> Callable:
    from hpcbench.kernels import matmul as mm
    from hpcbench.kernels import matmul_fp8_block as block

    if v.scaling == "block":
        return block.matmul_fp8_1d1d if pass_name == WGRAD else block.matmul_fp8_block
    return lambda aq, bq, sa, sb: mm.matmul(aq, bq, sa, sb, scaling=v.scaling)


def _torch_gemm(pass_name: str, v: Variant) -> Callable:
    if v.scaling != "block":
        fast = bool(v.fast_accum)

        def scaled_mm(aq, bq, sa, sb):
            sb_t = sb.t() if v.scaling == "row" else sb
            return torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb_t, out_dtype=torch.bfloat16,
                                    use_fast_accum=fast)
        return scaled_mm
    F = torch.nn.functional
    b_type = "BlockWise1x128" if pass_name == WGRAD else "BlockWise128x128"

    def block_mm(aq, bq, sa, sb):
        if not (hasattr(F, "scaled_mm") and hasattr(F, "ScalingType")):
            raise NotSupported("block-wise scaled_mm needs torch >= 2.10 (torch.nn.functional.scaled_mm)")
        scale_b = _cublas_block_scale_a(sb) if pass_name == WGRAD else _cublas_block_scale_b(sb)
        return F.scaled_mm(aq, bq.t(), _cublas_block_scale_a(sa), F.ScalingType.BlockWise1x128,
                           scale_b, getattr(F.ScalingType, b_type), output_dtype=torch.bfloat16)
    return block_mm


def _accumulation(v: Variant, device: torch.device) -> str:
    if v.scaling == "block":
        return PROMOTED_K128
    if v.backend == "triton":
        return fp8_dot_accumulation(device)
    if device.type != "cuda":
        return FP32  # CPU _scaled_mm accumulates in FP32 whatever use_fast_accum says
    return FAST if v.fast_accum else PROMOTED_K128


def prepare_backward(v: Variant, pass_name: str, x, w, dy) -> Prepared:
    """A dgrad or wgrad variant, prepared outside any timed region (see the module notes)."""
    a, b = operands(pass_name, x, w, dy)
    if v.dtype == "bf16":
        if v.backend == "torch":
            return Prepared(lambda: torch.matmul(a, b.t()), None, None, None, FP32)
        from hpcbench.kernels import matmul as mm

        a_c, b_c = transposed(a.t()), transposed(b.t())  # row-major copies
        return Prepared(lambda: mm.matmul(a_c, b_c), None, None, None, FP32, kernel_impl=mm.kernel_impl(a_c, b_c))
    if v.backend == "torch" and not hasattr(torch, "_scaled_mm"):
        raise NotSupported("this torch has no torch._scaled_mm")
    setup, cast = cast_plan(pass_name, v.scaling, quantizers(v.backend), x, w, dy)
    state = setup()
    aq, sa, bq, sb = cast(state)
    raw = (_triton_gemm if v.backend == "triton" else _torch_gemm)(pass_name, v)

    def gemm_of(aq, sa, bq, sb):
        return raw(aq, bq, sa, sb)

    if v.backend == "torch":
        try:
            gemm_of(aq, sa, bq, sb)
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
            where = a.device.type if a.device.type != "cuda" else f"CUDA {torch.version.cuda}"
            raise NotSupported(f"{v.scaling}-wise scaled_mm for {pass_name}: torch {torch.__version__} on {where}: "
                               f"{str(exc).splitlines()[0]}") from exc
    impl = None
    if v.backend == "triton":
        from hpcbench.kernels import matmul_fp8_block as block

        impl = block.kernel_impl(aq, bq)

    def end_to_end():
        return gemm_of(*cast(state))

    return Prepared(
        gemm=lambda: gemm_of(aq, sa, bq, sb),
        quantize_act=lambda: cast(state),
        end_to_end=end_to_end,
        dequantized_ref=lambda: dequantize(aq, sa, v.scaling) @ dequantize(bq, sb, v.scaling).T,
        accumulation=_accumulation(v, a.device),
        kernel_impl=impl,
    )
