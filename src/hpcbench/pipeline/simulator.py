"""Discrete-event simulation of a schedule with per-action costs: when each rank runs what.

Each rank runs its actions in order; an action starts when the rank is free and its input is on
the rank: a forward needs the previous stage's output (plus the point-to-point time when that
stage is on another rank), a backward (B or I) needs the next stage's input gradient (the last
stage needs its own forward: the loss), a W follows its I on the same rank. An overlapped pair
(FB) waits for both inputs and lasts its own cost (`Costs.FB`, by default F + B: no gain), and
both its outputs leave at its end. Point-to-point transfers take latency + bytes / bandwidth and
do not occupy the compute stream. Nothing is assumed about steps or slots: time is continuous, so
measured per-action costs can be fed back in.

The event loop wakes a rank only when the dependency it waits for is produced, so the cost is
linear in the number of actions (64 stages x 1024 microbatches of DualPipe in about a second).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from hpcbench.pipeline.ir import Action, Schedule


@dataclass
class Costs:
    """Durations (any time unit, consistently) per action type; `per_stage` overrides per stage."""

    F: float = 1.0
    B: float = 2.0  # full backward
    I: float | None = None  # noqa: E741  backward-input; default B - W
    W: float | None = None  # backward-weight; default B / 2
    FB: float | None = None  # overlapped F&B pair; default F + B (no overlap gain)
    per_stage: dict[int, dict[str, float]] = field(default_factory=dict)
    p2p_latency: float = 0.0
    p2p_bandwidth: float = math.inf  # bytes per time unit
    activation_bytes: float = 0.0  # bytes sent per microbatch per stage boundary
    dispatch: float = 0.0  # a rank's own gap between actions (posting messages, bookkeeping): not busy
    per_action: dict[str, float] = field(default_factory=dict)  # str(action) -> duration: replay a measured step

    def of(self, kind: str, stage: int) -> float:
        over = self.per_stage.get(stage, {})
        if kind in over:
            return over[kind]
        f = over.get("F", self.F)
        b = over.get("B", self.B)
        w = over.get("W", self.W if self.W is not None else b / 2)
        return {"F": f, "B": b, "W": w, "I": over.get("I", self.I if self.I is not None else b - w)}[kind]

    def pair(self, f: Action, b: Action) -> float:
        if self.FB is not None:
            return self.FB
        return self.of("F", f.stage) + self.of(b.kind, b.stage)

    def transfer(self) -> float:
        return self.p2p_latency + (self.activation_bytes / self.p2p_bandwidth if self.activation_bytes else 0.0)


@dataclass(frozen=True)
class Span:
    rank: int
    action: Action
    start: float
    end: float


@dataclass(frozen=True)
class Transfer:
    src_rank: int
    dst_rank: int
    src_action: Action  # the F (its activation) or the B/I (its input gradient) that is sent
    start: float
    end: float
    dst_key: tuple  # ("f"|"b", stage, microbatch) it makes ready on dst_rank

    @property
    def what(self) -> str:
        return f"{'activation' if self.src_action.kind == 'F' else 'gradient'} of {self.src_action}"


@dataclass
class Timeline:
    schedule: Schedule
    spans: list[Span]
    transfers: list[Transfer]
    makespan: float
    busy: dict[int, float]
    peak_activations: dict[int, int]

    def idle(self, rank: int) -> float:
        return self.makespan - self.busy[rank]

    def bubble_ratio(self, rank: int) -> float:
        return self.idle(rank) / self.makespan

    @property
    def max_bubble(self) -> float:
        return max(self.idle(r) for r in self.busy)

    @property
    def mean_bubble_ratio(self) -> float:
        return sum(self.bubble_ratio(r) for r in self.busy) / len(self.busy)


class Deadlock(RuntimeError):
    pass


def simulate(schedule: Schedule, costs: Costs) -> Timeline:
    ranks = sorted(schedule.actions)
    order = {r: schedule.actions[r] for r in ranks}
    pos = dict.fromkeys(ranks, 0)
    clock = dict.fromkeys(ranks, 0.0)
    busy = dict.fromkeys(ranks, 0.0)
    ready: dict[tuple, float] = {}  # ("f", stage, mb) forward input on the stage's rank; ("b", ...) gradient
    waiting: dict[tuple, list[int]] = defaultdict(list)
    spans: list[Span] = []
    transfers: list[Transfer] = []
    s2r = schedule.stage_to_rank
    hop = costs.transfer()
    cost_of: dict[tuple[str, int], float] = {}
    for stage in range(schedule.num_stages):
        if schedule.first_stage_of(stage):
            for mb in range(schedule.num_microbatches):
                ready[("f", stage, mb)] = 0.0

    def need(a: Action) -> tuple | None:
        if a.kind == "F":
            return ("f", a.stage, a.mb)
        if a.kind in ("B", "I"):
            return ("b", a.stage, a.mb)
        return None  # W: after its I on this rank, which the order guarantees

    def publish(key: tuple, t: float, woken: list[int]) -> None:
        ready[key] = t
        woken.extend(waiting.pop(key, ()))

    def produce(rank: int, a: Action, end: float, woken: list[int]) -> None:
        if a.kind == "F":
            nxt = schedule.next_stage(a.stage)
            if nxt is None:  # the loss: this stage's backward can start
                publish(("b", a.stage, a.mb), end, woken)
            else:
                _send(rank, s2r[nxt], a, ("f", nxt, a.mb), end, woken)
        elif a.kind in ("B", "I"):
            prev = schedule.prev_stage(a.stage)
            if prev is not None:
                _send(rank, s2r[prev], a, ("b", prev, a.mb), end, woken)

    def _send(src: int, dst: int, a: Action, key: tuple, t: float, woken: list[int]) -> None:
        if src == dst:
            publish(key, t, woken)
            return
        transfers.append(Transfer(src, dst, a, t, t + hop, key))
        publish(key, t + hop, woken)

    todo = list(ranks)
    while todo:
        rank = todo.pop()
        actions, i = order[rank], pos[rank]
        woken: list[int] = []
        while i < len(actions):
            action = actions[i]
            parts = action.parts()
            missing = None
            start = clock[rank] + (costs.dispatch if i else 0.0)
            for a in parts:
                key = need(a)
                if key is None:
                    continue
                t = ready.get(key)
                if t is None:
                    missing = key
                    break
                start = max(start, t)
            if missing is not None:
                waiting[missing].append(rank)
                break
            cost = costs.per_action.get(str(action)) if costs.per_action else None
            if cost is None and action.kind == "FB":
                cost = costs.pair(*parts)
            elif cost is None:
                cost = cost_of.get((action.kind, action.stage))
                if cost is None:
                    cost = cost_of[(action.kind, action.stage)] = costs.of(action.kind, action.stage)
            end = start + cost
            spans.append(Span(rank, action, start, end))
            busy[rank] += cost
            clock[rank] = end
            for a in parts:
                produce(rank, a, end, woken)
            i += 1
        pos[rank] = i
        todo.extend(woken)
    stuck = {r: str(order[r][pos[r]]) for r in ranks if pos[r] < len(order[r])}
    if stuck:
        where = ", ".join(f"rank {r} at {a}" for r, a in sorted(stuck.items())[:8])
        raise Deadlock(f"schedule {schedule.name} deadlocks: {where}")
    makespan = max(clock.values()) if clock else 0.0
    return Timeline(schedule, spans, transfers, makespan, busy, _peak_activations(spans))


def _peak_activations(spans: list[Span]) -> dict[int, int]:
    """Most stage-microbatch activations alive at once per rank: from a forward's start until the
    end of its backward (B), or of its W when the backward is split (W still needs them).

    A rank's spans are sequential, so walking them in order visits these events in time order,
    with a span's frees before the next span's allocations."""
    live: dict[int, int] = defaultdict(int)
    peaks: dict[int, int] = defaultdict(int)
    for span in spans:
        rank = span.rank
        for a in span.action.parts():
            if a.kind == "F":
                live[rank] += 1
                if live[rank] > peaks[rank]:
                    peaks[rank] = live[rank]
        for a in span.action.parts():
            if a.kind in ("B", "W"):
                live[rank] -= 1
    return dict(peaks)


def closed_form_bubble(name: str, pp: int, costs: Costs) -> float | None:
    """The DualPipe paper's bubble for `name` (PP = pipeline stages, uniform per-stage costs,
    B the full backward, W its weight part, F&B the overlapped pair), or None if it has none."""
    f, b, w = costs.of("F", 0), costs.of("B", 0), costs.of("W", 0)
    fb = costs.FB if costs.FB is not None else f + b
    return {
        "1f1b": (pp - 1) * (f + b),
        "gpipe": (pp - 1) * (f + b),
        "zb1p": (pp - 1) * (f + b - 2 * w),
        "dualpipe": (pp / 2 - 1) * (fb + b - 3 * w),
        "dualpipev": (pp / 2 - 1) * (fb + b - 3 * w),
    }.get(name)
