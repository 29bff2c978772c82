"""FP8 E4M3 GEMM with DeepSeek-V3 fine-grained scaling: C = A @ B^T.

A (M, K) is quantized in 1x128 tiles (one scale per row per 128 of K), B (N, K) in 128x128 blocks.
Each 128-wide slice of K is one tl.dot into a fresh FP32 partial sum, which is then scaled by the
tile and block scales and added to the FP32 accumulator: the "promote to FP32 every 128 of K"
recipe of the DeepSeek-V3 report (sec. 3.3), which bounds the tensor cores' limited-precision
accumulation to 128 products.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hpcbench.kernels.interpreter import store_dtype
from hpcbench.kernels.matmul import _check_operands, tile_offsets
from hpcbench.kernels.tuning import fp8_block_configs, smem_pruner

GROUP = 128  # quantization group along K (and along N for the weight blocks)


@triton.autotune(configs=fp8_block_configs(), key=["M", "N", "K"],
                 prune_configs_by={"early_config_prune": smem_pruner()})
@triton.jit
def _matmul_fp8_block_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_asm, stride_ask, stride_bsn, stride_bsk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    tl.static_assert(BLOCK_K == 128, "one K step must be exactly one quantization group")
    offs_m, offs_n = tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = (offs_m % M).to(tl.int64)  # 64-bit offsets: see the note in matmul.py
    cols = (offs_n % N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + cols[None, :] * stride_bn + offs_k[:, None] * stride_bk
    a_scale_ptrs = a_scale_ptr + rows * stride_asm
    b_scale_ptrs = b_scale_ptr + (cols // 128) * stride_bsn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        a_s = tl.load(a_scale_ptrs + k * stride_ask)  # at most (K/128) * M: 32 bits suffice
        b_s = tl.load(b_scale_ptrs + k * stride_bsk)
        partial = tl.dot(a, b)  # FP32 result of 128 products per output
        acc += partial * a_s[:, None] * b_s[None, :]  # promotion: scaled add in FP32 on CUDA cores
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def matmul_fp8_block(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """A (M, K) fp8 with a_scale (M, ceil(K/128)); B (N, K) fp8 with b_scale (ceil(N/128), ceil(K/128))."""
    _check_operands(a, b)
    M, K = a.shape
    N = b.shape[0]
    kg, ng = triton.cdiv(K, GROUP), triton.cdiv(N, GROUP)
    if tuple(a_scale.shape) != (M, kg) or tuple(b_scale.shape) != (ng, kg):
        raise ValueError(f"scales must be ({M}, {kg}) and ({ng}, {kg}), got "
                         f"{tuple(a_scale.shape)} and {tuple(b_scale.shape)}")
    c = torch.empty((M, N), device=a.device, dtype=store_dtype(out_dtype))
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    _matmul_fp8_block_kernel[grid](
        a, b, c, a_scale, b_scale, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1),
    )
    return c if c.dtype == out_dtype else c.to(out_dtype)
