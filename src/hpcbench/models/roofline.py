"""Is FP8 worth it here? A roofline prediction of the FP8/BF16 speedup of a linear layer's GEMMs.

torchao's float8 roofline model (benchmarks/float8/float8_roofline.py, roofline_utils.py), applied
to the three training passes and to hpcbench's own quantization kernels:

  GEMM   t = max(2MNK / (peak_flops * pct_gemm), bytes / (peak_bw * pct_mem), min_kernel_s)
         bytes: BF16 2(MK + KN + MN); FP8 (MK + KN) + 2MN (BF16 output), plus 4 B per scale for
         the block recipe (DeepGEMM's 1x128 / 128x128 scales are read by the GEMM).
  casts  each kernel max(bytes / (peak_bw * pct_mem), min_kernel_s); bytes per element as torchao
         counts them: read BF16 2, write FP8 1, a BF16 transpose 2 + 2, an FP8 transpose 1 + 1,
         plus 4 B per block scale written. The kernels are the ones hpcbench runs for each pass and
         recipe (benchmarks/gemm/passes.py):
           per-tensor and per-row cast of an (R, C) tensor: amax pass 2RC, then cast 3RC (two kernels)
           1x128 tiles (one kernel, amax and cast fused): 3RC + 4 R ceil(C/128)
           128x1 tiles with the transpose fused (wgrad, block): 3RC + 4 C ceil(R/128)
           FP8 transpose 2RC (128x128 block scales: one more small kernel); BF16 transpose 4RC

Per pass, the speedup is t_BF16 / (t_FP8 + t_casts), with the casts charged as the benchmark
charges them (the weight's quantization in its forward layout happens once per training step and
belongs to no pass). `predict_step` adds the three passes and that weight quantization once:
the speedup of a whole training step's GEMMs for this layer.

The model has no launch overheads beyond the 2 us floor, no wave quantization and no caches; torchao
notes it is ~2x optimistic for shapes below 1024^3. It answers where FP8 starts to pay, not how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PASSES = ("fprop", "dgrad", "wgrad")
RECIPES = ("tensor", "row", "block")
BF16_BYTES, FP8_BYTES, SCALE_BYTES = 2, 1, 4


@dataclass(frozen=True)
class Machine:
    """What the model needs of a device: dense peaks, memory bandwidth, achievable fractions."""

    bf16_tflops: float
    fp8_tflops: float
    bandwidth_GBps: float
    pct_gemm: float  # fraction of the peak FLOP/s a good GEMM reaches
    pct_mem: float  # fraction of the peak bandwidth a memory-bound kernel reaches
    min_kernel_s: float = 2e-6  # no kernel takes less (launch and tail)

    def flops_per_s(self, dtype: str) -> float:
        return (self.bf16_tflops if dtype == "bf16" else self.fp8_tflops) * 1e12 * self.pct_gemm

    def bytes_per_s(self) -> float:
        return self.bandwidth_GBps * 1e9 * self.pct_mem

    def kernel_s(self, nbytes: float) -> float:
        return max(nbytes / self.bytes_per_s(), self.min_kernel_s)


def machine_for(device_name: str | None, pct_gemm: float, pct_mem: float, min_kernel_s: float = 2e-6) -> Machine | None:
    """The device's Machine from hpcbench.models.hardware's tables; None when a peak is unknown (no guess)."""
    from hpcbench.models.hardware import peak_bandwidth_GBps, peak_tflops

    peaks = (peak_tflops(device_name, "bf16"), peak_tflops(device_name, "fp8"), peak_bandwidth_GBps(device_name))
    if any(p is None for p in peaks):
        return None
    return Machine(*peaks, pct_gemm=pct_gemm, pct_mem=pct_mem, min_kernel_s=min_kernel_s)


def gemm_dims(pass_name: str, M: int, N: int, K: int) -> tuple[int, int, int]:
    """(rows, cols, contraction) of the pass's GEMM for the layer shape M x N x K."""
    return {"fprop": (M, N, K), "dgrad": (M, K, N), "wgrad": (N, K, M)}[pass_name]


def _groups(n: int) -> int:
    return math.ceil(n / 128)


def gemm_bytes(rows: int, cols: int, k: int, dtype: str, recipe: str | None = None, b_tiles: bool = False) -> float:
    """DRAM bytes of C (rows, cols) = A (rows, k) @ B (cols, k)^T, BF16 output.

    b_tiles: B carries 1x128 tiles (wgrad) rather than 128x128 blocks (block recipe only)."""
    if dtype == "bf16":
        return BF16_BYTES * (rows * k + cols * k + rows * cols)
    nbytes = FP8_BYTES * (rows * k + cols * k) + BF16_BYTES * rows * cols
    if recipe == "block":
        b_scales = cols * _groups(k) if b_tiles else _groups(cols) * _groups(k)
        nbytes += SCALE_BYTES * (rows * _groups(k) + b_scales)
    return nbytes


def gemm_s(machine: Machine, pass_name: str, M: int, N: int, K: int, dtype: str, recipe: str | None = None) -> float:
    rows, cols, k = gemm_dims(pass_name, M, N, K)
    nbytes = gemm_bytes(rows, cols, k, dtype, recipe, b_tiles=pass_name == "wgrad")
    return max(2.0 * M * N * K / machine.flops_per_s(dtype), nbytes / machine.bytes_per_s(), machine.min_kernel_s)


# ---- the casts, as kernels (bytes each) -------------------------------------------------------

def _scaled_cast(r: int, c: int) -> list[float]:  # per tensor or per row: amax pass, then cast
    return [BF16_BYTES * r * c, (BF16_BYTES + FP8_BYTES) * r * c]


def _tile_cast(r: int, c: int) -> list[float]:  # 1x128 tiles along c
    return [(BF16_BYTES + FP8_BYTES) * r * c + SCALE_BYTES * r * _groups(c)]


def _tile_t_cast(r: int, c: int) -> list[float]:  # (r tokens, c channels) -> 128x1 tiles, transposed
    return [(BF16_BYTES + FP8_BYTES) * r * c + SCALE_BYTES * c * _groups(r)]


def _fp8_transpose(r: int, c: int, block_scales: bool = False) -> list[float]:
    kernels = [2 * FP8_BYTES * r * c]
    if block_scales:
        kernels.append(2 * SCALE_BYTES * _groups(r) * _groups(c))
    return kernels


def _bf16_transpose(r: int, c: int) -> list[float]:
    return [2 * BF16_BYTES * r * c]


def cast_kernels(pass_name: str, recipe: str, M: int, N: int, K: int) -> list[float]:
    """Bytes moved by each cast kernel the pass runs before its FP8 GEMM (see the module notes)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}")
    tile = recipe == "block"
    if pass_name == "fprop":  # X (M, K)
        return _tile_cast(M, K) if tile else _scaled_cast(M, K)
    if pass_name == "dgrad":  # dY (M, N) along N; W (N, K) to K-major W^T
        dy = _tile_cast(M, N) if tile else _scaled_cast(M, N)
        if recipe == "row":
            return dy + _bf16_transpose(N, K) + _scaled_cast(K, N)
        return dy + _fp8_transpose(N, K, block_scales=tile)
    if pass_name == "wgrad":  # dY^T (N, M) and X^T (K, M), along M
        if recipe == "tensor":
            return _fp8_transpose(M, N) + _fp8_transpose(M, K)
        if recipe == "row":
            return _bf16_transpose(M, N) + _scaled_cast(N, M) + _bf16_transpose(M, K) + _scaled_cast(K, M)
        return _tile_t_cast(M, N) + _tile_t_cast(M, K)
    raise ValueError(f"unknown pass {pass_name!r}")


def weight_cast_kernels(recipe: str, N: int, K: int) -> list[float]:
    """The weight's quantization in its forward layout, once per training step."""
    if recipe == "block":  # 128x128 blocks: one fused kernel
        return [(BF16_BYTES + FP8_BYTES) * N * K + SCALE_BYTES * _groups(N) * _groups(K)]
    return _scaled_cast(N, K)


def casts_s(machine: Machine, kernels: list[float]) -> float:
    return sum(machine.kernel_s(b) for b in kernels)


# ---- predictions ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Prediction:
    bf16_s: float
    fp8_s: float  # the FP8 GEMM alone
    cast_s: float  # the casts and transposes the FP8 GEMM needs

    @property
    def speedup_gemm(self) -> float:
        return self.bf16_s / self.fp8_s

    @property
    def speedup(self) -> float:
        """BF16 time over FP8 time including casts: above 1, FP8 is worth it."""
        return self.bf16_s / (self.fp8_s + self.cast_s)


def predict(machine: Machine, pass_name: str, recipe: str, M: int, N: int, K: int) -> Prediction:
    """One pass of the layer M x N x K (X (M, K), W (N, K)) in BF16 and in FP8 with `recipe`."""
    return Prediction(gemm_s(machine, pass_name, M, N, K, "bf16"),
                      gemm_s(machine, pass_name, M, N, K, "fp8", recipe),
                      casts_s(machine, cast_kernels(pass_name, recipe, M, N, K)))


def predict_step(machine: Machine, recipe: str, M: int, N: int, K: int) -> Prediction:
    """fprop + dgrad + wgrad together, plus the weight's quantization once."""
    parts = [predict(machine, p, recipe, M, N, K) for p in PASSES]
    return Prediction(sum(p.bf16_s for p in parts), sum(p.fp8_s for p in parts),
                      sum(p.cast_s for p in parts) + casts_s(machine, weight_cast_kernels(recipe, N, K)))


def breakeven_m(machine: Machine, pass_name: str | None, recipe: str, N: int, K: int,
                m_values: list[int]) -> int | None:
    """The smallest M of `m_values` from which on (for it and every larger one) FP8, casts included,
    is predicted to win; None if it does not win at the largest. pass_name None: the whole step."""
    first = None
    for m in sorted(m_values, reverse=True):
        p = predict_step(machine, recipe, m, N, K) if pass_name is None else predict(machine, pass_name, recipe, m, N, K)
        if p.speedup <= 1.0:
            break
        first = m
    return first
