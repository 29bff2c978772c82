"""Routing: which experts each token goes to, its statistics and the bytes it makes every rank move.

Pure functions on CPU tensors: every rank draws the same global routing from the seed, so each can
build its own send plan and a single-process reference for what it must receive, without traffic.

Experts are block-partitioned over ranks (expert e lives on rank e // (E/W), as DeepEP and pplx).
A routing is `idx [W, T, k]` (the k experts of token t of rank s, -1 for an empty slot, as DeepEP's
masked slots) and `weights [W, T, k]` (powers of two: 1 or 1/2; 0 in empty slots).

Kinds:
- uniform: k distinct experts per token, uniformly at random (top-k of uniform scores);
- skewed: rank 0's experts' scores are multiplied by f, with f found by bisection so that the
  busiest rank receives `ratio` x the mean of the others (DeepEP V2's --unbalanced-ratio);
- node_limited: ranks form G equal groups ("nodes"); a token's experts lie in at most g groups, the
  g groups with the highest best expert score (DeepSeek-V3's "at most 4 nodes", DeepEP internode);
- matrix: a W x W file of token counts (tokens of rank i sent to rank j, counted once per token and
  rank, nccl-tests alltoallv style); a token gets one expert on each rank it goes to, other slots
  are empty, so both layouts move exactly the matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from hpcbench.api.errors import UserError

FP8_BLOCK = 128  # one FP32 scale per token per 128 channels
META_ID_BYTES = 2  # a global expert id travels as int16 in per_rank rows
MAX_EXACT_TOPK = 32  # beyond this the crafted values cannot keep every combine exact in BF16


@dataclass(frozen=True)
class Routing:
    idx: torch.Tensor  # [W, T, k] int64, -1 = empty slot
    weights: torch.Tensor  # [W, T, k] float32: 1 or 0.5, 0 in empty slots
    num_experts: int
    skew_factor: float | None = None  # skewed: the score multiplier the bisection found

    @property
    def world(self) -> int:
        return self.idx.shape[0]

    @property
    def tokens(self) -> int:
        return self.idx.shape[1]

    @property
    def per_rank(self) -> int:
        return self.num_experts // self.world


# ---- the kinds ------------------------------------------------------------------------------------

def _topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(scores, k, dim=-1, sorted=False).indices


def uniform(world: int, tokens: int, experts: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return _topk(torch.rand(world, tokens, experts, generator=gen), k)


def in_rank(idx: torch.Tensor, experts: int, world: int) -> torch.Tensor:
    """[..., T, W] bool: the token has at least one expert on that rank."""
    rank = torch.where(idx >= 0, idx // (experts // world), world)  # empty slots to a spare column
    hit = torch.zeros(*idx.shape[:-1], world + 1, dtype=torch.bool, device=idx.device)
    hit.scatter_(-1, rank, True)
    return hit[..., :world]


def imbalance(recv_tokens: torch.Tensor) -> float:
    """The busiest rank's received tokens / the mean of the others' (1 for one rank)."""
    counts = recv_tokens.to(torch.float64)
    if counts.numel() < 2:
        return 1.0
    busiest = int(torch.argmax(counts))
    others = torch.cat([counts[:busiest], counts[busiest + 1:]]).mean()
    return float(counts[busiest] / others) if others > 0 else math.inf


def _rank0_ratio(idx: torch.Tensor, experts: int, world: int) -> float:
    recv = in_rank(idx, experts, world).sum(dim=(0, 1))
    others = recv[1:].to(torch.float64).mean()
    return float(recv[0] / others) if others > 0 else math.inf


def skewed(world: int, tokens: int, experts: int, k: int, ratio: float, gen: torch.Generator,
           steps: int = 40) -> tuple[torch.Tensor, float]:
    """Rank 0 receives `ratio` x the mean of the others: rank 0's expert scores are scaled by f,
    found by bisection on log2 f in [-30, 30] with the same draws at every step (the ratio is then
    monotone in f; f < 1 corrects a draw that favours rank 0 by chance, so ratio 1 is met too).
    Returns the routing and f."""
    u = torch.rand(world, tokens, experts, generator=gen)
    hot = torch.zeros(experts, dtype=torch.bool)
    hot[: experts // world] = True
    if world < 2:
        return _topk(u, k), 1.0

    def route(f: float) -> torch.Tensor:
        return _topk(torch.where(hot, u * f, u), k)

    lo, hi = -30.0, 30.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        if _rank0_ratio(route(2.0 ** mid), experts, world) < ratio:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda e: abs(_rank0_ratio(route(2.0 ** e), experts, world) - ratio))
    return route(2.0 ** best), 2.0 ** best


def node_limited(world: int, tokens: int, experts: int, k: int, groups: int, per_token: int,
                 gen: torch.Generator) -> torch.Tensor:
    scores = torch.rand(world, tokens, experts, generator=gen)
    by_group = scores.view(world, tokens, groups, experts // groups)
    chosen = torch.topk(by_group.amax(dim=-1), per_token, dim=-1, sorted=False).indices
    keep = torch.zeros(world, tokens, groups, dtype=torch.bool).scatter_(-1, chosen, True)
    masked = torch.where(keep.unsqueeze(-1), by_group, torch.full_like(by_group, -1.0))
    return _topk(masked.view(world, tokens, experts), k)


def from_matrix(matrix: torch.Tensor, tokens: int, experts: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """Rank i sends matrix[i, j] of its tokens to rank j (each once): the tokens for each
    destination are those with the fewest destinations so far (random tie-break), so no token
    needs more than ceil(row sum / T) slots; each gets one random expert on each of its ranks."""
    world = matrix.shape[0]
    if tokens < matrix_tokens(matrix, k):
        raise UserError(f"moe_alltoall.traffic_matrix: needs at least {matrix_tokens(matrix, k)} tokens per rank "
                        f"at top_k={k} (tokens_per_rank={tokens})")
    per_rank = experts // world
    idx = torch.full((world, tokens, k), -1, dtype=torch.int64)
    for src in range(world):
        hit = torch.zeros(tokens, world, dtype=torch.bool)
        load = torch.zeros(tokens, dtype=torch.int64)
        for dst in range(world):
            tie = torch.randperm(tokens, generator=gen)
            take = torch.argsort(load * tokens + tie)[: int(matrix[src, dst])]
            hit[take, dst] = True
            load[take] += 1
        slot = hit.cumsum(dim=1) - 1  # the slot of each (token, destination) pair
        t, d = hit.nonzero(as_tuple=True)
        local = torch.randint(per_rank, (t.numel(),), generator=gen)
        idx[src, t, slot[t, d]] = d * per_rank + local
    return idx


def draw(kind: str, world: int, tokens: int, experts: int, k: int, seed: int, imbalance: float | None = None,
         groups: int | None = None, per_token: int | None = None, matrix: str | None = None) -> Routing:
    """The global routing of a point, the same on every rank (a CPU generator seeded by `seed`);
    weights are 1 or 1/2 at random (0 in empty slots)."""
    gen = torch.Generator().manual_seed(seed)
    factor = None
    if kind == "skewed":
        idx, factor = skewed(world, tokens, experts, k, float(imbalance), gen)
    elif kind == "node_limited":
        idx = node_limited(world, tokens, experts, k, groups, per_token, gen)
    elif kind == "matrix":
        idx = from_matrix(read_matrix(matrix), tokens, experts, k, gen)
    else:
        idx = uniform(world, tokens, experts, k, gen)
    halves = torch.randint(2, idx.shape, generator=gen).to(torch.float32)
    weights = torch.where(idx >= 0, torch.exp2(-halves), torch.zeros(()))
    return Routing(idx, weights, experts, factor)


# ---- the traffic-matrix file ----------------------------------------------------------------------

def read_matrix(path: str) -> torch.Tensor:
    """A square matrix of non-negative integer token counts: one line per source rank, values
    separated by spaces or commas, `#` comments. Anything else is a UserError of one line."""
    key = f"moe_alltoall.traffic_matrix={path}"
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        raise UserError(f"{key}: cannot read it ({exc.strerror or exc})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").split()
        if not line:
            continue
        try:
            rows.append([int(v) for v in line])
        except ValueError:
            raise UserError(f"{key}: line {n} holds a value that is not an integer token count") from None
    if not rows:
        raise UserError(f"{key}: no counts in the file")
    if any(len(r) != len(rows) for r in rows):
        raise UserError(f"{key}: the matrix must be square (one row and one column per rank), "
                        f"got {len(rows)} rows of lengths {sorted({len(r) for r in rows})}")
    matrix = torch.tensor(rows, dtype=torch.int64)
    if (matrix < 0).any():
        i, j = (matrix < 0).nonzero()[0].tolist()
        raise UserError(f"{key}: negative token count {int(matrix[i, j])} from rank {i} to rank {j}")
    return matrix


def matrix_tokens(matrix: torch.Tensor, k: int) -> int:
    """The fewest tokens per rank that can carry the matrix with top-k: no destination gets more
    tokens than exist, no token needs more than k destinations."""
    return max(1, int(matrix.max()), math.ceil(int(matrix.sum(dim=1).max()) / k))


# ---- statistics and bytes -------------------------------------------------------------------------

def rows_matrix(r: Routing, layout: str) -> torch.Tensor:
    """[W src, W dst] rows sent: once per (token, rank) for per_rank (duplicates removed, DeepEP
    normal mode), once per (token, expert) for per_expert (DeepEP low-latency, pplx)."""
    if layout == "per_rank":
        return in_rank(r.idx, r.num_experts, r.world).sum(dim=1).to(torch.int64)
    valid = r.idx >= 0
    dest = torch.where(valid, r.idx // r.per_rank, 0)
    out = torch.zeros(r.world, r.world, dtype=torch.int64)
    return out.scatter_add_(1, dest.view(r.world, -1), valid.view(r.world, -1).to(torch.int64))


def stats(r: Routing) -> dict:
    """Per point: tokens received per rank (once per token) min/mean/max, the imbalance ratio,
    copies per token (distinct ranks), selections per token, the busiest expert's load."""
    hit = in_rank(r.idx, r.num_experts, r.world)
    recv = hit.sum(dim=(0, 1))
    valid = r.idx >= 0
    load = torch.bincount(r.idx[valid], minlength=r.num_experts).to(torch.float64)
    return {"recv_tokens_min": int(recv.min()), "recv_tokens_mean": float(recv.to(torch.float64).mean()),
            "recv_tokens_max": int(recv.max()), "imbalance_measured": imbalance(recv),
            "copies_per_token": float(hit.sum(dim=-1).to(torch.float64).mean()),
            "selections_per_token": float(valid.sum(dim=-1).to(torch.float64).mean()),
            "expert_load_max_over_mean": float(load.max() / load.mean()) if load.sum() > 0 else None,
            "skew_factor": r.skew_factor}


def payload_bytes(hidden: int, dtype: str) -> int:
    """DeepEP's logical bytes of one row: BF16 2H; FP8 H plus one FP32 scale per 128 channels."""
    return 2 * hidden if dtype == "bf16" else hidden + 4 * (hidden // FP8_BLOCK)


def meta_bytes(layout: str, top_k: int, weighted: bool) -> int:
    """Routing metadata in a per_rank row: the token's k global expert ids (int16), plus its k FP32
    weights when the combine is weighted (applied on the expert's rank, as DeepEP normal mode).
    per_expert rows carry none: the expert follows from the row's position (the counts are per
    expert) and the weights stay with the source, which applies them in the combine."""
    if layout != "per_rank":
        return 0
    return top_k * META_ID_BYTES + (4 * top_k if weighted else 0)


def byte_counts(rows: torch.Tensor, wire_row: int, logical_row: int) -> dict:
    """Per-rank bytes from a [W src, W dst] rows matrix, local traffic included (as DeepEP):
    what each rank sends and receives on the wire, and the logical bytes it receives."""
    sent, recv = rows.sum(dim=1), rows.sum(dim=0)
    return {"rows_sent_per_rank": sent.tolist(), "rows_recv_per_rank": recv.tolist(),
            "bytes_sent_per_rank": (sent * wire_row).tolist(), "bytes_recv_per_rank": (recv * wire_row).tolist(),
            "logical_bytes_recv_per_rank": (recv * logical_row).tolist()}


def amplitude(top_k: int) -> int:
    """Token values are integers in [-a, a]: a combine term is at most 2a (expert scale 2, weight 1)
    in quarter steps, so k terms stay exact in BF16 (|sum| <= 64 with 1/4 resolution)."""
    return max(1, min(3, 32 // top_k))
