"""Accuracy of a result against a float64 reference (VISION.md sec. 3, GEMM)."""

from __future__ import annotations

import math

import torch


def calc_diff(out: torch.Tensor, ref: torch.Tensor) -> float:
    """DeepGEMM's measure, 1 - 2*sum(x*y) / sum(x^2 + y^2): ~0 when equal, 1 when orthogonal."""
    x, y = out.double(), ref.double()
    denom = (x * x + y * y).sum().item()
    if denom == 0:
        return 0.0
    return 1.0 - 2.0 * (x * y).sum().item() / denom


def sqnr_db(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10*log10(|ref|^2 / |out - ref|^2) in dB; inf if exact."""
    noise = (out.double() - ref.double()).pow(2).sum().item()
    signal = ref.double().pow(2).sum().item()
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def max_rel_err(out: torch.Tensor, ref: torch.Tensor, floor_frac: float = 1e-2) -> float:
    """max |out - ref| / max(|ref|, floor), floor = floor_frac * RMS(ref).

    The floor keeps outputs that happen to be near zero from dominating the maximum.
    """
    ref = ref.double()
    floor = floor_frac * ref.pow(2).mean().sqrt().item()
    denom = ref.abs().clamp_min(floor if floor > 0 else 1e-300)
    return ((out.double() - ref).abs() / denom).max().item()


def accuracy(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    return {"calc_diff": calc_diff(out, ref), "sqnr_db": sqnr_db(out, ref), "max_rel_err": max_rel_err(out, ref)}


# ---- FP8 accumulation: how much error a correct kernel may show (VISION.md sec. 3) -------------
#
# The accumulation modes a GEMM row records (`accumulation`):
FP32 = "fp32"  # full FP32 (or better) accumulation: CPU, BF16 tensor cores, the Triton interpreter
FAST = "fast"  # FP8 tensor-core accumulator over the whole K, never promoted (cuBLAS use_fast_accum,
#                Triton's FP8 tl.dot on sm_89/sm_90): ~13-14 mantissa bits on Hopper and Ada
PROMOTED_K128 = "fp32_promote_k128"  # the tensor-core partial sums added into FP32 every 128 of K
#                (DeepSeek-V3 / DeepGEMM; cuBLASLt without fast accumulation; block-scaled kernels)
PROMOTE_INTERVAL = 128
MMA_GROUP_K = 32  # products added to the accumulator per step: the k of an FP8 WGMMA (sm_90) / mma.sync (sm_89)


def unpromoted_k(K: int, accumulation: str) -> int:
    """The longest run of K the reduced-precision accumulator sums before an FP32 promotion."""
    if accumulation == FAST:
        return K
    if accumulation == PROMOTED_K128:
        return min(K, PROMOTE_INTERVAL)
    if accumulation == FP32:
        return 0
    raise ValueError(f"unknown accumulation mode {accumulation!r}")


def accumulation_calc_diff(K: int, bits: int = 13, group: int = MMA_GROUP_K) -> float:
    """Model of calc_diff (against the exact result of the same FP8 inputs) caused by summing K
    products in an accumulator that keeps `bits` mantissa bits and truncates.

    Model: the tensor core adds `group` products at a time (their sum exact) to its accumulator A
    and truncates A to `bits` mantissa bits (round toward zero: tensor cores align and truncate).
    Truncation drops on average half an ulp of |A|; with ulp(A) = 2^(floor(log2|A|) - bits) and a
    log-uniform mantissa, E[ulp/|A|] = 2^-bits / (2 ln 2), so each step shrinks A by a fraction
        rho = 2^-bits / (4 ln 2)            (4.4e-5 for bits = 13).
    After n = K / group steps the error is e = -rho * sum_j A_j, with A_j the partial sums: a
    random walk for random data, E[A_i A_j] = min(i, j) s^2, so E[e^2] = rho^2 s^2 n^3 / 3 against
    a signal E[A_n^2] = s^2 n: a relative squared error rho^2 n^2 / 3. The bias is along the result
    (the sum shrinks), so the error grows like K, the squared error like K^2 (rounding to nearest
    would give only ~K and ~100x less). calc_diff = |e|^2 / (|x|^2 + |y|^2) ~ |e|^2 / (2|y|^2):
        calc_diff(K) ~ (rho K / group)^2 / 6
    = 2.1e-5 at K=8192, 8.5e-5 at 16384, 2.6e-4 at 28672 for bits=13: within ~5% of a direct
    emulation (tests/test_accumulation.py). Promotion every 128 of K restarts the walk each 128,
    so its error is the model at K=128 (5e-9): negligible beside the BF16 output rounding.
    """
    if K <= 0:
        return 0.0
    rho = 2.0 ** -bits / (4 * math.log(2))
    return (rho * K / group) ** 2 / 6


def fp8_tolerance(floor: float, K: int, accumulation: str, bits: int = 13, margin: float = 4.0) -> float:
    """calc_diff tolerance of an FP8 GEMM: `floor` (what a full-FP32 kernel may show: the BF16
    output rounding alone gives at most (2^-8)^2 / 2 = 7.6e-6 against the dequantized inputs) plus
    `margin` times the modelled accumulation error over the K the accumulator runs unpromoted. A
    margin of 4 (2x in RMS error) covers an accumulator one bit shorter, or groups of 16 products."""
    return floor + margin * accumulation_calc_diff(unpromoted_k(K, accumulation), bits)
