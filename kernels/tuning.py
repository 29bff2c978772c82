"""Autotuning configs: a Hopper (sm_90) set, a general CUDA set, and one small interpreter config.

The lists are functions of the compute capability, so that `hpcbench compile-kernels` can ask
"what would the autotuner try on sm_90?" on a machine without that GPU. Configs whose pipeline
buffers cannot fit in the architecture's shared memory are pruned before anything is compiled
(`prune_by_smem`, wired into the autotuners through `smem_pruner`): Triton would otherwise
compile each of them, fail to load it, and drop it only then.
"""

from __future__ import annotations

import functools
import os

import torch
import triton

from hpcbench.kernels.interpreter import interpreting

Capability = tuple[int, int]

# Largest dynamic shared memory one block may opt into (cudaDevAttrMaxSharedMemoryPerBlockOptin),
# per compute capability, from the CUDA C++ Programming Guide's "technical specifications" table.
# Used when no device is present to ask (compile-kernels) or torch does not expose the attribute.
SMEM_LIMIT_BYTES: dict[Capability, int] = {
    (7, 0): 96 * 1024,
    (7, 5): 64 * 1024,
    (8, 0): 163 * 1024,
    (8, 6): 99 * 1024,
    (8, 7): 163 * 1024,
    (8, 9): 99 * 1024,
    (9, 0): 227 * 1024,   # 232448 B
    (10, 0): 227 * 1024,
    (10, 3): 227 * 1024,
    (12, 0): 99 * 1024,
}
# Barriers and other small allocations next to the pipeline and epilogue buffers (observed on
# sm_90 with triton 3.6 and 3.9: +512..1048 B; the most, staging a row-scaled 128x256 epilogue's
# 384 scales).
SMEM_SLACK_BYTES = 2048


@functools.cache
def _capability() -> Capability | None:
    if interpreting() or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability()


def parse_arch(arch: str | int | Capability) -> Capability:
    """'sm_90', 'sm_90a', '90', 90 or (9, 0) -> (9, 0)."""
    if isinstance(arch, tuple):
        return arch
    text = str(arch).lower().removeprefix("sm_").removeprefix("sm").rstrip("a")
    if not text.isdigit() or len(text) < 2:
        raise ValueError(f"not a CUDA architecture: {arch!r} (expected e.g. sm_90)")
    return int(text[:-1]), int(text[-1])


def smem_limit(capability: Capability) -> int:
    """Opt-in shared memory per block of an architecture (bytes), from the table."""
    if capability in SMEM_LIMIT_BYTES:
        return SMEM_LIMIT_BYTES[capability]
    same_major = [v for (major, _), v in SMEM_LIMIT_BYTES.items() if major == capability[0]]
    return min(same_major) if same_major else 48 * 1024  # 48 KB: what every CUDA GPU allows


@functools.cache
def device_smem_limit(index: int) -> int:
    """Opt-in shared memory per block of CUDA device `index`, asked from the device when torch can."""
    props = torch.cuda.get_device_properties(index)
    limit = getattr(props, "shared_memory_per_block_optin", None)
    return int(limit) if limit else smem_limit((props.major, props.minor))


def _cfg(bm, bn, bk, stages, warps, group=8):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
                         num_stages=stages, num_warps=warps)


# Hopper tiles (BLOCK_M, BLOCK_N, num_stages, num_warps): wgmma tiles, deep pipelines, 2 warpgroups
_HOPPER_TILES = [
    (128, 256, 3, 8),
    (256, 128, 3, 8),
    (128, 128, 4, 8),
    (128, 128, 4, 4),
    (64, 128, 4, 4),  # small M (decode-like shapes)
    (64, 256, 3, 8),
]


def acc_regs_per_thread(config: triton.Config) -> int:
    """32-bit registers each thread holds for one FP32 (BLOCK_M, BLOCK_N) accumulator tile."""
    kw = config.kwargs
    return kw["BLOCK_M"] * kw["BLOCK_N"] // (32 * config.num_warps)


def matmul_configs(block_k: int | None = None, fp8: bool = False, capability: Capability | None = None,
                   max_acc_regs: int | None = None) -> list[triton.Config]:
    """Configs for a C = A @ B^T kernel. `block_k` pins BLOCK_K (block-scaled kernels need 128).

    `capability` names the architecture to tune for; by default this process's device (none in
    the interpreter). `max_acc_regs` drops tiles whose FP32 accumulator needs more registers per
    thread than that (kernels that keep a second accumulator-sized tile live)."""
    if capability is None:
        if interpreting():  # the interpreter runs every program in numpy: small tiles, one config
            return [_cfg(64, 64, block_k or 64, 1, 1)]
        capability = _capability()
    if capability is not None and capability[0] == 9:
        # FP8 wants BLOCK_K = 128 (one 128-byte row per stage), BF16 64; a kernel serving both
        # dtypes gets both, and smem_pruner drops those that do not fit for the dtype at hand.
        block_ks = [block_k] if block_k else ([128] if fp8 else [64, 128])
        configs = [_cfg(bm, bn, bk, stages, warps) for bk in block_ks for bm, bn, stages, warps in _HOPPER_TILES]
    else:  # Ampere/Ada and anything else: smaller shared-memory budgets
        bk = block_k or 64
        configs = [
            _cfg(128, 128, bk, 3, 8),
            _cfg(128, 64, bk, 4, 4),
            _cfg(64, 128, bk, 4, 4),
            _cfg(64, 64, bk, 4, 4),
        ]
    if max_acc_regs is not None:
        configs = [c for c in configs if acc_regs_per_thread(c) <= max_acc_regs]
    return configs


def fp8_block_configs(capability: Capability | None = None) -> list[triton.Config]:
    """Configs of the DeepSeek-style block-scaled FP8 kernel.

    It keeps the per-128-of-K partial sum live next to the accumulator, two FP32 tiles. Where
    one tile takes 128 registers per thread (128x256 or 256x128 on 8 warps, 128x128 on 4) the
    pair needs more than 255 and ptxas spills 312-860 B of stores (sm_90, triton 3.9, measured
    with `hpcbench compile-kernels`): those tiles are dropped on every architecture."""
    return matmul_configs(block_k=128, fp8=True, capability=capability, max_acc_regs=64)


def smem_estimate(config: triton.Config, in_bytes: int, out_bytes: int = 2) -> int:
    """Shared memory (bytes) a C = A @ B^T config needs: num_stages copies of the A and B tiles,
    and the epilogue's staging of the C tile, plus barriers. Pointer kernels reuse the freed
    pipeline buffers for the epilogue (the larger of the two counts); the persistent TMA kernels
    (configs with a WARP_SPECIALIZE key) keep a separate C buffer for their TMA store while the next
    tile's loads are in flight (the sum). Triton 3.9 and 3.6 allocate this on sm_90 (within
    SMEM_SLACK_BYTES; checked by `hpcbench compile-kernels`); on sm_80/89 pointer kernels keep
    num_stages - 1 copies, so the estimate is an upper bound there."""
    kw = config.kwargs
    bm, bn, bk = kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"]
    pipeline = config.num_stages * (bm * bk + bk * bn) * in_bytes
    epilogue = bm * bn * out_bytes
    if is_tma_config(config):
        return pipeline + epilogue + SMEM_SLACK_BYTES
    return max(pipeline, epilogue) + SMEM_SLACK_BYTES


def prune_by_smem(configs: list[triton.Config], in_bytes: int, limit: int,
                  out_bytes: int = 2) -> list[triton.Config]:
    """The configs whose estimated shared memory fits in `limit` bytes (at least one: if none
    fits, the smallest, which then fails to load with Triton's own OutOfResources error)."""
    fitting = [c for c in configs if smem_estimate(c, in_bytes, out_bytes) <= limit]
    return fitting or [min(configs, key=lambda c: smem_estimate(c, in_bytes, out_bytes))]


ONE_CONFIG_ENV = "HPCBENCH_ONE_CONFIG"


def limit_configs(configs: list[triton.Config]) -> list[triton.Config]:
    """With HPCBENCH_ONE_CONFIG=1 (the GPU acceptance call's proof stage), only the first config
    that survived pruning: one compile per kernel and no autotuning, so every kernel is proven to
    compile and verify in seconds. Read at each launch's pruning, not at import."""
    return configs[:1] if os.environ.get(ONE_CONFIG_ENV) == "1" else configs


def smem_pruner(operand: str = "a_ptr", output: str = "c_ptr", by_dtype=None):
    """An autotuner `early_config_prune` hook: prunes by the shared memory of the launch's
    device, with the element sizes of the actual operand and output tensors. `by_dtype(in_bytes)`,
    when given, names the configs meant for that operand size (a kernel tuned for both BF16 and
    FP8 is decorated with the union of both lists)."""

    def prune(configs, named_args, **kwargs):
        a, c = named_args.get(operand), named_args.get(output)
        limit = _launch_smem_limit(a)
        if limit is None:  # the interpreter: nothing to prune
            return configs
        if by_dtype is not None:
            wanted = {config_key(w) for w in by_dtype(a.element_size())}
            configs = [cfg for cfg in configs if config_key(cfg) in wanted] or configs
        out_bytes = c.element_size() if isinstance(c, torch.Tensor) else 2
        return limit_configs(prune_by_smem(configs, a.element_size(), limit, out_bytes))

    return prune


def config_key(config: triton.Config) -> tuple:
    return tuple(sorted(config.kwargs.items())) + (config.num_stages, config.num_warps)


# ---- the persistent TMA kernels (Hopper path: hpcbench.kernels.select) --------------------------

# (BLOCK_M, BLOCK_N, num_stages, num_warps, warp-specialized). Triton's Hopper warp specialization
# (tl.range(..., warp_specialize=True)) takes num_warps=4 as one consumer warpgroup's size and
# splits a BLOCK_M=128 tile between two consumer warpgroups plus a producer warpgroup issuing
# the TMA loads (12 warps in all), so those tiles have BLOCK_M=128: with 64 it splits the tile
# along N instead, keeps a second C buffer (16 KB more than the estimate below), and crashed
# compiling 64x256 BF16 with triton 3.9. At num_warps=8 it leaves the loop unspecialized.
_TMA_TILES = [
    (128, 256, 3, 4, True),
    (128, 128, 4, 4, True),
    (128, 256, 3, 8, False),
    (128, 128, 4, 8, False),
    (64, 128, 4, 4, False),  # small M (decode-like shapes)
    (64, 256, 3, 8, False),
]
# The block-scaled kernel: BLOCK_N <= 128 (one weight-scale block per tile column), and mostly
# warp-specialized tiles, whose two consumer warpgroups run independently, so that one's FP32
# promotion overlaps the other's wgmma (DeepGEMM's scheme); small M gets a plain 64-row tile.
_TMA_BLOCK_TILES = [
    (128, 128, 4, 4, True),
    (128, 128, 3, 4, True),
    (128, 64, 4, 4, True),
    (128, 128, 4, 8, False),  # one program promotes in lockstep: the autotuner weighs it against the above
    (64, 128, 4, 4, False),
]


def _tma_cfg(bm, bn, bk, stages, warps, ws):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "WARP_SPECIALIZE": ws},
                         num_stages=stages, num_warps=warps)


def is_tma_config(config: triton.Config) -> bool:
    return "WARP_SPECIALIZE" in config.kwargs


def tma_matmul_configs(capability: Capability | None = None, in_bytes: int | None = None) -> list[triton.Config]:
    """Configs of the persistent TMA kernel (tensor/row scaling and BF16): BLOCK_K = 128 for FP8
    (`in_bytes` 1), 64 for BF16 (2), both lists when `in_bytes` is None (the autotuner's list;
    `smem_pruner(by_dtype=...)` keeps the operand's own at launch). The kernel runs on Hopper
    only (hpcbench.kernels.select), so the tiles do not depend on `capability` beyond "None in
    the interpreter": one small config there."""
    if capability is None and interpreting():
        return [_tma_cfg(64, 64, 64, 1, 1, False)]
    block_ks = {1: [128], 2: [64]}.get(in_bytes, [128, 64])
    return [_tma_cfg(bm, bn, bk, stages, warps, ws) for bk in block_ks for bm, bn, stages, warps, ws in _TMA_TILES]


def tma_block_configs(capability: Capability | None = None) -> list[triton.Config]:
    """Configs of the persistent, warp-specialized block-scaled FP8 kernel (BLOCK_K = 128)."""
    if capability is None and interpreting():
        return [_tma_cfg(64, 64, 128, 1, 1, False)]
    return [_tma_cfg(bm, bn, 128, stages, warps, ws) for bm, bn, stages, warps, ws in _TMA_BLOCK_TILES]


def _launch_smem_limit(tensor) -> int | None:
    """Shared memory limit of the CUDA device `tensor` lives on; None off CUDA or interpreting."""
    if interpreting() or not isinstance(tensor, torch.Tensor) or tensor.device.type != "cuda":
        return None
    index = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
    return device_smem_limit(index)
