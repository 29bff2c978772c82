"""The Hopper path of C = A @ B^T (BF16, or FP8 E4M3 with per-tensor or per-row scales), built
like Triton's tutorial 09-persistent-matmul:

- TMA: A (M, K), B (N, K) and C (M, N) are read and written through tensor descriptors made on
  the device (`tl.make_tensor_descriptor`; each program writes its three 128-byte descriptors to
  a global scratch buffer once, from the allocator `ensure_allocator` installs). Triton 3.6 and
  3.9 both have it and host-side `TensorDescriptor`s, but their Hopper warp specialization
  works with device-side descriptors only (tutorial 09 turns it off for host ones on Hopper).
  TMA zero-fills out-of-bounds loads and clips out-of-bounds stores: ragged edges need no masks,
  but bases and row strides must be 16-byte aligned (select.tma_compatible).
- Persistent: one program per SM walks the output tiles (grouped ordering for L2 reuse of B).
- Warp specialization where a config asks for it (`tl.range(..., warp_specialize=True)`): a
  producer warpgroup issues the TMA loads, two consumer warpgroups run wgmma and the epilogue.
  Triton's Hopper warp specialization does not work with a flattened loop nest, so only the
  plain persistent configs flatten.
- Scales (FP32 dequantization factors) are applied to the FP32 accumulator in the epilogue.

Selection against the pointer kernel (matmul.py): hpcbench.kernels.select. Triton 3.9's
interpreter runs this kernel, device-side descriptors and their alignment checks included (the
tests force it there); warp specialization then is just a loop.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from hpcbench.kernels.tuning import smem_pruner, tma_matmul_configs

SCALE_NONE, SCALE_TENSOR, SCALE_ROW = 0, 1, 2
HOPPER = (9, 0)


@triton.jit
def gemm_descriptors(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_bn, stride_cm,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """TMA descriptors of A (M x K), B (N x K) and C (M x N), all row-major. Row strides enter them
    as 64-bit byte strides: no 32-bit address products."""
    a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[stride_am, 1], block_shape=[BLOCK_M, BLOCK_K])
    b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[stride_bn, 1], block_shape=[BLOCK_N, BLOCK_K])
    c_desc = tl.make_tensor_descriptor(c_ptr, shape=[M, N], strides=[stride_cm, 1], block_shape=[BLOCK_M, BLOCK_N])
    return a_desc, b_desc, c_desc


@triton.jit
def persistent_tile(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of output tile `tile_id` in grouped order: GROUP_M row blocks share the
    same B columns while those are in L2."""
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (tile_id // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile_id % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


def _own_configs(in_bytes: int):
    """The configs for operands of `in_bytes` bytes (the kernel is decorated with both dtypes')."""
    return tma_matmul_configs(HOPPER, in_bytes)


@triton.autotune(configs=tma_matmul_configs(), key=["M", "N", "K", "SCALE_MODE"],
                 prune_configs_by={"early_config_prune": smem_pruner(by_dtype=_own_configs)})
@triton.jit
def _matmul_tma_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr,
    M, N, K, stride_am, stride_bn, stride_cm, num_programs,
    SCALE_MODE: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    a_desc, b_desc, c_desc = gemm_descriptors(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_bn, stride_cm,
                                              BLOCK_M, BLOCK_N, BLOCK_K)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    if SCALE_MODE == 1:
        tensor_scale = tl.load(a_scale_ptr) * tl.load(b_scale_ptr)
    for tile_id in tl.range(tl.program_id(0), num_pid_m * num_pid_n, num_programs,
                            flatten=not WARP_SPECIALIZE, warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = persistent_tile(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            a = a_desc.load([off_m, ki * BLOCK_K])
            b = b_desc.load([off_n, ki * BLOCK_K])
            if DOT_IN_FP32:  # interpreter only: its bf16 tl.dot is broken (see interpreter.py)
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b.T, acc)
        if SCALE_MODE == 1:
            acc = acc * tensor_scale
        elif SCALE_MODE == 2:
            rows = off_m + tl.arange(0, BLOCK_M)
            cols = off_n + tl.arange(0, BLOCK_N)
            a_s = tl.load(a_scale_ptr + rows, mask=rows < M, other=0.0)
            b_s = tl.load(b_scale_ptr + cols, mask=cols < N, other=0.0)
            acc = acc * a_s[:, None] * b_s[None, :]
        c_desc.store([off_m, off_n], acc.to(c_ptr.dtype.element_ty))


_SCRATCH: dict = {}


def _scratch(size: int, alignment: int, stream):
    """Global memory for the descriptors the kernels write on the device (128 B per descriptor
    per program), on the current CUDA device. Kept per (device, stream, size) rather than
    allocated at every launch: launches on one stream run in order, so they may share it, and a
    graph that captured its address finds it still alive at every replay."""
    device = torch.cuda.current_device() if torch.cuda.is_available() else -1
    key = (device, stream, size, alignment)
    buf = _SCRATCH.get(key)
    if buf is None:
        buf = _SCRATCH[key] = torch.empty(size + alignment, device="cuda" if device >= 0 else "cpu", dtype=torch.int8)
    offset = (-buf.data_ptr()) % alignment
    return buf[offset:offset + size]


def ensure_allocator() -> None:
    """Install `_scratch` as Triton's allocator unless one is set already (triton.set_allocator
    is per context; device-side descriptors fail without one)."""
    try:
        from triton.runtime._allocation import NullAllocator, _allocator
    except ImportError:  # a Triton that reorganised its private module: set ours
        triton.set_allocator(_scratch)
        return
    if isinstance(_allocator.get(), NullAllocator):
        triton.set_allocator(_scratch)


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_programs(device: torch.device) -> int:
    """Programs of a persistent launch: one per SM on CUDA; 2 in the interpreter, so that the
    tile loop still runs several tiles per program."""
    if device.type != "cuda":
        return 2
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def persistent_grid(M: int, N: int, device: torch.device):
    programs = num_programs(device)
    return programs, lambda meta: (min(programs, triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"])),)


def matmul_tma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, a_scale: torch.Tensor, b_scale: torch.Tensor,
               mode: int, dot_in_fp32: bool) -> None:
    """Launch on checked operands (hpcbench.kernels.matmul.matmul): C = A @ B^T into `c`."""
    M, K = a.shape
    N = b.shape[0]
    ensure_allocator()
    programs, grid = persistent_grid(M, N, a.device)
    _matmul_tma_kernel[grid](
        a, b, c, a_scale, b_scale, M, N, K, a.stride(0), b.stride(0), c.stride(0), programs,
        SCALE_MODE=mode, DOT_IN_FP32=dot_in_fp32,
    )
