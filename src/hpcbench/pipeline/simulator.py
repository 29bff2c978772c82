"""Discrete-event simulation of a schedule with per-action costs: when each rank runs what.

Each rank runs its actions in order; an action starts when the rank is free and its input is on
the rank (`ir.input_edge`, the rule the executor follows): a forward needs the previous stage's
output (plus the point-to-point time when that stage is on another rank), a backward (B or I) the
next stage's input gradient; what comes from the rank's own earlier actions (a last stage's loss,
a W's I: `ir.prerequisite`) is there by the rank's order, which `ir.validate` checks. An overlapped pair
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

from hpcbench.pipeline.ir import (
    COMPUTE,
    Action,
    Edge,
    Key,
    Schedule,
    input_edge,
    output_edge,
)


@dataclass
class Costs:
    """Durations (any time unit, consistently) per action type; `per_stage` overrides per stage."""

    F: float = 1.0
    B: float = 2.0  # full backward
    I: float | None = None  # backward-input; default B - W
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
    dst_key: Key  # the tensor it makes ready on dst_rank

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
    """When each rank runs what: raises Deadlock naming where ranks wait forever."""
    sim = _Simulation(schedule, costs)
    sim.run()
    return sim.timeline()


class _Simulation:
    """The event loop's state: per rank its position, clock and busy time; when each tensor is
    ready on the rank that consumes it (`ir.input_edge`), and which ranks wait for which tensor."""

    def __init__(self, schedule: Schedule, costs: Costs):
        self.schedule, self.costs = schedule, costs
        self.ranks = sorted(schedule.actions)
        self.pos = dict.fromkeys(self.ranks, 0)
        self.clock = dict.fromkeys(self.ranks, 0.0)
        self.busy = dict.fromkeys(self.ranks, 0.0)
        self.ready: dict[Key, float] = {}
        self.waiting: dict[Key, list[int]] = defaultdict(list)
        self.spans: list[Span] = []
        self.transfers: list[Transfer] = []
        self.hop = costs.transfer()
        self.cost_of: dict[tuple[str, int], float] = {}
        self.edges = _edges(schedule)

    def run(self) -> None:
        todo = list(self.ranks)
        while todo:
            todo.extend(self._advance(todo.pop()))

    def _advance(self, rank: int) -> list[int]:
        """Run `rank`'s actions until one needs a tensor not produced yet; the ranks this woke.
        An output is ready on its consumer's rank at once on this rank, after the hop on another."""
        actions, i, edges = self.schedule.actions[rank], self.pos[rank], self.edges
        ready, waiting, clock, dispatch, hop = self.ready, self.waiting, self.clock[rank], self.costs.dispatch, self.hop
        woken: list[int] = []
        while i < len(actions):
            action = actions[i]
            parts = action.parts()
            start = clock + (dispatch if i else 0.0)
            missing = None
            for a in parts:
                edge = edges[a.kind, a.stage][0]
                if edge is not None:
                    t = ready.get((edge[0], edge[1], a.mb))
                    if t is None:
                        missing = (edge[0], edge[1], a.mb)
                        break
                    start = max(start, t)
            if missing is not None:
                waiting[missing].append(rank)
                break
            cost = self._cost(action)
            clock = end = start + cost
            self.spans.append(Span(rank, action, start, end))
            self.busy[rank] += cost
            for a in parts:
                _, edge, dst = edges[a.kind, a.stage]
                if edge is not None:
                    key = (edge[0], edge[1], a.mb)
                    if dst != rank:
                        self.transfers.append(Transfer(rank, dst, a, end, end + hop, key))
                    ready[key] = end if dst == rank else end + hop
                    woken.extend(waiting.pop(key, ()))
            i += 1
        self.pos[rank], self.clock[rank] = i, clock
        return woken

    def _cost(self, action: Action) -> float:
        costs = self.costs
        cost = costs.per_action.get(str(action)) if costs.per_action else None
        if cost is not None:
            return cost
        if action.kind == "FB":
            return costs.pair(*action.parts())
        kind_stage = (action.kind, action.stage)
        if kind_stage not in self.cost_of:
            self.cost_of[kind_stage] = costs.of(action.kind, action.stage)
        return self.cost_of[kind_stage]

    def timeline(self) -> Timeline:
        stuck = {r: str(self.schedule.actions[r][self.pos[r]]) for r in self.ranks
                 if self.pos[r] < len(self.schedule.actions[r])}
        if stuck:
            where = ", ".join(f"rank {r} at {a}" for r, a in sorted(stuck.items())[:8])
            raise Deadlock(f"schedule {self.schedule.name} deadlocks: {where}")
        makespan = max(self.clock.values()) if self.clock else 0.0
        return Timeline(self.schedule, self.spans, self.transfers, makespan, self.busy, peak_activations(self.spans))


def _edges(schedule: Schedule) -> dict[tuple[str, int], tuple[Edge | None, Edge | None, int | None]]:
    """Per (action kind, stage): the ir's rule (`input_edge`, `output_edge`) and the rank its output
    goes to, looked up once rather than per action."""
    out = {}
    for kind in COMPUTE:
        for stage in range(schedule.num_stages):
            produced = output_edge(schedule, kind, stage)
            dst = None if produced is None else schedule.stage_to_rank[produced[1]]
            out[(kind, stage)] = (input_edge(schedule, kind, stage), produced, dst)
    return out


def peak_activations(spans: list[Span]) -> dict[int, int]:
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
                peaks[rank] = max(peaks[rank], live[rank])
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
