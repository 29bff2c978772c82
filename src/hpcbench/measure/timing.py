"""The one timer every benchmark uses.

GPU work is asynchronous, so on CUDA each repetition is bracketed by its own pair of CUDA
events, with an L2 flush enqueued before the start event (outside the timed span). The flush
*reads* a buffer twice the size of L2 (a reduction into one preallocated element): writing it
(`zero_()`) would leave L2 full of dirty lines that the timed kernel then pays to write back
(VISION rule 8).

Launches too short to time individually are replayed from a CUDA graph: Triton's Python launch
path costs ~20-40 us, as much as a small-M GEMM, and a CUDA event pair around one launch measures
it. `TimingPolicy.cuda_graph="auto"` (the GPU default) decides from the GPU's own time per call:
back-to-back calls after warm-up give an upper bound (they are host-bound when the host is the
slower side: a quantize + GEMM row with 50 us of Python around a 15 us kernel reads 50 us there);
unless that bound is already under `graph_below_us` or far above any host launch path
(`HOST_BOUND_MAX_S`), the calls are captured and a replay, timed on the device, decides
(`choose_cuda_method`, a pure function). The row's `timing_method` says which (`cuda_event` |
`cuda_graph`). If a function cannot be captured, auto mode falls back to events.

Inputs are cold in both modes: events flush L2 before each call; a graph captures the flush before
every call inside it, and a second graph of the flushes alone is replayed too, its median time
subtracted (`per_call_samples`). In a graph the flush after a call also writes back that call's
dirty output lines, which the flushes alone do not: graph samples include the output's
write-back (small: graph mode is for short calls, whose outputs are small).

On the CPU a host clock (`time.perf_counter`) is used. The number of repetitions follows a count
and a time budget, and the raw samples are kept so that comparisons can use statistics.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from hpcbench.api.errors import ImpossibleMeasurement


# ---- the timed repetitions, observed (the runner meters their energy: hpcbench.measure.energy.TimedEnergy)

_span_observer: Callable[[], contextlib.AbstractContextManager] | None = None


@contextlib.contextmanager
def observing_timed_spans(observer: Callable[[], contextlib.AbstractContextManager]):
    """Within this block every timed loop (the repetitions whose samples are kept, from their first
    launch to the synchronize after the last) runs inside `observer()`; warm-up, estimates,
    captures and checks run outside it."""
    global _span_observer
    previous, _span_observer = _span_observer, observer
    try:
        yield
    finally:
        _span_observer = previous


def timed_span() -> contextlib.AbstractContextManager:
    return _span_observer() if _span_observer is not None else contextlib.nullcontext()


@dataclass(frozen=True)
class TimingPolicy:
    warmup: int = 3  # calls before timing (compilation, autotuning, caches, clocks)
    # host clock (the CPU fallback): after `warmup` calls, calls go on until this long has passed,
    # so the first timed sample does not land on the scheduler's first quantum or a cold clock
    # (a 20 ms first sample beside 22 us ones); costs at most this plus one call per point
    warmup_s: float = 0.0
    min_reps: int = 5
    max_reps: int = 200
    budget_s: float = 0.5  # target total time of the timed repetitions
    flush_l2: bool = True  # CUDA only: read a buffer 2x the L2 size before each repetition
    # CUDA only: time graph replays of `graph_calls` launches; "auto": when a call takes under
    # graph_below_us (launch overhead would be measured), True: always, False: never
    cuda_graph: bool | str = "auto"
    graph_calls: int = 20
    graph_below_us: float = 50.0

    def __post_init__(self):
        if self.warmup < 0 or self.min_reps < 1 or self.max_reps < self.min_reps:
            raise ValueError("timing: need warmup >= 0 and 1 <= min_reps <= max_reps")
        if not self.budget_s > 0 or self.graph_calls < 1:
            raise ValueError("timing: budget_s and graph_calls must be positive")
        if self.cuda_graph not in ("auto", True, False):
            raise ValueError(f"timing: cuda_graph must be auto, true or false, not {self.cuda_graph!r}")
        if not self.warmup_s >= 0:
            raise ValueError("timing: warmup_s must be >= 0")
        if not self.graph_below_us >= 0:
            raise ValueError("timing: graph_below_us must be >= 0")


@dataclass(frozen=True)
class Stats:
    n: int
    median_s: float
    p10_s: float
    p90_s: float
    iqr_s: float
    mean_s: float
    min_s: float
    max_s: float
    cv: float  # sample standard deviation / mean

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(samples_s: list[float]) -> Stats:
    """Median, p10/p90, IQR and CV of raw per-repetition times (seconds)."""
    if not samples_s:
        raise ValueError("no samples to summarize")
    x = np.asarray(samples_s, dtype=np.float64)
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise ImpossibleMeasurement(f"non-positive or non-finite time among {len(x)} samples")
    p10, q1, median, q3, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return Stats(
        n=len(x),
        median_s=float(median),
        p10_s=float(p10),
        p90_s=float(p90),
        iqr_s=float(q3 - q1),
        mean_s=mean,
        min_s=float(x.min()),
        max_s=float(x.max()),
        cv=std / mean,
    )


@dataclass(frozen=True)
class Timing:
    samples_s: list[float]
    method: str  # "perf_counter" | "cuda_event" | "cuda_graph"
    stats: Stats


def time_fn(fn: Callable[[], object], device: torch.device, policy: TimingPolicy) -> Timing:
    """Time `fn()` on `device` under `policy`; returns raw samples and their summary."""
    if device.type == "cuda":
        samples, method = _time_cuda(fn, device, policy)
    else:
        samples, method = _time_host(fn, policy), "perf_counter"
    return Timing(samples_s=samples, method=method, stats=summarize(samples))


def choose_cuda_method(estimate_s: float, policy: TimingPolicy) -> str:
    """"cuda_graph" or "cuda_event" for a function estimated at `estimate_s` per call.

    auto: graph replays below `graph_below_us` per call, where a CUDA event pair around a single
    launch would time the host's launch path (Triton's: ~20-40 us) rather than the kernel."""
    if policy.cuda_graph is True:
        return "cuda_graph"
    if policy.cuda_graph is False:
        return "cuda_event"
    return "cuda_graph" if estimate_s * 1e6 < policy.graph_below_us else "cuda_event"


# No host launch path (Python + Triton's launcher + a few small torch ops) takes this long: a
# back-to-back estimate above it is the GPU's time, and events time it without a capture.
HOST_BOUND_MAX_S = 1e-3
DECIDING_REPLAYS = 3


def _time_cuda(fn, device, policy: TimingPolicy) -> tuple[list[float], str]:
    for _ in range(policy.warmup):
        fn()
    estimate = _cuda_estimate(fn, device, calls=max(1, min(5, policy.min_reps)))
    if policy.cuda_graph is False or (policy.cuda_graph == "auto" and estimate >= HOST_BOUND_MAX_S):
        return _time_cuda_events(fn, device, policy, estimate), "cuda_event"
    try:
        captured = _capture(fn, device, policy)
    except RuntimeError:  # not capturable (a host sync, a CPU tensor...): events, unless forced
        if policy.cuda_graph is True:
            raise
        torch.cuda.synchronize(device)
        return _time_cuda_events(fn, device, policy, estimate), "cuda_event"
    gpu_s = float(np.median(_replay_samples(captured, device, DECIDING_REPLAYS)))
    if choose_cuda_method(gpu_s, policy) == "cuda_graph":
        with timed_span():
            samples = _replay_samples(captured, device, _reps_for(gpu_s * captured.calls, policy))
        return samples, "cuda_graph"
    return _time_cuda_events(fn, device, policy, estimate), "cuda_event"


def _reps_for(estimate_s: float, policy: TimingPolicy) -> int:
    if estimate_s <= 0:
        return policy.max_reps
    return max(policy.min_reps, min(policy.max_reps, int(policy.budget_s / estimate_s)))


def _time_host(fn, policy: TimingPolicy) -> list[float]:
    estimate = _host_warmup(fn, policy.warmup, policy.warmup_s)
    samples = []
    with timed_span():
        for _ in range(_reps_for(estimate, policy)):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return samples


def _host_warmup(fn, calls: int, seconds: float = 0.0) -> float:
    """Run `fn` `calls` times (at least once) and then until `seconds` have passed since the first
    call; return the last call's duration."""
    elapsed, start, done = 0.0, time.perf_counter(), 0
    while done < max(1, calls) or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        done += 1
    return elapsed


class L2Flusher:
    """Reads a buffer twice the size of L2 so each repetition starts with a cold cache.

    Reading, never writing (VISION rule 8): a `zero_()` of the buffer would evict the kernel's
    data too, but leave L2 full of dirty lines whose write-back the timed kernel would pay for.
    The reduction writes one preallocated element; the buffer itself is never written (its
    contents are whatever `torch.empty` gave: only the traffic matters). `nbytes` overrides the
    size (tests; CPU)."""

    def __init__(self, device: torch.device, enabled: bool, nbytes: int | None = None):
        self.buffer = self.sink = None
        if enabled:
            if nbytes is None:
                l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 << 20
                nbytes = 2 * l2
            self.buffer = torch.empty(max(1, nbytes // 4), dtype=torch.int32, device=device)
            self.sink = torch.empty((), dtype=torch.int64, device=device)

    def __call__(self):
        if self.buffer is not None:
            torch.sum(self.buffer, dim=0, dtype=torch.int64, out=self.sink)


def _cuda_estimate(fn, device, calls: int) -> float:
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / 1e3 / calls


def _time_cuda_events(fn, device, policy: TimingPolicy, estimate: float) -> list[float]:
    reps = _reps_for(estimate, policy)
    flush = L2Flusher(device, policy.flush_l2)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    with timed_span():
        for start, end in zip(starts, ends):
            flush()  # enqueued before the start event: not part of the measured span
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
    return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]


@dataclass
class Captured:
    """`calls` launches of a function captured in one graph, each after an L2 flush, and (when
    flushing) the flushes alone in a second graph, whose time is subtracted."""

    replay: Callable[[], None]
    flushes: Callable[[], None] | None
    calls: int
    flush: "L2Flusher | None" = None  # kept alive: both graphs read its buffer at every replay


def _capture(fn, device, policy: TimingPolicy) -> Captured:
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(max(1, policy.warmup)):  # allocations and autotuning before capture
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    flush = L2Flusher(device, policy.flush_l2)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(policy.graph_calls):
            flush()
            fn()
    flushes = None
    if flush.buffer is not None:
        only = torch.cuda.CUDAGraph()
        with torch.cuda.graph(only):
            for _ in range(policy.graph_calls):
                flush()
        flushes = only.replay
    return Captured(graph.replay, flushes, policy.graph_calls, flush)


def _event_times(replay, device, reps: int) -> list[float]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        start.record()
        replay()
        end.record()
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]


def per_call_samples(replays_s: list[float], flushes_s: list[float] | None, calls: int) -> list[float]:
    """One sample per replay: (its time - the flushes' median time) / calls."""
    flush = float(np.median(flushes_s)) if flushes_s else 0.0
    return [(t - flush) / calls for t in replays_s]


def _replay_samples(captured: Captured, device, reps: int) -> list[float]:
    flushes = _event_times(captured.flushes, device, max(3, reps // 4)) if captured.flushes else None
    return per_call_samples(_event_times(captured.replay, device, reps), flushes, captured.calls)


def tflops(flops: float, seconds: float, peak_tflops: float | None) -> float:
    """Throughput in TFLOP/s, refusing numbers that cannot be true.

    Raises ImpossibleMeasurement for a non-positive time or a throughput above the device's
    dense peak (a sign of a broken measurement, e.g. an asynchronous launch timed on the host).
    """
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ImpossibleMeasurement(f"impossible time {seconds!r} s")
    value = flops / seconds / 1e12
    if peak_tflops is not None and value > peak_tflops:
        raise ImpossibleMeasurement(
            f"{value:.1f} TFLOP/s exceeds the device's dense peak of {peak_tflops:.1f} TFLOP/s"
        )
    return value


# the statistics columns every timed row carries, in this order (mean_s stays out: stored rows never had it)
STAT_COLUMNS = ("n_samples", "median_s", "p10_s", "p90_s", "iqr_s", "cv", "min_s", "max_s")


def timed_columns(samples_s, method: str) -> dict:
    """The one contract for a timed row: the timing method, the statistics columns and the raw
    samples `compare` tests (seconds). Raises ImpossibleMeasurement for non-positive times."""
    samples = [float(s) for s in samples_s]
    stats = summarize(samples).as_dict()
    stats["n_samples"] = stats.pop("n")
    return {"timing_method": method, **{c: stats[c] for c in STAT_COLUMNS}, "samples_s": samples}


def host_or_event(device_kind: str) -> str:
    """How a multi-rank family's samples were taken on this device."""
    return "cuda_event" if device_kind == "cuda" else "perf_counter"
