"""Quantize BF16/FP32 tensors to FP8 E4M3 with the scales each GEMM recipe needs.

Every scale is a dequantization factor, scale = amax / 448 (448 = largest finite E4M3), so
x ~ q * scale, as torch._scaled_mm and the DeepSeek-V3 kernels expect. Quantization is online:
the current amax of each group, no delayed scaling.

  quantize_tensorwise  one scale for the whole tensor             scale shape ()
  quantize_rowwise     one scale per row                          scale shape (M,)
  quantize_1x128       one scale per row per 128 columns (acts)   scale shape (M, ceil(K/128)), strides (1, M)
  quantize_128x128     one scale per 128x128 block (weights)      scale shape (ceil(M/128), ceil(K/128))
  quantize_128x1       x (M, C) -> x^T (C, M) in 1x128 tiles along M (128x1 tiles of x), for the
                       weight-gradient GEMM, whose reduction runs over the tokens M
                                                                  scale shape (C, ceil(M/128)), strides (1, C)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from hpcbench.kernels.interpreter import interpreting, store_dtype

FP8_DTYPE = torch.float8_e4m3fn
# In the kernels: 448.0 is the largest finite E4M3 value, and amax is floored at 1e-12 so an
# all-zero group gets a tiny scale instead of a division by zero.


@triton.jit
def _scaled_cast(x, scale, q_ptr):
    """x / scale, saturated to the E4M3 range, converted to q's element type."""
    y = tl.math.div_rn(x, scale)
    y = tl.minimum(tl.maximum(y, -448.0), 448.0)
    return y.to(q_ptr.dtype.element_ty)


@triton.jit
def _group_quant_kernel(
    x_ptr, q_ptr, s_ptr, M, K,
    stride_xm, stride_qm, stride_sm, stride_sk,
    BLOCK_R: tl.constexpr, GROUP_K: tl.constexpr, PER_ROW: tl.constexpr,
):
    """One program quantizes a (BLOCK_R, GROUP_K) tile: one scale per row (1x128 tiles) when
    PER_ROW, else one scale for the whole tile (128x128 blocks)."""
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_k * GROUP_K + tl.arange(0, GROUP_K)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    rows64 = rows.to(tl.int64)  # row x stride reaches 2**31 on large inputs: 64-bit offsets
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if PER_ROW:
        amax = tl.max(tl.abs(x), axis=1)
        scale = tl.maximum(amax, 1e-12) / 448.0
        q = _scaled_cast(x, scale[:, None], q_ptr)
        tl.store(s_ptr + rows64 * stride_sm + pid_k * stride_sk, scale, mask=rows < M)
    else:
        amax = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
        scale = tl.maximum(amax, 1e-12) / 448.0
        q = _scaled_cast(x, scale, q_ptr)
        tl.store(s_ptr + pid_r.to(tl.int64) * stride_sm + pid_k * stride_sk, scale)
    tl.store(q_ptr + rows64[:, None] * stride_qm + cols[None, :], q, mask=mask)


@triton.jit
def _transpose_group_quant_kernel(
    x_ptr, q_ptr, s_ptr, M, C,
    stride_xm, stride_qc, stride_sc, stride_sg,
    GROUP_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One program quantizes a (GROUP_M, BLOCK_C) tile of x (M, C) with one scale per column (a
    128x1 tile: 128 tokens of one channel) and stores it transposed, so that q = x^T (C, M) holds
    1x128 tiles along its rows: the layout the weight-gradient GEMM contracts over M in."""
    pid_g = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_g * GROUP_M + tl.arange(0, GROUP_M)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (rows[:, None] < M) & (cols[None, :] < C)
    x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(x), axis=0)
    scale = tl.maximum(amax, 1e-12) / 448.0
    q = _scaled_cast(x, scale[None, :], q_ptr)
    tl.store(s_ptr + cols * stride_sc + pid_g * stride_sg, scale, mask=cols < C)
    # stored as the (BLOCK_C, GROUP_M) transpose, so consecutive lanes write consecutive tokens
    q_ptrs = q_ptr + cols.to(tl.int64)[:, None] * stride_qc + rows[None, :]
    tl.store(q_ptrs, tl.trans(q), mask=tl.trans(mask))


@triton.jit
def _row_amax_kernel(x_ptr, amax_ptr, M, K, stride_xm, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """amax of each row, over a 2-D grid of (BLOCK_R rows) x (BLOCK_K columns) tiles: every tile
    folds its rows' maxima into amax_ptr (zeroed first) with atomic max, so that small M still
    spreads over the GPU (M = 1 with K = 7168: 56 programs, not 1). The values are >= 0, and an
    atomic max of floats is exact, so the result does not depend on the order."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    row_ptrs = x_ptr + rows.to(tl.int64)[:, None] * stride_xm  # 64-bit offsets, as in matmul.py
    x = tl.load(row_ptrs + cols[None, :], mask=mask, other=0.0)
    tl.atomic_max(amax_ptr + rows, tl.max(tl.abs(x.to(tl.float32)), axis=1), mask=rows < M)


@triton.jit
def _amax_cast_kernel(
    x_ptr, q_ptr, amax_ptr, s_ptr, M, K, stride_xm, stride_qm,
    PER_ROW: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Cast with scale = amax / 448, amax per row (PER_ROW) or one for the tensor; the first
    column of programs also stores the scales."""
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    rows64 = rows.to(tl.int64)  # 64-bit offsets, as in matmul.py
    x = tl.load(x_ptr + rows64[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if PER_ROW:
        scale = tl.maximum(tl.load(amax_ptr + rows, mask=rows < M, other=1.0), 1e-12) / 448.0
        q = _scaled_cast(x, scale[:, None], q_ptr)
        if pid_k == 0:
            tl.store(s_ptr + rows, scale, mask=rows < M)
    else:
        scale = tl.maximum(tl.load(amax_ptr), 1e-12) / 448.0
        q = _scaled_cast(x, scale, q_ptr)
        if (pid_r == 0) & (pid_k == 0):
            tl.store(s_ptr, scale)
    tl.store(q_ptr + rows64[:, None] * stride_qm + cols[None, :], q, mask=mask)


def _check_input(x: torch.Tensor) -> None:
    # a one-column tensor's column stride is never read (torch keeps any stride on a size-1 dim)
    if x.ndim != 2 or (x.stride(1) != 1 and x.shape[1] > 1):
        raise ValueError(f"need a 2-D tensor with contiguous rows, got shape {tuple(x.shape)}")


def _finish(q: torch.Tensor) -> torch.Tensor:
    return q if q.dtype == FP8_DTYPE else q.to(FP8_DTYPE)


def _elementwise_blocks(interpret: bool | None = None) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_K) of the amax and cast kernels."""
    return (64, 128) if (interpreting() if interpret is None else interpret) else (32, 128)


def _group_block_r(per_row: bool, interpret: bool | None = None) -> int:
    """BLOCK_R of the 1x128 (per_row) and 128x128 quantizers."""
    if not per_row:
        return 128
    return 64 if (interpreting() if interpret is None else interpret) else 32


def _transpose_block_c(interpret: bool | None = None) -> int:
    """BLOCK_C (channels per program) of the 128x1 quantizer."""
    return 128 if (interpreting() if interpret is None else interpret) else 64


def transpose_quant_launches() -> list[tuple[str, dict]]:
    """(kernel, constexprs) of quantize_128x1's launch on a GPU, for `hpcbench compile-kernels`
    (kept apart from compiled_launches until the checker knows its operand types)."""
    return [("_transpose_group_quant_kernel", {"GROUP_M": 128, "BLOCK_C": _transpose_block_c(interpret=False),
                                               "stride_sc": 1})]


def compiled_launches() -> list[tuple[str, dict]]:
    """(kernel, constexprs) of every launch the wrappers above make on a GPU, for
    `hpcbench compile-kernels` (num_warps and num_stages are Triton's defaults)."""
    block_r, block_k = _elementwise_blocks(interpret=False)
    return [
        ("_row_amax_kernel", {"BLOCK_R": block_r, "BLOCK_K": block_k}),
        *[("_amax_cast_kernel", {"PER_ROW": per_row, "BLOCK_R": block_r, "BLOCK_K": block_k})
          for per_row in (False, True)],
        # the unit scale stride: along M for the K-major 1x128 scales, along K for the 128x128 ones
        *[("_group_quant_kernel", {"BLOCK_R": _group_block_r(per_row, interpret=False), "GROUP_K": 128,
                                   "PER_ROW": per_row, "stride_sm" if per_row else "stride_sk": 1})
          for per_row in (True, False)],
    ]


def _amax_cast(x: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_input(x)
    M, K = x.shape
    block_r, block_k = _elementwise_blocks()
    amax = torch.zeros(M, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(M, block_r), triton.cdiv(K, block_k))
    _row_amax_kernel[grid](x, amax, M, K, x.stride(0), BLOCK_R=block_r, BLOCK_K=block_k)
    if not per_row:
        amax = amax.max()  # a reduction over M values: negligible next to the M*K passes
    q = torch.empty((M, K), device=x.device, dtype=store_dtype(FP8_DTYPE))
    scale = torch.empty(M if per_row else (), device=x.device, dtype=torch.float32)
    _amax_cast_kernel[grid](x, q, amax, scale, M, K, x.stride(0), q.stride(0),
                            PER_ROW=per_row, BLOCK_R=block_r, BLOCK_K=block_k)
    return _finish(q), scale


def quantize_tensorwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _amax_cast(x, per_row=False)


def quantize_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _amax_cast(x, per_row=True)


def _group_quant(x: torch.Tensor, per_row: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_input(x)
    M, K = x.shape
    block_r = _group_block_r(per_row)
    kg = triton.cdiv(K, 128)
    q = torch.empty((M, K), device=x.device, dtype=store_dtype(FP8_DTYPE))
    if per_row:  # K-major: the M scales of one K group are contiguous (see quantize_1x128)
        scale = torch.empty((kg, M), device=x.device, dtype=torch.float32).t()
    else:
        scale = torch.empty((triton.cdiv(M, 128), kg), device=x.device, dtype=torch.float32)
    _group_quant_kernel[(triton.cdiv(M, block_r), kg)](
        x, q, scale, M, K, x.stride(0), q.stride(0), scale.stride(0), scale.stride(1),
        BLOCK_R=block_r, GROUP_K=128, PER_ROW=per_row,
    )
    return _finish(q), scale


def quantize_1x128(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation tiles: one scale per row per 128 columns, shape (M, K/128) laid out K-major
    (strides (1, M)), so that the GEMM reads a block of rows' scales for one K group with one
    coalesced load; torch's and cuBLASLt's block-wise scaled_mm take the same layout."""
    return _group_quant(x, per_row=True)


def quantize_128x128(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight blocks: one scale per 128x128 block."""
    return _group_quant(w, per_row=False)


def quantize_128x1(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, C) -> (q, scale): q = x^T (C, M), contiguous, with one scale per channel per 128 tokens
    (DeepSeek-V3's 128x1 tiles of x, i.e. 1x128 tiles along q's rows); scale (C, ceil(M/128)),
    laid out K-major (strides (1, C)) like quantize_1x128's, for the same coalesced loads.

    The transpose is fused into the cast: one read of x and one write of q, as the weight-gradient
    GEMM dW = dY^T X needs both dY and X contracted over the tokens M."""
    _check_input(x)
    M, C = x.shape
    groups = triton.cdiv(M, 128)
    block_c = _transpose_block_c()
    q = torch.empty((C, M), device=x.device, dtype=store_dtype(FP8_DTYPE))
    scale = torch.empty((groups, C), device=x.device, dtype=torch.float32).t()
    _transpose_group_quant_kernel[(groups, triton.cdiv(C, block_c))](
        x, q, scale, M, C, x.stride(0), q.stride(0), scale.stride(0), scale.stride(1),
        GROUP_M=128, BLOCK_C=block_c,
    )
    return _finish(q), scale
