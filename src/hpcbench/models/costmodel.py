"""The latency-bandwidth (alpha-beta) model of a collective, fitted to a measured size sweep.

A ring algorithm over n ranks takes L(n) latency-bound steps and moves factor(n) * S bytes over
each rank's link, so

    t(n, S) = alpha * L(n) + factor(n) * S / B

with alpha the per-step latency and B the bus bandwidth (nccl-tests' busbw at large sizes).
Fitting t = a + b*S at the measured world size n gives alpha = a / L(n) and B = factor(n) / b;
evaluating at another n is a *projection*: it assumes the ring algorithm and the same links, which
NCCL's tree/NVLS algorithms and a network hop between nodes do not honour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class AlphaBeta:
    collective: str
    world_size: int  # where it was fitted
    alpha_s: float  # latency per ring step
    bus_bandwidth_Bps: float  # B, bytes/s
    points: int
    max_rel_residual: float  # worst |fit - measured| / measured over the fitted points

    def predict(self, world_size: int, size_bytes: int, factor: Callable[[int], float],
                steps: Callable[[int], int]) -> float:
        return self.alpha_s * steps(world_size) + factor(world_size) * size_bytes / self.bus_bandwidth_Bps


class CannotFit(ValueError):
    pass


def fit(collective: str, world_size: int, sizes: list[int], times_s: list[float],
        factor: Callable[[int], float], steps: Callable[[int], int]) -> AlphaBeta:
    """Least squares on relative error (weights 1/t): small and large messages count alike."""
    if len(sizes) < 2 or len(set(sizes)) < 2:
        raise CannotFit("needs at least two distinct sizes")
    if factor(world_size) <= 0 or steps(world_size) <= 0:
        raise CannotFit(f"a world of {world_size} rank(s) moves nothing over links: nothing to model")
    s = np.asarray(sizes, dtype=np.float64)
    t = np.asarray(times_s, dtype=np.float64)
    w = 1.0 / t
    design = np.stack([np.ones_like(s), s], axis=1) * w[:, None]
    (a, b), *_ = np.linalg.lstsq(design, t * w, rcond=None)
    if a < 0:  # latency cannot be negative: refit through the origin
        a, b = 0.0, float(np.sum(w * w * s * t) / np.sum(w * w * s * s))
    if not b > 0:
        raise CannotFit("time does not grow with size in this sweep (latency-bound only): no bandwidth term")
    residual = float(np.max(np.abs(a + b * s - t) / t))
    return AlphaBeta(collective, world_size, alpha_s=float(a) / steps(world_size),
                     bus_bandwidth_Bps=factor(world_size) / float(b), points=len(sizes),
                     max_rel_residual=residual if math.isfinite(residual) else float("nan"))
