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

Besides each sample's duration, every rank records how long it spent inside the timed call itself
(from the call to the end) and the duration of its first call of all (the first warm-up call:
connection setup, allocation, compilation). A synchronous collective ends at about the same moment
on every rank, so its durations do not say which rank the others waited for: the rank that arrived
last spent the least time inside the call. `RankTimes.own` therefore holds, per rank and
iteration, what that rank is answerable for: for work that waits on other ranks, its lateness
(the longest time any rank spent inside the call, minus its own); for work that does not
(`waits=False`: compute alone), its own duration. `hpcbench.measure.stragglers` names a straggler from it.

Fault injection (tests of the straggler report): HPCBENCH_INJECT_FAULT=slow:RANK:MS sleeps MS
milliseconds on global rank RANK inside every timed iteration, between the start of the sample and
the timed call, in every distributed family's timed loop (`fault_delay`). The runner records the
variable in every row (`injected_fault`) and in the run's metadata.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from hpcbench.api.errors import UserError
from hpcbench.runtime.distributed import World
from hpcbench.measure.timing import Stats, summarize, timed_span

FAULT_ENV = "HPCBENCH_INJECT_FAULT"  # slow:RANK:MS here; kill:RANK:POINT and hang:RANK:POINT: runtime.watchdog
_FAULT_FORMS = "slow:RANK:MS (MS > 0), kill:RANK:POINT or hang:RANK:POINT"

SYNC_ALIGNED = "barrier+all_reduce"  # host barrier, then a one-element all_reduce before the start
SYNC_BARRIER = "barrier"  # host barrier only


def sync_method(align: bool = True) -> str:
    """How `time_ranks` lined the ranks up before each sample (a row's `sync_method`)."""
    return SYNC_ALIGNED if align else SYNC_BARRIER


def injected_fault() -> str | None:
    """The raw HPCBENCH_INJECT_FAULT value, when set (recorded in rows and metadata)."""
    return os.environ.get(FAULT_ENV) or None


def slow_fault(spec: str | None = None) -> tuple[int, float] | None:
    """(rank, seconds) of a `slow:RANK:MS` fault; None for no fault or another kind (kill, hang).
    A malformed value is a UserError (one line, exit 2)."""
    spec = injected_fault() if spec is None else spec
    if not spec:
        return None
    parts = spec.split(":")
    try:
        action, rank = parts[0], int(parts[1])
        ok = len(parts) == 3 and action in ("slow", "kill", "hang") and rank >= 0 and parts[2] != ""
        ms = float(parts[2]) if ok and action == "slow" else None
    except (IndexError, ValueError):
        ok, ms = False, None
    if not ok or (ms is not None and not (0 < ms < float("inf"))):
        raise UserError(f"{FAULT_ENV}={spec!r}: expected {_FAULT_FORMS}")
    return (rank, ms / 1e3) if ms is not None else None


def check_fault_env(world_size: int | None = None) -> None:
    """Validate HPCBENCH_INJECT_FAULT before anything starts (families' `validate`, the runner)."""
    slow_fault()  # the form of every kind of fault
    spec = injected_fault()
    if spec and world_size is not None and int(spec.split(":")[1]) >= world_size:
        raise UserError(f"{FAULT_ENV}={spec!r}: rank {spec.split(':')[1]} is not in a world of {world_size} "
                        f"(ranks 0 to {world_size - 1})")


def fault_delay(rank: int) -> Callable[[], None]:
    """The injected delay of `rank`'s every timed iteration (a no-op without a slow fault on it).
    The one hook every distributed family's timed loop calls, inside its timed region."""
    fault = slow_fault()
    if fault is None or fault[0] != rank:
        return _no_delay
    seconds = fault[1]
    return lambda: time.sleep(seconds)


def _no_delay() -> None:
    return None


class Samples(list):
    """One rank's sample durations (a plain list of seconds) with what `gather_times` also needs:
    the time spent inside the timed call per sample, the first call's duration, and whether the
    work waits on other ranks (see the module docstring)."""

    def __init__(self, samples=(), in_call_s=(), first_call_s: float | None = None, waits: bool = True):
        super().__init__(samples)
        self.in_call_s = list(in_call_s)
        self.first_call_s = first_call_s
        self.waits = waits

    def per_call(self, calls: int) -> Samples:
        """The same samples divided by `calls` (a sample that ran the work `calls` times)."""
        return Samples([s / calls for s in self], [s / calls for s in self.in_call_s],
                       None if self.first_call_s is None else self.first_call_s / calls, self.waits)


def time_ranks(fn: Callable[[], object], world: World, iters: int, warmup: int,
               heartbeat: Callable[[], None] | None = None, align: bool = True, waits: bool = True) -> Samples:
    """This rank's duration of `fn` for each of `iters` samples, each started after a barrier and,
    with `align`, an alignment all_reduce on the device (see the module docstring). `waits`: `fn`
    waits on other ranks (a collective); False for work each rank does alone.

    CUDA: events on the current stream around `fn` (which must leave its work ordered before the
    end event, as torch's collectives do); CPU: the host clock.
    """
    cuda = world.device.kind == "cuda"
    first = None
    for i in range(warmup):
        if i == 0:
            first = _first_call(fn, cuda)
        else:
            fn()
    # the alignment runs on the timed work's group (the default one): NCCL on CUDA, so on the device
    on_device = cuda and world.backend == "nccl"
    flag = torch.zeros(1, device=world.device.torch_device if on_device else "cpu") if align else None
    delay = fault_delay(world.rank)
    samples, in_call = [], []
    with timed_span():
        for _ in range(iters):
            if heartbeat is not None:
                heartbeat()
            world.barrier()
            if align:
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # NCCL: the current stream, so the start event, waits for it
            if cuda:
                start, call, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
                start.record()
                delay()
                call.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1e3)
                in_call.append(call.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                delay()
                t1 = time.perf_counter()
                fn()
                t2 = time.perf_counter()
                samples.append(t2 - t0)
                in_call.append(t2 - t1)
    return Samples(samples, in_call, first if first is not None else (samples[0] if samples else None), waits)


def _first_call(fn, cuda: bool) -> float:
    """The first call's duration on the host clock (the device synchronised around it on CUDA)."""
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


@dataclass(frozen=True)
class RankTimes:
    per_rank: np.ndarray  # [world, iters] seconds
    mean_s: np.ndarray  # per iteration, mean over ranks
    slowest_s: np.ndarray  # per iteration, max over ranks
    slowest_rank: int  # the rank most often slowest
    slowest_share: float  # how often it was
    slowest_rank_per_iter: list[int]
    # what each rank is answerable for, per iteration ([world, iters] seconds; module docstring)
    own: np.ndarray | None = None
    own_basis: str = "duration"  # "lateness" (work that waits on other ranks) | "duration"
    first_call_s: np.ndarray | None = None  # [world] each rank's first call of the work
    nodes: list[str] | None = None  # each rank's node name

    @property
    def time_s(self) -> float:
        """nccl-tests' time: rank-averaged, here the median over iterations."""
        return float(np.median(self.mean_s))

    def slowest_stats(self) -> Stats:
        return summarize(self.slowest_s.tolist())


def gather_times(world: World, samples: list[float]) -> RankTimes:
    """Every rank's samples on every rank (one all_gather on the host group); with `Samples`, also
    the times inside the call, the first calls and the node names (see `own_times`)."""
    if not isinstance(samples, Samples) or len(samples.in_call_s) != len(samples):
        return rank_times(world.gather_rows(list(samples)).numpy())
    n = len(samples)
    first = samples.first_call_s
    packed = world.gather_rows([*samples, *samples.in_call_s, np.nan if first is None else first]).numpy()
    table, in_call, firsts = packed[:, :n], packed[:, n:2 * n], packed[:, 2 * n]
    return rank_times(table, in_call=in_call, waits=samples.waits,
                      first_call_s=None if np.isnan(firsts).any() else firsts, nodes=node_names(world))


def own_times(table: np.ndarray, in_call: np.ndarray | None, waits: bool) -> tuple[np.ndarray, str]:
    """Per rank and iteration, what the rank is answerable for, and its name (pure).

    Work that waits on other ranks ends at about the same moment on all of them, so a rank that
    arrived `d` seconds after the earliest spent `d` less inside the call: its lateness is the
    longest time any rank spent inside the call minus its own. Work done alone: its duration."""
    if waits and in_call is not None:
        return in_call.max(axis=0, keepdims=True) - in_call, "lateness"
    return table, "duration"


def rank_times(table: np.ndarray, in_call: np.ndarray | None = None, waits: bool = True,
               first_call_s: np.ndarray | None = None, nodes: list[str] | None = None) -> RankTimes:
    """Summaries of a [world, iters] table of per-rank sample times (pure: tests feed tables)."""
    slowest = table.argmax(axis=0)
    rank, hits = Counter(slowest.tolist()).most_common(1)[0]
    own, basis = own_times(table, in_call, waits)
    return RankTimes(per_rank=table, mean_s=table.mean(axis=0), slowest_s=table.max(axis=0),
                     slowest_rank=int(rank), slowest_share=hits / table.shape[1],
                     slowest_rank_per_iter=[int(r) for r in slowest], own=own, own_basis=basis,
                     first_call_s=first_call_s, nodes=nodes)


_NODES: dict[int, tuple[World, list[str]]] = {}  # id(world) -> (world, names): gathered once per world


def node_names(world: World) -> list[str]:
    """Each rank's node name (`runtime.environment.node_name`), gathered once per world."""
    cached = _NODES.get(id(world))
    if cached is not None and cached[0] is world:
        return cached[1]
    from hpcbench.runtime.environment import node_name

    names = [None] * world.size
    dist.all_gather_object(names, node_name(), group=world.cpu_group)
    _NODES[id(world)] = (world, names)
    return names


def nearest_rank_percentile(x: np.ndarray, pct: float) -> float:
    """nccl-tests' p99: the nearest-rank percentile (equals the max with fewer than 100 samples)."""
    ordered = np.sort(x)
    return float(ordered[min(len(ordered) - 1, max(0, int(np.ceil(pct / 100 * len(ordered))) - 1))])
