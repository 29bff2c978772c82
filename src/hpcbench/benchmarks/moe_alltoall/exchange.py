"""Dispatch and combine with `torch.distributed.all_to_all_single` and split sizes (gloo and NCCL).

Per point, each rank holds its tokens packed once as wire rows (outside any timed region, as a real
caller hands the dispatcher its already-quantized activations):
  payload   BF16: 2H bytes; FP8 E4M3: H bytes + one FP32 scale per 128 channels (power-of-two scales,
            as DeepSeek-V3 quantizes before dispatch), sent as bytes: gloo has no FP8 dtype
  metadata  per_rank rows only: the token's k global expert ids (int16), and its k weights (FP32)
            when the combine is weighted

The three phases, as DeepEP's reference dispatcher (EP2 refs.py) does them:
  counts    the send layout (which token rows go to which rank, sorted by destination, then expert
            for per_expert, then token), one all_to_all_single of the int64 counts (per destination
            rank, or per destination expert), and the split sizes read back on the host
  dispatch  gather the rows into the send buffer, one all_to_all_single with those splits
  combine   the reverse all_to_all_single of the experts' BF16 outputs, then the per-token sum at
            the source (FP32 accumulation, BF16 result): unweighted, or weighted by the router's
            weights (per_expert: at the source; per_rank: on the expert's rank before sending back)

Correctness is exact: token values are small integers from a hash of (rank, token, channel), the
"experts" of the check scale their input by 1/2, 1 or 2 (by expert id), weights are 1 or 1/2, so
every received byte and every combined value is predictable, whatever the order of the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hpcbench.benchmarks.moe_alltoall.routing import (
    FP8_BLOCK,
    Routing,
    amplitude,
    in_rank,
)

FP8_MAX = 448.0


# ---- values, FP8, wire rows -----------------------------------------------------------------------

def _mix(v: torch.Tensor) -> torch.Tensor:
    for _ in range(2):  # two rounds of MINSTD: products stay far inside int64
        v = (v % 2147483647) * 48271 % 2147483647
    return v


def token_values(src: int, tokens: torch.Tensor, hidden: int, amp: int, seed: int) -> torch.Tensor:
    """[n, H] float32 integers in [-amp, amp]: a hash of (source rank, token, channel, seed)."""
    h = torch.arange(hidden, device=tokens.device, dtype=torch.int64)
    v = _mix(tokens.to(torch.int64)[:, None] * 7919 + h[None, :] * 104729 + (src * 1000003 + seed * 31337 + 1))
    return ((v >> 7) % (2 * amp + 1) - amp).to(torch.float32)


def quantize_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 values and FP32 power-of-two scales per 1x128 block: scale = 2^ceil(log2(amax / 448))."""
    n, hidden = x.shape
    blocks = x.view(n, hidden // FP8_BLOCK, FP8_BLOCK)
    amax = blocks.abs().amax(dim=-1).clamp(min=1e-4)
    scale = torch.exp2(torch.ceil(torch.log2(amax / FP8_MAX)))
    q = (blocks / scale[..., None]).to(torch.float8_e4m3fn).view(n, hidden)
    return q, scale.to(torch.float32)


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    n, hidden = q.shape
    return (q.to(torch.float32).view(n, hidden // FP8_BLOCK, FP8_BLOCK) * scale[..., None]).view(n, hidden)


@dataclass(frozen=True)
class RowFormat:
    """How a token travels: payload dtype, hidden size, layout and the metadata it carries."""

    dtype: str  # bf16 | fp8
    hidden: int
    layout: str  # per_rank | per_expert
    top_k: int
    weighted: bool

    @property
    def payload(self) -> int:
        return 2 * self.hidden if self.dtype == "bf16" else self.hidden + 4 * (self.hidden // FP8_BLOCK)

    @property
    def meta(self) -> bool:
        return self.layout == "per_rank"

    @property
    def width(self) -> int:
        if not self.meta:
            return self.payload
        return self.payload + 2 * self.top_k + (4 * self.top_k if self.weighted else 0)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """[n, ...] as [n, bytes per row] uint8 (a view when contiguous; n may be 0)."""
    return t.contiguous().view(torch.uint8).view(t.shape[0], math.prod(t.shape[1:]) * t.element_size())


def pack_rows(fmt: RowFormat, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[n, width] uint8 wire rows of tokens `x` [n, H] with their routing `ids`/`weights` [n, k]."""
    if fmt.dtype == "bf16":
        parts = [_bytes(x.to(torch.bfloat16))]
    else:
        q, scale = quantize_fp8(x)
        parts = [_bytes(q), _bytes(scale)]
    if fmt.meta:
        parts.append(_bytes(ids.to(torch.int16)))
        if fmt.weighted:
            parts.append(_bytes(weights.to(torch.float32)))
    return torch.cat(parts, dim=1)


def unpack_rows(fmt: RowFormat, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Token values (float32, dequantized), and for per_rank rows the global ids and weights."""
    h, k = fmt.hidden, fmt.top_k
    n = rows.shape[0]
    if fmt.dtype == "bf16":
        x = rows[:, : 2 * h].contiguous().view(torch.bfloat16).to(torch.float32)
    else:
        q = rows[:, :h].contiguous().view(torch.float8_e4m3fn)
        scale = rows[:, h: fmt.payload].contiguous().view(torch.float32).view(n, h // FP8_BLOCK)
        x = dequantize_fp8(q, scale)
    ids = weights = None
    if fmt.meta:
        at = fmt.payload
        ids = rows[:, at: at + 2 * k].contiguous().view(torch.int16).to(torch.int64).view(n, k)
        if fmt.weighted:
            weights = rows[:, at + 2 * k: at + 6 * k].contiguous().view(torch.float32).view(n, k)
    return x, ids, weights


def expert_scale(expert: torch.Tensor) -> torch.Tensor:
    """The check's experts: expert e multiplies by 2^((e mod 3) - 1), i.e. 1/2, 1 or 2."""
    return torch.exp2((expert % 3).to(torch.float32) - 1)


# ---- the send layout ------------------------------------------------------------------------------

@dataclass
class SendOrder:
    tokens: torch.Tensor  # [n] source token of each send row, sorted by destination (then expert), then token
    dest: torch.Tensor  # [n] destination rank of each send row
    weight: torch.Tensor  # [n] per_expert: the selection's weight (applied at the source in combine); else 1
    counts: torch.Tensor  # per_rank: rows per destination rank [W]; per_expert: rows per expert [E]


def send_order(idx: torch.Tensor, weights: torch.Tensor, experts: int, world: int, layout: str) -> SendOrder:
    """The rows one rank sends for its routing `idx`/`weights` [T, k]."""
    if layout == "per_rank":
        hit = in_rank(idx, experts, world)  # [T, W]
        dest, tokens = hit.t().nonzero(as_tuple=True)  # row-major: by destination, then token
        return SendOrder(tokens, dest, torch.ones(tokens.numel(), device=idx.device), hit.sum(dim=0).to(torch.int64))
    t, j = (idx >= 0).nonzero(as_tuple=True)
    e = idx[t, j]
    order = torch.argsort(e * idx.shape[0] + t)
    return SendOrder(t[order], e[order] // (experts // world), weights[t, j][order].to(torch.float32),
                     torch.bincount(e, minlength=experts).to(torch.int64))


@dataclass
class Handle:
    """What the counts phase leaves for dispatch and combine (DeepEP's handle)."""

    order: SendOrder
    recv_counts: torch.Tensor  # [W * c] the counts every source sent this rank
    send_splits: list[int]
    recv_splits: list[int]


def exchange_counts(idx: torch.Tensor, weights: torch.Tensor, experts: int, world: int, layout: str,
                    group=None) -> Handle:
    order = send_order(idx, weights, experts, world, layout)
    recv = torch.empty_like(order.counts)
    dist.all_to_all_single(recv, order.counts, group=group)
    send_splits = order.counts.view(world, -1).sum(dim=1).tolist()  # host reads: the CPU sync of DeepEP's notify
    recv_splits = recv.view(world, -1).sum(dim=1).tolist()
    return Handle(order, recv, send_splits, recv_splits)


# ---- one rank's share of a point ------------------------------------------------------------------

class Exchange:
    """One rank's tokens of a point, their buffers, and the three phases as callables (on `group`,
    whose ranks are the routing's; None: the default group)."""

    def __init__(self, fmt: RowFormat, routing: Routing, rank: int, seed: int, device, group=None):
        self.fmt, self.routing, self.rank, self.seed, self.device = fmt, routing, rank, seed, device
        self.group = group
        self.amp = amplitude(fmt.top_k)
        self.idx = routing.idx[rank].to(device)
        self.weights = routing.weights[rank].to(device)
        tokens = torch.arange(routing.tokens, device=device)
        self.x = token_values(rank, tokens, fmt.hidden, self.amp, seed)
        self.packed = pack_rows(fmt, self.x, self.idx, self.weights)
        self.handle: Handle | None = None

    def counts(self) -> None:
        r = self.routing
        self.handle = exchange_counts(self.idx, self.weights, r.num_experts, r.world, self.fmt.layout, self.group)

    def allocate(self) -> None:
        """Buffers for dispatch and combine, sized by the counts (outside the timed loops)."""
        h, w = self.handle, self.fmt.width
        self.send = torch.empty(sum(h.send_splits), w, dtype=torch.uint8, device=self.device)
        self.recv = torch.empty(sum(h.recv_splits), w, dtype=torch.uint8, device=self.device)
        self.y = torch.zeros(sum(h.recv_splits), self.fmt.hidden, dtype=torch.bfloat16, device=self.device)
        self.back = torch.empty(sum(h.send_splits), self.fmt.hidden, dtype=torch.bfloat16, device=self.device)
        self.acc = torch.zeros(self.routing.tokens, self.fmt.hidden, dtype=torch.float32, device=self.device)
        self.out = torch.empty(self.routing.tokens, self.fmt.hidden, dtype=torch.bfloat16, device=self.device)
        self.scale_back = self.fmt.layout == "per_expert" and self.fmt.weighted

    def dispatch(self) -> None:
        h = self.handle
        torch.index_select(self.packed, 0, h.order.tokens, out=self.send)
        dist.all_to_all_single(self.recv, self.send, h.recv_splits, h.send_splits, group=self.group)

    def combine(self) -> None:
        h = self.handle
        dist.all_to_all_single(_bytes(self.back), _bytes(self.y), h.send_splits, h.recv_splits, group=self.group)
        self.acc.zero_()
        rows = self.back.to(torch.float32)
        if self.scale_back:
            rows.mul_(h.order.weight[:, None])
        self.acc.index_add_(0, h.order.tokens, rows)
        self.out.copy_(self.acc)

    def recv_experts(self) -> torch.Tensor:
        """per_expert: the global expert of each received row, from the per-expert counts."""
        per = self.routing.per_rank
        local = torch.arange(per, device=self.device).repeat(self.routing.world) + self.rank * per
        return torch.repeat_interleave(local, self.handle.recv_counts)

    def expert_outputs(self) -> None:
        """The check's experts applied to the received rows: the combine's input (untimed)."""
        x, ids, weights = unpack_rows(self.fmt, self.recv)
        if self.fmt.layout == "per_expert":
            factor = expert_scale(self.recv_experts())
        else:
            per = self.routing.per_rank
            local = (ids >= 0) & (ids // per == self.rank)
            factor = torch.where(local, expert_scale(ids), torch.zeros((), device=self.device))
            if weights is not None:
                factor = factor * weights
            factor = factor.sum(dim=1)
        self.y.copy_(x * factor[:, None])

    def dispatch_then_combine(self) -> None:
        self.dispatch()
        self.combine()
