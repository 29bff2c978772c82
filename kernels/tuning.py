"""Autotuning configs: a Hopper (sm_90) set, a general CUDA set, and one small interpreter config."""

from __future__ import annotations

import functools

import torch
import triton

from hpcbench.kernels.interpreter import interpreting


@functools.cache
def _capability() -> tuple[int, int] | None:
    if interpreting() or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability()


def _cfg(bm, bn, bk, stages, warps, group=8):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": group},
                         num_stages=stages, num_warps=warps)


def matmul_configs(block_k: int | None = None, fp8: bool = False) -> list[triton.Config]:
    """Configs for a C = A @ B^T kernel. `block_k` pins BLOCK_K (block-scaled kernels need 128)."""
    if interpreting():  # the interpreter runs every program in numpy: small tiles, one config
        return [_cfg(64, 64, block_k or 64, 1, 1)]
    cap = _capability()
    if cap is not None and cap[0] == 9:  # Hopper: wgmma tiles, deep pipelines, 2 warpgroups
        # FP8 wants BLOCK_K = 128 (one 128-byte row per stage), BF16 64; a kernel serving both
        # dtypes gets both, and the autotuner drops configs that exceed shared memory.
        block_ks = [block_k] if block_k else ([128] if fp8 else [64, 128])
        return [
            _cfg(bm, bn, bk, stages, warps)
            for bk in block_ks
            for bm, bn, stages, warps in [
                (128, 256, 3, 8),
                (256, 128, 3, 8),
                (128, 128, 4, 8),
                (128, 128, 4, 4),
                (64, 128, 4, 4),  # small M (decode-like shapes)
                (64, 256, 3, 8),
            ]
        ]
    # Ampere/Ada and anything else: smaller shared-memory budgets
    bk = block_k or 64
    return [
        _cfg(128, 128, bk, 3, 8),
        _cfg(128, 64, bk, 4, 4),
        _cfg(64, 128, bk, 4, 4),
        _cfg(64, 64, bk, 4, 4),
    ]
