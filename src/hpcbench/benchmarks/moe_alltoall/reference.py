"""Single-process references: what each rank must receive and combine, from the global routing.

Every rank knows the whole routing (it is drawn from the seed) and the hash that makes the token
values, so it rebuilds the rows every source sends it, in the order the dispatcher sends them,
without any traffic. Checks run outside the timed loops and count wrong entries or rows.
"""

from __future__ import annotations

import torch

from hpcbench.benchmarks.moe_alltoall.exchange import (
    Exchange,
    RowFormat,
    expert_scale,
    pack_rows,
    send_order,
    token_values,
)
from hpcbench.benchmarks.moe_alltoall.routing import Routing, amplitude


def expected_counts(routing: Routing, layout: str, me: int) -> torch.Tensor:
    """The counts every source sends rank `me` (per rank: [W]; per expert: [W * E/W])."""
    world = routing.world
    return torch.cat([send_order(routing.idx[s], routing.weights[s], routing.num_experts, world, layout)
                      .counts.view(world, -1)[me] for s in range(world)])


def expected_recv(fmt: RowFormat, routing: Routing, me: int, seed: int, device=None) -> torch.Tensor:
    """[R, width] uint8: the wire rows rank `me` receives, grouped by source rank (built on `device`:
    the GPU's own, at DeepSeek-V3 sizes, to keep the check quick)."""
    parts = []
    amp = amplitude(fmt.top_k)
    for s in range(routing.world):
        order = send_order(routing.idx[s], routing.weights[s], routing.num_experts, routing.world, fmt.layout)
        tokens = order.tokens[order.dest == me]
        x = token_values(s, tokens.to(device), fmt.hidden, amp, seed)
        parts.append(pack_rows(fmt, x, routing.idx[s][tokens].to(device), routing.weights[s][tokens].to(device)))
    return torch.cat(parts)


def expected_out(fmt: RowFormat, routing: Routing, me: int, seed: int, device=None) -> torch.Tensor:
    """[T, H] bfloat16: each token of rank `me` times the sum over its selections of expert scale
    (times weight when weighted): the combine's exact result."""
    idx = routing.idx[me].to(device)
    factor = torch.where(idx >= 0, expert_scale(idx), torch.zeros((), device=idx.device))
    if fmt.weighted:
        factor = factor * routing.weights[me].to(device)
    x = token_values(me, torch.arange(routing.tokens, device=device), fmt.hidden, amplitude(fmt.top_k), seed)
    return (x * factor.sum(dim=1)[:, None]).to(torch.bfloat16)


def wrong_rows(got: torch.Tensor, want: torch.Tensor) -> int:
    """Rows that differ in any byte (all of them, when the shapes differ)."""
    want = want.to(got.device)
    if got.shape != want.shape:
        return max(got.shape[0], want.shape[0], 1)
    if got.dtype != torch.uint8:
        got, want = got.contiguous().view(torch.uint8), want.contiguous().view(torch.uint8)
    return int((got != want).reshape(got.shape[0], -1).any(dim=1).sum()) if got.numel() else 0


def check_counts(ex: Exchange) -> int:
    want = expected_counts(ex.routing, ex.fmt.layout, ex.rank)
    got = ex.handle.recv_counts.cpu()
    return int((got != want).sum()) if got.shape == want.shape else max(got.numel(), want.numel(), 1)


def check_dispatch(ex: Exchange) -> int:
    return wrong_rows(ex.recv, expected_recv(ex.fmt, ex.routing, ex.rank, ex.seed, ex.device))


def check_combine(ex: Exchange) -> int:
    return wrong_rows(ex.out, expected_out(ex.fmt, ex.routing, ex.rank, ex.seed, ex.device))
