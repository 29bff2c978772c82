"""Per-rank bytes of each phase (exact, from the routing) and the speed columns of a timed phase.

Bandwidths (decimal GB/s, from the median of the slowest rank's time t):
  logical_GBps   DeepEP's: logical bytes per rank / t, mean over ranks. Dispatch: rows received x
                 payload (FP8: H + 4H/128 bytes, BF16: 2H), local rows included; combine: the same
                 rows sent back in BF16 (2H). Metadata bytes are not counted (DeepEP V1 does not).
  busiest_GBps   nccl-tests alltoallv: max over ranks of max(wire bytes sent, received) / t
  algbw_GBps     wire bytes sent per rank (mean) / t
"""

from __future__ import annotations

import numpy as np
import torch

from hpcbench.benchmarks.moe_alltoall.routing import Routing, byte_counts, rows_matrix
from hpcbench.benchmarks.moe_alltoall.settings import Point
from hpcbench.measure.rank_timing import RankTimes, gather_times, time_ranks
from hpcbench.measure.timing import timed_columns


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, cfg, ctx, waits: bool = True) -> RankTimes:
    """Every rank's samples of `fn` (`waits`: it waits on other ranks; False for compute alone)."""
    samples = time_ranks(fn, ctx.world, cfg.iters, cfg.warmup_iters, ctx.heartbeat, waits=waits)
    return gather_times(ctx.world, samples)


def phase_bytes(point: Point, routing: Routing, width: int | None = None) -> dict:
    """Per-rank bytes of each phase, exact, from the routing (pure). `width`: the wire row, if not
    hpcbench's (payload plus per_rank metadata)."""
    fmt = point.fmt
    rows = rows_matrix(routing, point.layout)
    world = routing.world
    dispatch = byte_counts(rows, width or fmt.width, fmt.payload)
    dispatch["logical_bytes_per_rank"] = dispatch["logical_bytes_recv_per_rank"]
    combine = byte_counts(rows.t(), 2 * fmt.hidden, 2 * fmt.hidden)
    combine["logical_bytes_per_rank"] = combine["bytes_sent_per_rank"]  # DeepEP: what combine sends back
    width = world if point.layout == "per_rank" else routing.num_experts
    count = {"bytes_sent_per_rank": [8 * width] * world, "bytes_recv_per_rank": [8 * width] * world}
    return {"counts": count, "dispatch": dispatch, "combine": combine}


def speed(times: RankTimes, nbytes: dict | None, method: str) -> dict:
    """Time columns, and the bandwidths where the phase moves bytes (`nbytes` None: a local phase)."""
    t = float(np.median(times.slowest_s))
    out = {"time_us": times.time_s * 1e6, "slowest_rank": times.slowest_rank, "slowest_rank_share": times.slowest_share,
           **timed_columns(times.slowest_s, method), "rank_mean_samples_s": times.mean_s.tolist()}
    if nbytes is None:
        return out
    sent, recv = nbytes["bytes_sent_per_rank"], nbytes["bytes_recv_per_rank"]
    out.update(algbw_GBps=float(np.mean(sent)) / t / 1e9,
               busiest_GBps=max(max(s, r) for s, r in zip(sent, recv)) / t / 1e9)
    if "logical_bytes_per_rank" in nbytes:
        out["logical_GBps"] = float(np.mean(nbytes["logical_bytes_per_rank"])) / t / 1e9
    return out
