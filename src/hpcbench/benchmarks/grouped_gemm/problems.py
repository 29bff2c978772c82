"""One grouped GEMM problem: expert sizes from a routing draw, the inputs of its layout, the float64
reference, the checks (accuracy on valid rows, padding rows untouched) and the work it counts.

Expert sizes. The moe_alltoall routing generator (`routing.draw`) routes tokens top-1 over the
receiving experts, each expert standing for one destination: uniform, or skewed so that expert 0
receives `imbalance` x the mean of the others (DeepEP V2's --unbalanced-ratio). The shape's M
(contiguous, masked) or K (k_grouped) is the mean per receiving expert: n_receiving x that many
tokens are routed. `empty_experts` experts receive nothing (experts 1, 3, 5, ..., then the even
ones from the end; never expert 0), so layouts meet an empty group between two others.
Contiguous rows and k_grouped tokens are padded per expert to the alignment (zeros).

Work counted (DeepGEMM DG1 `test_core.py`, reference/moe_fp8.md B3), on valid rows only:
  FLOPs  contiguous, masked: 2 * valid_m * N * K;  k_grouped: 2 * M * N * sum_k
  bytes  contiguous, masked: valid_m*K + G*K*N (FP8 inputs, 1 B; BF16 2 B) + 2*valid_m*N (BF16 out)
         k_grouped: (M + N) * sum_k (FP8 1 B; BF16 2 B) + 4*G*M*N (the FP32 output at 4 B; DG1
         counts it as 2 B). Scales are not counted (as DG1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hpcbench.benchmarks.grouped_gemm.settings import Point
from hpcbench.api.errors import UserError
from hpcbench.benchmarks.moe_alltoall.routing import draw

SENTINEL = -(2.0 ** 17)  # exact in BF16 and FP32, far from any product of unit-normal data


def empty_ids(G: int, empty: int) -> list[int]:
    """Which experts receive nothing: 1, 3, 5, ..., then even ones from the end; never expert 0."""
    order = list(range(1, G, 2)) + [g for g in range(G - 1, 0, -1) if g % 2 == 0]
    return sorted(order[:empty])


def group_sizes(p: Point) -> list[int]:
    """Rows (contiguous, masked) or tokens (k_grouped) per expert, from a seeded routing draw."""
    per_expert = p.K if p.layout == "k_grouped" else p.M
    empty = set(empty_ids(p.G, p.empty_experts))
    receiving = [g for g in range(p.G) if g not in empty]
    n = len(receiving)
    kind = p.routing if n > 1 else "uniform"
    routing = draw(kind, world=n, tokens=per_expert, experts=n, k=1, seed=p.seed, imbalance=p.imbalance)
    counts = torch.bincount(routing.idx.flatten(), minlength=n).tolist()
    sizes = [0] * p.G
    for g, c in zip(receiving, counts):
        sizes[g] = int(c)
    return sizes


def align_up(x: int, a: int) -> int:
    return a * math.ceil(x / a)


@dataclass
class Problem:
    point: Point
    sizes: list[int]  # rows or tokens per expert
    a: torch.Tensor  # BF16: contiguous [m_sum, K], masked [G, max_m, K], k_grouped [sum_k, M]
    b: torch.Tensor  # BF16: contiguous/masked [G, N, K], k_grouped [sum_k, N]
    starts: list[int]  # contiguous: first row of each expert; k_grouped: first token (both aligned); masked: []
    index: torch.Tensor | None  # contiguous: m_indices [m_sum] int32; masked: masked_m [G] int32; k_grouped: starts
    k_sizes: torch.Tensor | None = None  # k_grouped: tokens per expert, int32 [G]

    @property
    def layout(self) -> str:
        return self.point.layout

    @property
    def valid_m(self) -> int:
        return sum(self.sizes)

    def new_output(self, fill: float = SENTINEL) -> torch.Tensor:
        """The output buffer, filled with `fill` so that rows a kernel must not write can be checked."""
        p, dev = self.point, self.a.device
        if self.layout == "contiguous":
            return torch.full((self.a.shape[0], p.N), fill, dtype=torch.bfloat16, device=dev)
        if self.layout == "masked":
            return torch.full((p.G, p.max_m, p.N), fill, dtype=torch.bfloat16, device=dev)
        return torch.full((p.G, p.M, p.N), fill, dtype=torch.float32, device=dev)

    def valid(self, out: torch.Tensor) -> torch.Tensor:
        """The rows an output must hold, gathered: [valid_m, N] (contiguous, masked) or [G, M, N]."""
        if self.layout == "contiguous":
            return torch.cat([out[s:s + m] for s, m in zip(self.starts, self.sizes)])
        if self.layout == "masked":
            return torch.cat([out[g, :m] for g, m in enumerate(self.sizes)])
        return out

    def untouched(self, out: torch.Tensor, fill: float = SENTINEL) -> int | None:
        """How many rows that must not be written were written (0: all still hold `fill`); None for
        k_grouped, which writes every output element."""
        if self.layout == "k_grouped":
            return None
        if self.layout == "contiguous":
            rest = out[self.index < 0]
        else:
            rest = torch.cat([out[g, m:] for g, m in enumerate(self.sizes)])
        return int((rest != fill).any(dim=-1).sum()) if rest.numel() else 0

    def reference(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """float64 result on the valid rows (the shape `valid` returns) for inputs of this layout."""
        a, b = a.double(), b.double()
        if self.layout == "contiguous":
            parts = [a[s:s + m] @ b[g].T for g, (s, m) in enumerate(zip(self.starts, self.sizes))]
            return torch.cat(parts)
        if self.layout == "masked":
            return torch.cat([a[g, :m] @ b[g].T for g, m in enumerate(self.sizes)])
        return torch.stack([a[s:s + k].T @ b[s:s + k] for s, k in zip(self.starts, self.sizes)])


def build(p: Point, sizes: list[int], device: torch.device) -> Problem:
    """Random normal inputs (never zeros: VISION rule 3) of the point's layout."""
    gen = torch.Generator(device=device).manual_seed(p.seed * 1_000_003 + p.G * 7919 + p.M * 31 + p.N + p.K)

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=gen).to(torch.bfloat16)

    if p.layout == "contiguous":
        starts, m_sum = [], 0
        for m in sizes:
            starts.append(m_sum)
            m_sum += align_up(m, p.alignment)
        m_indices = torch.full((m_sum,), -1, dtype=torch.int32)
        for g, (s, m) in enumerate(zip(starts, sizes)):
            m_indices[s:s + m] = g
        a = randn(m_sum, p.K)
        a[m_indices.to(device) < 0] = 0  # padding rows hold no token (DeepEP's zero padding)
        return Problem(p, sizes, a, randn(p.G, p.N, p.K), starts, m_indices.to(device))
    if p.layout == "masked":
        masked_m = torch.tensor(sizes, dtype=torch.int32, device=device)
        return Problem(p, sizes, randn(p.G, p.max_m, p.K), randn(p.G, p.N, p.K), [], masked_m)
    starts, sum_k = [], 0
    for k in sizes:  # each expert's tokens padded to the alignment (DeepGEMM SM90: 128), the gaps zero
        starts.append(sum_k)
        sum_k += align_up(k, p.alignment)
    a, b = randn(sum_k, p.M), randn(sum_k, p.N)
    gap = torch.ones(sum_k, dtype=torch.bool, device=device)
    for s, k in zip(starts, sizes):
        gap[s:s + k] = False
    a[gap], b[gap] = 0, 0
    return Problem(p, sizes, a, b, starts, torch.tensor(starts, dtype=torch.int32, device=device),
                   torch.tensor(sizes, dtype=torch.int32, device=device))


def bytes_needed(p: Point) -> int:
    """Peak memory of a point, roughly: BF16 and FP8 inputs, two float64 copies of them and of the
    reference (original and dequantized), the output."""
    rows = p.G * (p.max_m if p.layout == "masked" else p.M + (p.alignment or 0))
    if p.layout == "k_grouped":
        inputs = p.G * (p.K + p.alignment) * (p.M + p.N)
        out_elems = p.G * p.M * p.N
    else:
        inputs = rows * p.K + p.G * p.N * p.K
        out_elems = rows * p.N
    return inputs * (2 + 1 + 8 + 8) + out_elems * (4 + 8 + 8 + 8)


def flops(problem: Problem) -> int:
    p = problem.point
    if p.layout == "k_grouped":
        return 2 * p.M * p.N * problem.valid_m
    return 2 * problem.valid_m * p.N * p.K


def bytes_moved(problem: Problem, dtype: str) -> int:
    """DG1's byte count (module notes): FP8 inputs at 1 B, BF16 at 2; BF16 out 2 B, FP32 out 4 B."""
    p, el = problem.point, 1 if dtype == "fp8" else 2
    if p.layout == "k_grouped":
        return el * (p.M + p.N) * problem.valid_m + 4 * p.G * p.M * p.N
    return el * (problem.valid_m * p.K + p.G * p.K * p.N) + 2 * problem.valid_m * p.N


def routing_columns(problem: Problem) -> dict:
    from hpcbench.benchmarks.moe_alltoall.routing import imbalance

    sizes = torch.tensor(problem.sizes)
    # imbalance among the experts that receive tokens: the busiest / the mean of the others
    cols = {"group_sizes": list(problem.sizes), "imbalance_measured": imbalance(sizes[sizes > 0]),
            "empty_groups": int((sizes == 0).sum())}
    if problem.layout == "k_grouped":
        cols["sum_k"] = problem.valid_m
        cols["padded_k"] = int(problem.a.shape[0])
    else:
        cols["valid_m"] = problem.valid_m
    if problem.layout == "contiguous":
        cols["m_sum"] = int(problem.a.shape[0])
    return cols


def check_capacity(points: list[Point]) -> None:
    """A masked layout's experts must fit their capacity: checked on the actual seeded draw."""
    for p in points:
        if p.layout == "masked":
            sizes = group_sizes(p)
            worst = max(range(p.G), key=lambda g: sizes[g])
            if sizes[worst] > p.max_m:
                raise UserError(f"grouped_gemm: {p.label}: expert {worst} receives {sizes[worst]} rows, more than "
                                f"the capacity max_m={p.max_m} (raise max_m, or lower imbalance)")
