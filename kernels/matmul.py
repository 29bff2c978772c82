"""C = A @ B^T in BF16, or in FP8 E4M3 with per-tensor or per-row scales.

Layouts follow nn.Linear and cuBLASLt's FP8 "TN" requirement: A is (M, K) row-major (activations)
and B is (N, K) row-major (weights), so both operands are K-major, which FP8 wgmma on Hopper needs
for pipelined loads. Accumulation is FP32 in the tensor cores; for FP8 Triton's Hopper default
applies (no extra promotion, like cuBLAS fast accumulation). Scales are dequantization factors
(x ~ q * scale), applied to the FP32 accumulator in the epilogue.

This module holds the portable pointer kernel (any GPU, any Triton, the interpreter); on Hopper
`matmul` launches the persistent TMA kernel of matmul_tma.py instead (hpcbench.kernels.select).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hpcbench.kernels.interpreter import dot_in_fp32, store_dtype
from hpcbench.kernels.select import POINTER, impl_for
from hpcbench.kernels.tuning import matmul_configs, smem_pruner

SCALE_NONE, SCALE_TENSOR, SCALE_ROW = 0, 1, 2
_SCALE_MODES = {"none": SCALE_NONE, "tensor": SCALE_TENSOR, "row": SCALE_ROW}


@triton.jit
def tile_offsets(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Row/column offsets of this program's C tile, in grouped order so that GROUP_M row blocks
    reuse the same B columns while they are in L2. Offsets wrap (modulo) past the edge, which keeps
    loads unmasked in M and N; the store masks the wrapped lanes."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n


# Address offsets are 64-bit in every kernel: row index x row stride reaches 2**31 on shapes an
# H200 holds ((M-1)*K for M=300000, K=8192; (M-1)*N for M=N=49152), and 32-bit products wrap
# there. The casts are applied once per program, outside the K loop (which advances 64-bit
# pointers), so they cost nothing measurable: on sm_90 at most 2 registers and no new spills
# (triton 3.9). One kernel for every shape also means there is no shape -> variant selector to
# get wrong (a strided view can overflow where M, N, K alone would not), and half the variants
# to compile. tests/test_kernels.py checks the PTX for it.


@triton.autotune(configs=matmul_configs(), key=["M", "N", "K", "SCALE_MODE"],
                 prune_configs_by={"early_config_prune": smem_pruner()})
@triton.jit
def _matmul_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    SCALE_MODE: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    offs_m, offs_n = tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = (offs_m % M).to(tl.int64)  # 64-bit: see the note above the kernel
    cols = (offs_n % N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + cols[None, :] * stride_bn + offs_k[:, None] * stride_bk  # a (BLOCK_K, BLOCK_N) view of B^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if DOT_IN_FP32:  # interpreter only: its bf16 tl.dot is broken (see interpreter.py)
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if SCALE_MODE == 1:
        acc = acc * (tl.load(a_scale_ptr) * tl.load(b_scale_ptr))
    elif SCALE_MODE == 2:
        a_s = tl.load(a_scale_ptr + rows)
        b_s = tl.load(b_scale_ptr + cols)
        acc = acc * a_s[:, None] * b_s[None, :]
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def _check_operands(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need A (M, K) and B (N, K), got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"A and B dtypes differ: {a.dtype} vs {b.dtype}")


def kernel_impl(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype = torch.bfloat16,
                impl: str | None = None) -> str:
    """The implementation `matmul(a, b, ..., out_dtype=out_dtype, impl=impl)` launches
    (hpcbench.kernels.select): "tma_persistent" or "pointer"."""
    c = torch.empty((a.shape[0], b.shape[0]), device="meta", dtype=store_dtype(out_dtype))  # strides only
    return impl_for(a, b, c, impl=impl)


def matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor | None = None,
    b_scale: torch.Tensor | None = None,
    scaling: str = "none",
    out_dtype: torch.dtype = torch.bfloat16,
    impl: str | None = None,
) -> torch.Tensor:
    """A (M, K) @ B (N, K)^T.

    scaling="none": BF16 operands. scaling="tensor": FP8 operands, scalar a_scale/b_scale.
    scaling="row": FP8 operands, a_scale (M,) and b_scale (N,) float32.
    impl: force "tma_persistent" or "pointer" (default: hpcbench.kernels.select decides).
    """
    _check_operands(a, b)
    mode = _SCALE_MODES[scaling]
    M, K = a.shape
    N = b.shape[0]
    if mode == SCALE_NONE:
        a_scale = b_scale = a  # unused by the kernel; any pointer will do
    elif a_scale is None or b_scale is None:
        raise ValueError(f"scaling={scaling!r} needs a_scale and b_scale")
    c = torch.empty((M, N), device=a.device, dtype=store_dtype(out_dtype))
    if impl_for(a, b, c, impl=impl) == POINTER:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
        _matmul_kernel[grid](
            a, b, c, a_scale, b_scale, M, N, K,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
            SCALE_MODE=mode, DOT_IN_FP32=dot_in_fp32(a.dtype),
        )
    else:
        from hpcbench.kernels.matmul_tma import matmul_tma

        matmul_tma(a, b, c, a_scale, b_scale, mode, dot_in_fp32(a.dtype))
    return c if c.dtype == out_dtype else c.to(out_dtype)
