"""Timing across ranks: ranks aligned before every sample, every rank's samples gathered afterwards.

Each sample starts with the ranks lined up twice (VISION rule 7):
1. a host barrier (`World.barrier`: on CUDA after a device synchronize), then
2. an alignment collective: a one-element all_reduce on the timed work's own process group,
   issued right before the start event (CUDA: on the same stream, so the event is recorded only
   once every rank's device has reached it) or the start timestamp (CPU/gloo: the host is the
   device).
Ranks leave a host barrier at different times (scheduling, launch latency, a busy core), and with
the barrier alone an early rank's start event fires while the others are still on their way: on
NCCL it then times its wait for them inside the collective, inflating small-message times. After
the alignment collective the skew left is that collective's own exit skew (a few microseconds on
NVLink), and the host's time to launch the timed work is absorbed in it, since the host queues
the start event and the work while the device still waits in the alignment.
We chose this over nccl-tests' default (many back-to-back iterations between two barriers, one
time for all) because it keeps one sample per iteration per rank, which the per-iteration slowest
rank and the statistics in `compare` need. `time_ranks(..., align=False)` keeps the host barrier
only, for comparison; the method used is named by `sync_method` (a row may record it).

A collective finishes when its slowest rank does, so per sample we keep both the mean over ranks
(what nccl-tests reports by default) and the maximum (the slowest rank; nccl-tests' -I columns).
Gathering happens after the timed loop, on the host-side group, so it costs nothing inside it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from hpcbench.runtime.distributed import World
from hpcbench.timing import Stats, summarize

SYNC_ALIGNED = "barrier+all_reduce"  # host barrier, then a one-element all_reduce before the start
SYNC_BARRIER = "barrier"  # host barrier only


def sync_method(align: bool = True) -> str:
    """How `time_ranks` lined the ranks up before each sample (a row's `sync_method`)."""
    return SYNC_ALIGNED if align else SYNC_BARRIER


def time_ranks(fn: Callable[[], object], world: World, iters: int, warmup: int,
               heartbeat: Callable[[], None] | None = None, align: bool = True) -> list[float]:
    """This rank's duration of `fn` for each of `iters` samples, each started after a barrier and,
    with `align`, an alignment all_reduce on the device (see the module docstring).

    CUDA: events on the current stream around `fn` (which must leave its work ordered before the
    end event, as torch's collectives do); CPU: the host clock.
    """
    for _ in range(warmup):
        fn()
    cuda = world.device.kind == "cuda"
    # the alignment runs on the timed work's group (the default one): NCCL on CUDA, so on the device
    on_device = cuda and world.backend == "nccl"
    flag = torch.zeros(1, device=world.device.torch_device if on_device else "cpu") if align else None
    samples = []
    for _ in range(iters):
        if heartbeat is not None:
            heartbeat()
        world.barrier()
        if align:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # NCCL: the current stream, so the start event, waits for it
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return samples


@dataclass(frozen=True)
class RankTimes:
    per_rank: np.ndarray  # [world, iters] seconds
    mean_s: np.ndarray  # per iteration, mean over ranks
    slowest_s: np.ndarray  # per iteration, max over ranks
    slowest_rank: int  # the rank most often slowest
    slowest_share: float  # how often it was
    slowest_rank_per_iter: list[int]

    @property
    def time_s(self) -> float:
        """nccl-tests' time: rank-averaged, here the median over iterations."""
        return float(np.median(self.mean_s))

    def slowest_stats(self) -> Stats:
        return summarize(self.slowest_s.tolist())


def gather_times(world: World, samples: list[float]) -> RankTimes:
    table = world.gather_rows(samples).numpy()
    return rank_times(table)


def rank_times(table: np.ndarray) -> RankTimes:
    """Summaries of a [world, iters] table of per-rank sample times (pure: tests feed tables)."""
    slowest = table.argmax(axis=0)
    rank, hits = Counter(slowest.tolist()).most_common(1)[0]
    return RankTimes(per_rank=table, mean_s=table.mean(axis=0), slowest_s=table.max(axis=0),
                     slowest_rank=int(rank), slowest_share=hits / table.shape[1],
                     slowest_rank_per_iter=[int(r) for r in slowest])


def nearest_rank_percentile(x: np.ndarray, pct: float) -> float:
    """nccl-tests' p99: the nearest-rank percentile (equals the max with fewer than 100 samples)."""
    ordered = np.sort(x)
    return float(ordered[min(len(ordered) - 1, max(0, int(np.ceil(pct / 100 * len(ordered))) - 1))])
