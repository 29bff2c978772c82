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
