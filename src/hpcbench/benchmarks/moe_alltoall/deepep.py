"""DeepEP's `Buffer` as a second implementation of the same points (normal mode, intranode, NVLink).

Used only when `deep_ep` imports on a CUDA/NCCL run with every rank on one node (at most 8);
otherwise its rows are recorded as skipped with the reason. Never a hard dependency: nothing here
is imported unless the import succeeds. Only the per_rank layout (DeepEP's normal mode) is wired;
per_expert would be DeepEP's low-latency mode (a separate RDMA buffer), recorded as skipped.

Same inputs as the torch implementation (the same routing, token values, power-of-two FP8 scales),
same exact checks (received payload bytes; combined tokens), same metrics. Phases: layout =
`get_dispatch_layout`, a local kernel with no communication (DeepEP's notify, the count exchange,
runs inside a dispatch without a handle and cannot be timed apart: torch's `counts` row, which
includes its exchange, has no DeepEP twin), dispatch = a dispatch with the cached handle (as
DeepEP's own benchmark), combine.
This path has not been run on hardware by this repository's tests (no GPU in CI).
"""

from __future__ import annotations

import importlib
import importlib.util

import torch
import torch.distributed as dist

from hpcbench.benchmarks.moe_alltoall.exchange import (
    dequantize_fp8,
    expert_scale,
    quantize_fp8,
    token_values,
)
from hpcbench.benchmarks.moe_alltoall.metrics import phase_bytes, speed, sync, timed
from hpcbench.benchmarks.moe_alltoall.reference import (
    expected_out,
    expected_recv,
    wrong_rows,
)
from hpcbench.benchmarks.moe_alltoall.routing import Routing, amplitude
from hpcbench.benchmarks.moe_alltoall.settings import Point
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.measure.timing import host_or_event

_BUFFERS: dict = {}
BUFFER_BYTES = int(1e9)  # NVLink buffer, as DeepEP's test_intranode.py


def unavailable(point: Point, ctx) -> str | None:
    """Why DeepEP cannot run this point here, or None."""
    if point.layout != "per_rank":
        return "DeepEP's per-(token, expert) mode is its low-latency buffer, not wired in hpcbench (per_rank is)"
    if ctx.device.kind != "cuda" or ctx.world.backend != "nccl":
        return "DeepEP needs CUDA GPUs and the NCCL backend"
    if importlib.util.find_spec("deep_ep") is None:
        return "deep_ep is not importable (install DeepEP on the GPU node to compare)"
    if ctx.world.size > 8 or ctx.world.local_size != ctx.world.size:
        return "only DeepEP's intranode path is wired: all ranks on one node, at most 8"
    return None


def skipped_rows(base: dict, names: tuple[str, ...], reason: str) -> list[dict]:
    return [{**base, "phase": p, "status": STATUS_SKIPPED, "reason": reason} for p in names]


def _buffer():
    deep_ep = importlib.import_module("deep_ep")
    if "world" not in _BUFFERS:
        _BUFFERS["world"] = deep_ep.Buffer(dist.group.WORLD, BUFFER_BYTES, 0)
    return _BUFFERS["world"]


def _inputs(point: Point, routing: Routing, rank: int, device):
    tokens = torch.arange(routing.tokens, device=device)
    x = token_values(rank, tokens, point.hidden, amplitude(point.top_k), point.seed)
    if point.dispatch_dtype == "fp8":
        q, scale = quantize_fp8(x)
        return x, (q, scale)
    return x, x.to(torch.bfloat16)


def _payload_bytes(recv_x) -> torch.Tensor:
    if isinstance(recv_x, tuple):
        q, scale = recv_x
        return torch.cat([q.view(torch.uint8), scale.contiguous().view(torch.uint8).view(q.shape[0], -1)], dim=1)
    return recv_x.contiguous().view(torch.uint8)


def _expert_outputs(point: Point, routing: Routing, rank: int, recv_x, recv_idx, recv_w) -> torch.Tensor:
    """The check's experts on DeepEP's received rows (local ids, -1 elsewhere), weights applied here."""
    if isinstance(recv_x, tuple):
        x = dequantize_fp8(*recv_x)
    else:
        x = recv_x.to(torch.float32)
    valid = recv_idx >= 0
    factor = torch.where(valid, expert_scale(recv_idx + rank * routing.per_rank), torch.zeros((), device=x.device))
    if point.weighted:
        factor = factor * recv_w
    return (x * factor.sum(dim=1)[:, None]).to(torch.bfloat16)


def measure_deep_ep(point: Point, routing: Routing, base: dict, names: tuple[str, ...], cfg, ctx) -> list[dict]:
    reason = unavailable(point, ctx)
    if reason:
        return skipped_rows(base, names, reason)
    device, rank = ctx.device.torch_device, ctx.world.rank
    buf = _buffer()
    idx, w = routing.idx[rank].to(device), routing.weights[rank].to(device)
    _, x = _inputs(point, routing, rank, device)
    layout = lambda: buf.get_dispatch_layout(idx, routing.num_experts)
    per_rank, _, per_expert, in_rank, _ = layout()
    recv_x, recv_idx, recv_w, _, handle, _ = buf.dispatch(x=x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                                          num_tokens_per_expert=per_expert, topk_idx=idx, topk_weights=w)
    sync(device)
    want = expected_recv(point.fmt, routing, rank, point.seed, device)[:, : point.fmt.payload]
    wrong = {"layout": 0, "dispatch": ctx.world.sum_int(wrong_rows(_payload_bytes(recv_x), want))}
    y = _expert_outputs(point, routing, rank, recv_x, recv_idx, recv_w)
    out = buf.combine(x=y, handle=handle)[0]
    sync(device)
    wrong["combine"] = ctx.world.sum_int(wrong_rows(out, expected_out(point.fmt, routing, rank, point.seed, device)))
    if any(wrong.values()):
        return [{**base, "phase": p, "status": STATUS_FAILED, "wrong": wrong[p],
                 "reason": f"DeepEP: {wrong['dispatch']} wrong rows, {wrong['combine']} wrong tokens"} for p in names]
    nbytes = phase_bytes(point, routing, width=point.fmt.payload)  # a cached dispatch moves the payload only
    nbytes["layout"] = None  # a local kernel: nothing crosses the wire
    fns = {"layout": layout, "dispatch": lambda: buf.dispatch(x=x, handle=handle),
           "combine": lambda: buf.combine(x=y, handle=handle)}
    return [{**base, "phase": p, "status": STATUS_OK, "wrong": 0, **(nbytes[p] or {}),
             **speed(timed(fns[p], cfg, ctx), nbytes[p], host_or_event(ctx.device.kind))} for p in names]
