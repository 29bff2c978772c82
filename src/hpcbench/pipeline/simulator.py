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
linear in the number of actions, and it runs on the schedule's arrays (`ir.Program`) with nothing
allocated per action: 64 ranks x 1024 microbatches of DualPipe (73,666 actions) in a small
fraction of a second, 1,024 x 4,096 (6.3 M) in seconds.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from hpcbench.pipeline.ir import (
    COMPUTE,
    KIND_CODE,
    NO_PART,
    Action,
    Program,
    Schedule,
    input_edge,
    output_edge,
    program_of,
)
from hpcbench.pipeline.lazy_timeline import LazySpans, LazyTransfers

# the simulation's results, importable from here as before they had a module of their own
from hpcbench.pipeline.timeline import Span, Timeline, Transfer, peak_activations


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


class Deadlock(RuntimeError):
    pass


def simulate(schedule: Schedule, costs: Costs) -> Timeline:
    """When each rank runs what: raises Deadlock naming where ranks wait forever."""
    sim = _Simulation(schedule, costs)
    sim.run()
    return sim.timeline()


class _Simulation:
    """The event loop over the schedule's Program (`ir.program_of`): every action is a row, every
    tensor that crosses a stage boundary an integer key, and per row the keys its parts wait for
    and hand on are looked up once, as arrays. The loop then keeps, per rank, its position and
    clock, and per key when it is ready on the rank that consumes it; a rank that meets a key not
    produced yet records it and sleeps until the producer wakes it (a key has one consumer rank).
    Nothing is allocated per action but the floats themselves: spans and transfers are recorded
    as row numbers and times, and become Span and Transfer objects only if they are read."""

    def __init__(self, schedule: Schedule, costs: Costs):
        self.schedule, self.costs = schedule, costs
        self.program = p = program_of(schedule)
        self.ranks = list(p.ranks)
        n = len(p)
        S, M = schedule.num_stages, schedule.num_microbatches
        self.num_keys = 2 * S * M
        rule = _rule_tables(schedule)
        rank_of = p.rank_of_rows()
        # rank -> its index in self.ranks; a rank with no actions maps to one spare slot no one reads
        top = max([*p.ranks, *schedule.stage_to_rank.values(), 0]) + 1
        index_of = np.full(top, len(p.ranks), dtype=np.int64)
        index_of[list(p.ranks)] = np.arange(len(p.ranks))
        cols = []
        for kind, stage, mb in ((p.kind, p.stage, p.mb), (p.kind2, p.stage2, p.mb2)):
            present = kind != NO_PART
            k, st = np.where(present, kind, 0), np.clip(stage, 0, S - 1)
            ok = present & (mb >= 0) & (mb < M) & (stage >= 0) & (stage < S)  # else: no edge (validate's business)
            base_in, base_out, dst = rule[0][k, st], rule[1][k, st], rule[2][k, st]
            cols.append(np.where(ok & (base_in >= 0), base_in + mb, -1))
            cols.append(np.where(ok & (base_out >= 0), base_out + mb, -1))
            cols.append(np.where(ok & (base_out >= 0), dst, -1))  # the rank the output goes to
        # per row and part: is its output sent to another rank (the loop tells by the consumer's index)
        self.remote = np.stack([(c >= 0) & (c != rank_of) for c in (cols[2], cols[5])], axis=1)
        self.dst_rank = (cols[2], cols[5])
        for c in (2, 5):  # the consumer as an index into self.ranks (what `blocked` is indexed by)
            cols[c] = np.where(cols[c] >= 0, index_of[np.clip(cols[c], 0, top - 1)], -1)
        self.in1, self.out1, self.dst1, self.in2, self.out2, self.dst2 = (_ints(c) for c in cols)
        self.cost = array("d", _action_costs(schedule, p, costs))
        self.offsets = p.offsets.tolist()
        self.index = {r: i for i, r in enumerate(self.ranks)}
        self.pos = self.offsets[:-1]
        self.free = [0.0] * len(self.ranks)  # when each rank can start its next action
        self.blocked = [-1] * (len(self.ranks) + 1)  # the key a rank sleeps on (+ the spare slot)
        self.ready: list[float | None] = [None] * self.num_keys
        self.start = array("d", bytes(8 * n))  # per row; its end is start + cost, derived once at the end
        self.runs = array("q")  # (first row, row after the last) of each stretch a rank ran: the order of the spans
        self.hop = costs.transfer()

    def run(self) -> None:
        """Advance ranks until none can: a rank runs its actions until one needs a tensor not
        produced yet, and sleeps on it until the producer wakes it. An output is ready on its
        consumer's rank at once on this rank, after the hop on another. The per-action work is
        list lookups and float arithmetic, in one function (a call per stretch would cost as much
        as the stretch): what a rank ran is one (first, last) stretch, an action's end its start
        plus its cost."""
        pos, offsets, frees, runs = self.pos, self.offsets, self.free, self.runs.append
        ready, blocked = self.ready, self.blocked
        dispatch, hop = self.costs.dispatch, self.hop
        in1, in2, out1, out2, dst1, dst2 = self.in1, self.in2, self.out1, self.out2, self.dst1, self.dst2
        cost_of, starts = self.cost, self.start
        todo = list(range(len(self.ranks)))
        woken = todo.append
        while todo:
            r = todo.pop()
            began = i = pos[r]
            stop = offsets[r + 1]
            free = frees[r]  # the end of the rank's last action plus the dispatch gap (none before its first)
            while i < stop:
                start = free
                key = in1[i]
                if key >= 0:
                    t = ready[key]
                    if t is None:
                        blocked[r] = key
                        break
                    if t > start:  # noqa: PLR1730 - max() would be a call per input, about a tenth of the loop
                        start = t
                key = in2[i]
                if key >= 0:
                    t = ready[key]
                    if t is None:
                        blocked[r] = key
                        break
                    if t > start:  # noqa: PLR1730
                        start = t
                starts[i] = start
                end = start + cost_of[i]
                free = end + dispatch
                key = out1[i]
                if key >= 0:
                    dst = dst1[i]
                    ready[key] = end + hop if dst != r else end
                    if blocked[dst] == key:
                        blocked[dst] = -1
                        woken(dst)
                key = out2[i]
                if key >= 0:
                    dst = dst2[i]
                    ready[key] = end + hop if dst != r else end
                    if blocked[dst] == key:
                        blocked[dst] = -1
                        woken(dst)
                i += 1
            if i > began:
                runs(began)
                runs(i)
            pos[r], frees[r] = i, free

    def timeline(self) -> Timeline:
        offsets, actions = self.offsets, self.schedule.actions
        stuck = {rank: str(actions[rank][self.pos[r] - offsets[r]]) for r, rank in enumerate(self.ranks)
                 if self.pos[r] < offsets[r + 1]}
        if stuck:
            where = ", ".join(f"rank {r} at {a}" for r, a in sorted(stuck.items())[:8])
            raise Deadlock(f"schedule {self.schedule.name} deadlocks: {where}")
        cost = np.asarray(self.cost, dtype=np.float64)
        self.end = np.frombuffer(self.start, dtype=np.float64) + cost  # the loop's start + cost, bit for bit
        # each rank's clock stops at the end of its last action (0 for a rank with none)
        last = [float(self.end[hi - 1]) if hi > lo else 0.0 for lo, hi in pairwise(offsets)]
        makespan = max(last) if last else 0.0
        # a rank's busy time: its costs added one after another, in its order, as the loop would have
        busy = {rank: float(np.add.accumulate(cost[lo:hi])[-1]) if hi > lo else 0.0
                for rank, (lo, hi) in zip(self.ranks, pairwise(offsets))}
        runs = np.frombuffer(self.runs, dtype=np.int64).reshape(-1, 2) if len(self.runs) else np.zeros((0, 2), np.int64)
        order = _stretches(runs)
        sent = np.stack([2 * order, 2 * order + 1], axis=1)[self.remote[order]]  # by row, the F's before the B's
        # what only the loop needed goes (a 1,024-rank schedule's ready times alone are 8 M entries);
        # the lazy spans and transfers keep the rest
        self.ready = self.blocked = self.in1 = self.in2 = self.dst1 = self.dst2 = None
        return Timeline(self.schedule, LazySpans(self, order), LazyTransfers(self, sent), makespan, busy,
                        _peak_activations(self.program, order), _kind_time(self.program, cost))


def _kind_time(program, cost: np.ndarray) -> dict[str, float]:
    """Total cost per action kind; an FB pair counts once, as "FB"."""
    code = np.where(program.kind2 == NO_PART, program.kind, len(COMPUTE))
    totals = np.bincount(code, weights=cost, minlength=len(COMPUTE) + 1)
    names = [*COMPUTE, "FB"]
    return {names[c]: float(totals[c]) for c in np.unique(code).tolist()}


def _ints(column: np.ndarray) -> array:
    """A column as a flat array of machine integers: 8 bytes a row, no Python object per row."""
    return array("q", np.ascontiguousarray(column, dtype=np.int64).tobytes())


def _stretches(runs: np.ndarray) -> np.ndarray:
    """The rows of (first, after-last) stretches, one after another."""
    lengths = runs[:, 1] - runs[:, 0]
    if not len(lengths):
        return np.zeros(0, dtype=np.int64)
    step = np.ones(int(lengths.sum()), dtype=np.int64)
    heads = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    step[heads] = runs[:, 0] - np.concatenate([[0], runs[:-1, 1] - 1])
    return np.cumsum(step)


def _rule_tables(schedule: Schedule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (kind code, stage), from the ir's rule (`input_edge`, `output_edge`): the key of
    microbatch 0 of the tensor an action waits for and of the one it hands on (-1: none; a key is
    (way * stages + stage) * microbatches + mb, way 0 for activations, 1 for gradients), and the
    rank the output goes to. Looked up once, not per action."""
    S, M = schedule.num_stages, schedule.num_microbatches
    base_in = np.full((len(COMPUTE), S), -1, dtype=np.int64)
    base_out, dst = base_in.copy(), base_in.copy()
    for k, kind in enumerate(COMPUTE):
        for stage in range(S):
            needed, produced = input_edge(schedule, kind, stage), output_edge(schedule, kind, stage)
            if needed is not None:
                base_in[k, stage] = (_WAY[needed[0]] * S + needed[1]) * M
            if produced is not None:
                base_out[k, stage] = (_WAY[produced[0]] * S + produced[1]) * M
                dst[k, stage] = schedule.stage_to_rank[produced[1]]
    return base_in, base_out, dst


_WAY = {"f": 0, "b": 1}


def _action_costs(schedule: Schedule, p: Program, costs: Costs) -> list[float]:
    """Every row's duration: `Costs.of` per (kind, stage) looked up once, an FB pair's `Costs.pair`
    (its own FB cost, or the sum of its halves), a replayed action's own measured time."""
    S = schedule.num_stages
    table = np.array([[costs.of(kind, stage) for stage in range(S)] for kind in COMPUTE], dtype=np.float64)
    k, st = p.kind, np.clip(p.stage, 0, S - 1)
    one = table[k, st]
    two = p.kind2 != NO_PART
    if two.any():
        if costs.FB is not None:
            one[two] = costs.FB
        else:
            one[two] = table[k[two], st[two]] + table[p.kind2[two], np.clip(p.stage2[two], 0, S - 1)]
    out = one.tolist()
    if costs.per_action:
        get, row = costs.per_action.get, 0
        for rank in p.ranks:
            for action in schedule.actions[rank]:
                measured = get(str(action))
                if measured is not None:
                    out[row] = measured
                row += 1
    return out


def _peak_activations(p: Program, order: np.ndarray) -> dict[int, int]:
    """`peak_activations` on the arrays: per rank, the most live activations just after an F
    (its action's frees come after its allocations), ranks in the order their first F ran."""
    F, B, W = (KIND_CODE[k] for k in ("F", "B", "W"))
    alloc = (p.kind == F).astype(np.int64) + (p.kind2 == F)
    free = np.isin(p.kind, (B, W)).astype(np.int64) + np.isin(p.kind2, (B, W))
    lo, hi = p.offsets[:-1], p.offsets[1:]
    live_after = np.cumsum(alloc - free)
    live_after -= np.repeat(np.concatenate([[0], live_after])[lo], hi - lo)  # counted from each rank's start
    at_alloc = np.where(alloc > 0, live_after + free, -1)  # live just after the action's allocations
    has = np.add.reduceat(alloc, lo[hi > lo]) > 0 if len(alloc) else np.zeros(0, bool)
    ranks = np.asarray(p.ranks, dtype=np.int64)[hi > lo][has]
    peaks = np.maximum.reduceat(at_alloc, lo[hi > lo])[has]
    # each rank's first forward, and when a walk over the spans in run order would have met it
    rows = np.flatnonzero(alloc > 0)
    rank_of_row = np.searchsorted(hi, rows, side="right")
    first = rows[np.unique(rank_of_row, return_index=True)[1]]
    seen = np.empty(len(p), dtype=np.int64)
    seen[order] = np.arange(len(order))
    by_first = np.argsort(seen[first], kind="stable")
    return {int(r): int(v) for r, v in zip(ranks[by_first], peaks[by_first])}


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

__all__ = ["Costs", "Deadlock", "Span", "Timeline", "Transfer", "closed_form_bubble", "peak_activations", "simulate"]
