"""Which GEMM kernel implementation a launch uses: the Hopper path or the portable pointer kernels.

  tma_persistent  TMA tensor descriptors (made on the device, `tl.make_tensor_descriptor`), a
                  persistent loop over the output tiles in grouped order on one program per SM,
                  and Triton's Hopper warp specialization where the config asks for it
                  (hpcbench.kernels.matmul_tma, the block-scaled kernel in matmul_fp8_block).
  pointer         pointer arithmetic, one program per tile: any GPU, any Triton, the interpreter.

The choice is a function of the device's compute capability, the Triton version and whether
the kernels are interpreted (`matmul_impl`), then of the operands: TMA needs 16-byte aligned
bases and row strides and unit inner strides (`tma_compatible`); other operands get the pointer
kernels. Each GEMM row records the implementation that ran (`kernel_impl`).
"""

from __future__ import annotations

import functools
import re

import torch

TMA_PERSISTENT = "tma_persistent"
POINTER = "pointer"
IMPLS = (TMA_PERSISTENT, POINTER)

# The oldest Triton the Hopper kernels are checked with (`hpcbench compile-kernels` with 3.6,
# what GPU hosts carry with torch 2.11, and 3.9). Device-side descriptors and
# tl.range(warp_specialize=...) exist in both; older versions get the pointer kernels.
MIN_TRITON = (3, 6)


def parse_version(version: str) -> tuple[int, int]:
    """'3.6.0', '3.9.0+git1234', '3.10' -> (major, minor); (0, 0) when unreadable."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@functools.cache  # asked at every launch: the answer never changes within a process
def matmul_impl(capability: tuple[int, int] | None, triton_version: str, interpreter: bool) -> str:
    """The implementation for a device of `capability` (None: no CUDA device) under this Triton.

    Hopper (sm_90) with Triton >= MIN_TRITON, compiled: tma_persistent. Everything else, the
    interpreter included (it runs on the CPU, where the choice of GPU code path means nothing),
    gets the pointer kernels. Blackwell (sm_100) would accept the TMA kernels too, but they are
    neither tuned nor compile-checked for it, so it keeps the pointer kernels."""
    if interpreter or capability is None or capability[0] != 9:
        return POINTER
    return TMA_PERSISTENT if parse_version(triton_version) >= MIN_TRITON else POINTER


def tma_compatible(*tensors: torch.Tensor) -> bool:
    """Whether every 2-D tensor can back a TMA descriptor: base and row stride 16-byte aligned,
    unit inner stride (a K that is a multiple of 8 for BF16 or 16 for FP8, in a fresh tensor)."""
    for t in tensors:
        size = t.element_size()
        if t.ndim != 2 or t.stride(1) != 1 or t.data_ptr() % 16 or (t.stride(0) * size) % 16:
            return False
    return True


@functools.cache
def _capability_of(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def device_capability(t: torch.Tensor) -> tuple[int, int] | None:
    """The capability of the tensor's GPU (None on the CPU), read once per device, not per launch."""
    if t.device.type != "cuda":
        return None
    return _capability_of(t.device.index if t.device.index is not None else torch.cuda.current_device())


def impl_for(*tensors: torch.Tensor, impl: str | None = None) -> str:
    """The implementation a launch on `tensors` (operands and output) uses; `impl` forces one
    (tests run the TMA kernels in the interpreter this way)."""
    import triton

    from hpcbench.kernels.interpreter import interpreting

    if impl is not None:
        if impl not in IMPLS:
            raise ValueError(f"unknown kernel implementation {impl!r} (expected one of {IMPLS})")
        if impl == TMA_PERSISTENT and not tma_compatible(*tensors):
            raise ValueError("the TMA kernels need 16-byte aligned operands and row strides")
        return impl
    chosen = matmul_impl(device_capability(tensors[0]), triton.__version__, interpreting())
    return chosen if chosen == POINTER or tma_compatible(*tensors) else POINTER
