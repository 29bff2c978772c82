"""FP8 E4M3 GEMM with DeepSeek-V3 fine-grained scaling: C = A @ B^T.

A (M, K) is quantized in 1x128 tiles (one scale per row per 128 of K), B (N, K) in 128x128 blocks.
Each 128-wide slice of K is one tl.dot into a fresh FP32 partial sum, which is then scaled by the
tile and block scales and added to the FP32 accumulator: the "promote to FP32 every 128 of K"
recipe of the DeepSeek-V3 report (sec. 3.3), which bounds the tensor cores' limited-precision
accumulation to 128 products.

Overlapping promotion with the next MMA. The promotion reads the partial sum on the CUDA cores,
so it waits for its wgmma (`wgmma.wait_group 0`); Triton's wgmma pipeliner keeps a dot in flight
across iterations only when its result feeds another dot's accumulator, so within one warpgroup
the scaled add and the next wgmma cannot overlap whatever the loop's shape (a manual two-partial
software pipeline still gets `pendings=0`, and a third FP32 tile that spills). DeepGEMM's answer,
used here on Hopper (`_matmul_fp8_block_tma_kernel`): two consumer warpgroups, each owning 64
rows of the tile, that Triton's warp specialization runs independently of each other behind a
producer warpgroup issuing TMA loads, so while one promotes, the other's wgmma runs.

Scale prefetch. Each K step's scales are loaded by the step before it, right after that step's
promotion, and carried into the next iteration: their global round trip then overlaps the next
step's operand loads and wgmma instead of stalling its promotion. (The pipeliner multi-buffers
only the loads that feed a dot; the scales feed the promotion.) The last step's prefetch is
masked off. Warp-specialized configs cannot do this: Triton's partitioner (3.6 and 3.9) fails on
any load whose value is carried to the next iteration, so there each step loads its scales at its
start, before its operands' TMA wait and its wgmma, and the two consumer warpgroups cover each
other's round trips. The same holds for the 128x128 tile of the pointer kernels that carry a
column of B scales (1D1D here, k-grouped in grouped_gemm): prefetched, the second column of
scales spills under triton 3.6 (`IN_STEP_TILE`). `hpcbench compile-kernels` reads where the scale loads sit from each
kernel's TTGIR (`scale_loads`, hpcbench.kernelcheck.check.scale_load_placement).

Scales. The activation scales come K-major from `quantize.quantize_1x128` (shape (M, K/128),
strides (1, M): the layout of torch's and cuBLASLt's block-wise scaled_mm too), so the BLOCK_M
scales of one K step are one contiguous load rather than a gather with stride K/128.

`_matmul_fp8_block_kernel` is the portable pointer kernel (pre-Hopper GPUs, older Triton,
unaligned operands, the interpreter); hpcbench.kernels.select chooses.

"1D1D" (`matmul_fp8_1d1d`): both operands in 1x128 tiles along K, B's scales per row too, as in
the weight-gradient GEMM dW = dY^T X, whose K is the tokens: dY^T and X^T are each quantized
along the tokens (quantize.quantize_128x1), so neither carries 128x128 blocks (DeepGEMM's wgrad
kernels, "1D1D"). The kernels are the two above with one change: the promotion multiplies the
partial sum by a row of A scales and a column of B scales (an outer product) instead of one
weight-block scale per tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from hpcbench.kernels.interpreter import store_dtype
from hpcbench.kernels.matmul import _check_operands, tile_offsets
from hpcbench.kernels.matmul_tma import ensure_allocator, gemm_descriptors, persistent_grid, persistent_tile
from hpcbench.kernels.select import POINTER, impl_for
from hpcbench.kernels.tuning import fp8_block_configs, smem_pruner, tma_block_configs

GROUP = 128  # quantization group along K (and along N for the weight blocks)
# Kernels with a column of B scales (1D1D, k-grouped) prefetch them on every tile but this one: at
# 128x128 on 8 warps (255 registers) triton 3.6 spills 32-36 B with two columns live.
IN_STEP_TILE: tl.constexpr = tl.constexpr(128)


@triton.jit
def has_step(lanes, k, steps):
    """A load mask, one lane per element of `lanes` (an index vector, or a scalar for a scalar
    load), true when K step k exists. Built as an integer comparison per lane: the interpreter
    refuses a scalar boolean mask on a vector load."""
    return lanes * 0 + k < steps


@triton.jit
def weight_scale_ptrs(base, first_col, cols, stride_bsn, BLOCK_N: tl.constexpr):
    """Pointers to a tile's 128x128 weight-block scales for one K step (`base` at the first step),
    and the lanes to build their masks from (`has_step`). A tile of at most 128 columns lies in one
    block (BLOCK_N divides 128): one scalar, where a column vector would hold BLOCK_N / 4 registers
    a thread across the K loop (and, prefetched, a second copy: the 128x128 tiles spilled); wider
    tiles get one pointer per column, shape [1, BLOCK_N]."""
    if BLOCK_N <= 128:
        return base + (first_col // 128).to(tl.int64) * stride_bsn, first_col * 0
    else:
        return base + ((cols // 128) * stride_bsn)[None, :], cols[None, :]


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
    a_scale_ptrs = a_scale_ptr + rows * stride_asm  # stride_asm = 1: BLOCK_M consecutive floats
    b_scale_ptrs, b_lanes = weight_scale_ptrs(b_scale_ptr, tl.min(offs_n, axis=0), cols, stride_bsn, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_steps = tl.cdiv(K, BLOCK_K)
    a_s = tl.load(a_scale_ptrs)  # step 0's scales; each step prefetches the next's (module notes)
    b_s = tl.load(b_scale_ptrs)
    for k in range(0, k_steps):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        partial = tl.dot(a, b)  # FP32 result of 128 products per output
        acc += partial * a_s[:, None] * b_s  # promotion: scaled add in FP32 on CUDA cores
        # (K/128) * M: 32 bits suffice for the scale offsets
        a_s = tl.load(a_scale_ptrs + (k + 1) * stride_ask, mask=has_step(offs_m, k + 1, k_steps), other=0.0)
        b_s = tl.load(b_scale_ptrs + (k + 1) * stride_bsk, mask=has_step(b_lanes, k + 1, k_steps), other=0.0)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.autotune(configs=tma_block_configs(), key=["M", "N", "K"],
                 prune_configs_by={"early_config_prune": smem_pruner()})
@triton.jit
def _matmul_fp8_block_tma_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr,
    M, N, K, stride_am, stride_bn, stride_cm, stride_asm, stride_ask, stride_bsn, stride_bsk, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    """The Hopper path: TMA loads and stores, a persistent tile loop, and (WARP_SPECIALIZE) a
    producer warpgroup feeding two independent consumer warpgroups (see the module notes)."""
    tl.static_assert(BLOCK_K == 128, "one K step must be exactly one quantization group")
    tl.static_assert(128 % BLOCK_N == 0, "one weight-scale block must cover the tile's columns")
    a_desc, b_desc, c_desc = gemm_descriptors(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_bn, stride_cm,
                                              BLOCK_M, BLOCK_N, BLOCK_K)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile_id in tl.range(tl.program_id(0), num_pid_m * num_pid_n, num_programs,
                            flatten=not WARP_SPECIALIZE, warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = persistent_tile(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        rows = off_m + tl.arange(0, BLOCK_M)
        a_scale_ptrs = a_scale_ptr + rows.to(tl.int64) * stride_asm  # stride_asm = 1: one coalesced load
        b_scale_p = b_scale_ptr + (off_n // 128).to(tl.int64) * stride_bsn  # one weight block per K step
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if WARP_SPECIALIZE:  # each step's scales at its start (module notes: no carried loads here)
            for ki in range(k_tiles):
                a_s = tl.load(a_scale_ptrs + ki * stride_ask, mask=rows < M, other=0.0)
                b_s = tl.load(b_scale_p + ki * stride_bsk)
                a = a_desc.load([off_m, ki * BLOCK_K])
                b = b_desc.load([off_n, ki * BLOCK_K])
                partial = tl.dot(a, b.T)  # FP32 result of 128 products per output, into a fresh tile
                acc += partial * (a_s * b_s)[:, None]  # promotion: scaled add in FP32 on CUDA cores
        else:
            a_s = tl.load(a_scale_ptrs, mask=rows < M, other=0.0)  # step 0's; each step prefetches the next's
            b_s = tl.load(b_scale_p)
            for ki in range(k_tiles):
                a = a_desc.load([off_m, ki * BLOCK_K])
                b = b_desc.load([off_n, ki * BLOCK_K])
                partial = tl.dot(a, b.T)
                acc += partial * (a_s * b_s)[:, None]
                a_s = tl.load(a_scale_ptrs + (ki + 1) * stride_ask, mask=(rows < M) & has_step(rows, ki + 1, k_tiles),
                              other=0.0)
                b_s = tl.load(b_scale_p + (ki + 1) * stride_bsk, mask=ki + 1 < k_tiles, other=0.0)
        c_desc.store([off_m, off_n], acc.to(c_ptr.dtype.element_ty))


@triton.autotune(configs=fp8_block_configs(), key=["M", "N", "K"],
                 prune_configs_by={"early_config_prune": smem_pruner()})
@triton.jit
def _matmul_fp8_1d1d_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr,
    M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_asm, stride_ask, stride_bsn, stride_bsk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """`_matmul_fp8_block_kernel` with 1x128 tiles on B too: b_scale (N, K/128)."""
    tl.static_assert(BLOCK_K == 128, "one K step must be exactly one quantization group")
    offs_m, offs_n = tile_offsets(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = (offs_m % M).to(tl.int64)  # 64-bit offsets: see the note in matmul.py
    cols = (offs_n % N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + cols[None, :] * stride_bn + offs_k[:, None] * stride_bk
    a_scale_ptrs = a_scale_ptr + rows * stride_asm  # unit strides along M and N: coalesced loads
    b_scale_ptrs = b_scale_ptr + cols * stride_bsn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_steps = tl.cdiv(K, BLOCK_K)
    if BLOCK_M == IN_STEP_TILE and BLOCK_N == IN_STEP_TILE:  # each step's scales in the step (module notes)
        for k in range(0, k_steps):
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
            a_s = tl.load(a_scale_ptrs + k * stride_ask)
            b_s = tl.load(b_scale_ptrs + k * stride_bsk)
            partial = tl.dot(a, b)
            acc += partial * a_s[:, None] * b_s[None, :]
            a_ptrs += BLOCK_K * stride_ak
            b_ptrs += BLOCK_K * stride_bk
    else:
        a_s = tl.load(a_scale_ptrs)  # step 0's scales; each step prefetches the next's (module notes)
        b_s = tl.load(b_scale_ptrs)
        for k in range(0, k_steps):
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
            partial = tl.dot(a, b)  # FP32 result of 128 products per output
            acc += partial * a_s[:, None] * b_s[None, :]  # promotion with the outer product of the scales
            a_s = tl.load(a_scale_ptrs + (k + 1) * stride_ask, mask=has_step(offs_m, k + 1, k_steps), other=0.0)
            b_s = tl.load(b_scale_ptrs + (k + 1) * stride_bsk, mask=has_step(offs_n, k + 1, k_steps), other=0.0)
            a_ptrs += BLOCK_K * stride_ak
            b_ptrs += BLOCK_K * stride_bk
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def tma_1d1d_configs(capability=None) -> list:
    """tuning.tma_block_configs less the 128x128 tile that does not warp-specialize: with a column
    of B scales beside the row of A scales, ptxas spills it (428 B of stores on sm_90 with triton
    3.9, found by `hpcbench compile-kernels`); the warp-specialized 128x128 tiles do not spill."""
    return [c for c in tma_block_configs(capability)
            if c.kwargs["WARP_SPECIALIZE"] or c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] < 128 * 128]


@triton.autotune(configs=tma_1d1d_configs(), key=["M", "N", "K"],
                 prune_configs_by={"early_config_prune": smem_pruner()})
@triton.jit
def _matmul_fp8_1d1d_tma_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr,
    M, N, K, stride_am, stride_bn, stride_cm, stride_asm, stride_ask, stride_bsn, stride_bsk, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    """`_matmul_fp8_block_tma_kernel` (the Hopper path) with 1x128 tiles on B too."""
    tl.static_assert(BLOCK_K == 128, "one K step must be exactly one quantization group")
    a_desc, b_desc, c_desc = gemm_descriptors(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_bn, stride_cm,
                                              BLOCK_M, BLOCK_N, BLOCK_K)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile_id in tl.range(tl.program_id(0), num_pid_m * num_pid_n, num_programs,
                            flatten=not WARP_SPECIALIZE, warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = persistent_tile(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        rows = off_m + tl.arange(0, BLOCK_M)
        cols = off_n + tl.arange(0, BLOCK_N)
        a_scale_ptrs = a_scale_ptr + rows.to(tl.int64) * stride_asm
        b_scale_ptrs = b_scale_ptr + cols.to(tl.int64) * stride_bsn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if WARP_SPECIALIZE:  # each step's scales at its start (module notes: no carried loads here)
            for ki in range(k_tiles):
                a_s = tl.load(a_scale_ptrs + ki * stride_ask, mask=rows < M, other=0.0)
                b_s = tl.load(b_scale_ptrs + ki * stride_bsk, mask=cols < N, other=0.0)
                a = a_desc.load([off_m, ki * BLOCK_K])
                b = b_desc.load([off_n, ki * BLOCK_K])
                partial = tl.dot(a, b.T)
                acc += partial * a_s[:, None] * b_s[None, :]
        else:
            a_s = tl.load(a_scale_ptrs, mask=rows < M, other=0.0)  # step 0's; each step prefetches the next's
            b_s = tl.load(b_scale_ptrs, mask=cols < N, other=0.0)
            for ki in range(k_tiles):
                a = a_desc.load([off_m, ki * BLOCK_K])
                b = b_desc.load([off_n, ki * BLOCK_K])
                partial = tl.dot(a, b.T)
                acc += partial * a_s[:, None] * b_s[None, :]
                a_s = tl.load(a_scale_ptrs + (ki + 1) * stride_ask, mask=(rows < M) & has_step(rows, ki + 1, k_tiles),
                              other=0.0)
                b_s = tl.load(b_scale_ptrs + (ki + 1) * stride_bsk, mask=(cols < N) & has_step(cols, ki + 1, k_tiles),
                              other=0.0)
        c_desc.store([off_m, off_n], acc.to(c_ptr.dtype.element_ty))


KERNELS_1D1D = ("_matmul_fp8_1d1d_kernel", "_matmul_fp8_1d1d_tma_kernel")  # for `hpcbench compile-kernels`


def _check_scales(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor) -> None:
    M, K = a.shape
    N = b.shape[0]
    kg, ng = triton.cdiv(K, GROUP), triton.cdiv(N, GROUP)
    if tuple(a_scale.shape) != (M, kg) or tuple(b_scale.shape) != (ng, kg):
        raise ValueError(f"scales must be ({M}, {kg}) and ({ng}, {kg}), got "
                         f"{tuple(a_scale.shape)} and {tuple(b_scale.shape)}")


def kernel_impl(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype = torch.bfloat16,
                impl: str | None = None) -> str:
    """The implementation `matmul_fp8_block` launches for these operands (hpcbench.kernels.select)."""
    c = torch.empty((a.shape[0], b.shape[0]), device="meta", dtype=store_dtype(out_dtype))  # strides only
    return impl_for(a, b, c, impl=impl)


def matmul_fp8_block(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    impl: str | None = None,
) -> torch.Tensor:
    """A (M, K) fp8 with a_scale (M, ceil(K/128)); B (N, K) fp8 with b_scale (ceil(N/128), ceil(K/128)).

    Any scale strides work; a_scale with strides (1, M) (what quantize_1x128 returns) is read
    with coalesced loads. impl: force "tma_persistent" or "pointer"."""
    _check_operands(a, b)
    _check_scales(a, b, a_scale, b_scale)
    M, K = a.shape
    N = b.shape[0]
    c = torch.empty((M, N), device=a.device, dtype=store_dtype(out_dtype))
    scale_strides = (a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1))
    if impl_for(a, b, c, impl=impl) == POINTER:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
        _matmul_fp8_block_kernel[grid](
            a, b, c, a_scale, b_scale, M, N, K,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1), *scale_strides,
        )
    else:
        ensure_allocator()
        programs, grid = persistent_grid(M, N, a.device)
        _matmul_fp8_block_tma_kernel[grid](
            a, b, c, a_scale, b_scale, M, N, K, a.stride(0), b.stride(0), c.stride(0), *scale_strides, programs,
        )
    return c if c.dtype == out_dtype else c.to(out_dtype)


def matmul_fp8_1d1d(
    a: torch.Tensor,
    b: torch.Tensor,
    a_scale: torch.Tensor,
    b_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    impl: str | None = None,
) -> torch.Tensor:
    """A (M, K) fp8 with a_scale (M, ceil(K/128)); B (N, K) fp8 with b_scale (N, ceil(K/128)): both
    in 1x128 tiles along K (the weight-gradient GEMM, K = tokens; see the module notes).

    Scales with strides (1, M) and (1, N) (what quantize_1x128 and quantize_128x1 return) are read
    with coalesced loads. impl: force "tma_persistent" or "pointer"."""
    _check_operands(a, b)
    M, K = a.shape
    N = b.shape[0]
    kg = triton.cdiv(K, GROUP)
    if tuple(a_scale.shape) != (M, kg) or tuple(b_scale.shape) != (N, kg):
        raise ValueError(f"scales must be ({M}, {kg}) and ({N}, {kg}), got "
                         f"{tuple(a_scale.shape)} and {tuple(b_scale.shape)}")
    c = torch.empty((M, N), device=a.device, dtype=store_dtype(out_dtype))
    scale_strides = (a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1))
    if impl_for(a, b, c, impl=impl) == POINTER:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
        _matmul_fp8_1d1d_kernel[grid](
            a, b, c, a_scale, b_scale, M, N, K,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1), *scale_strides,
        )
    else:
        ensure_allocator()
        programs, grid = persistent_grid(M, N, a.device)
        _matmul_fp8_1d1d_tma_kernel[grid](
            a, b, c, a_scale, b_scale, M, N, K, a.stride(0), b.stride(0), c.stride(0), *scale_strides, programs,
        )
    return c if c.dtype == out_dtype else c.to(out_dtype)
