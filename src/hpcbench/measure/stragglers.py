"""Which rank held the others up, inside one multi-rank run: the straggler report of a point.

Input: a [world, iters] table of what each rank is answerable for in each timed iteration (seconds;
larger = it held the others up more), measured on the rank's own clock and gathered:
  - work that waits on other ranks (a collective, an all-to-all, an overlapped step): the rank's
    lateness (`rank_timing.own_times`): such work ends at about the same moment on every rank, so
    the rank that arrived last spends the least time inside it. Its plain duration would not do:
    the late rank's is no longer than the others', who spent the same time waiting for it;
  - work each rank does alone (compute with no communication): its duration;
  - a pipeline step: its wall time less the time the rank sat blocked on receives.
Optionally also the sample durations (for spikes), each rank's first call and each rank's node.

Per iteration: the slowest rank and its excess over the median of the other ranks (`excess of r =
x_r - median of the others' x`, per iteration, so what all ranks share — the collective's own cost
— cancels; "the median rank" below means that median of the others, which for 2 ranks is simply
the other rank).
Per rank: the share of iterations it was slowest, its median excess, spikes (samples above its
median by more than 5 x 1.4826 x MAD of its samples, at least the floor below), the first call's
cost (duration and ratio to the rank's median sample).
Per node (ranks grouped by `runtime.environment.node_name`): the share of iterations whose slowest
rank is on it, and the median of its ranks' median excesses.

Decision rule: a rank is named the straggler when all three hold (else none is named):
 1. it is the slowest in at least half of the iterations (`min_share` 0.5): more often than all the
    other ranks together, so a rank that is merely unlucky now and then is not named;
 2. that is more often than chance explains: the binomial tail P(hits or more | iterations, 1/world)
    is at most `alpha` = 1e-3. World 4, 20 iterations: 12 hits (60%); world 2, 30 iterations: 24
    (80%); 2 ranks need at least 10 iterations before any share can pass. With noise alone every
    rank is slowest 1/world of the time, and a run of 20 points then names nobody with 98% odds;
 3. its median excess over the median rank exceeds the margin
        max(k x 1.4826 x MAD of the other ranks' median excesses,  floor_s,  rel_floor x median sample)
    with k = 4 (4 robust standard deviations beyond the others: a healthy rank of a normal spread is
    that far out about once in 30,000). The candidate is left out of the MAD: with 4 ranks its own
    value moves the MAD a lot (measured: a 6.5 ms straggler behind a 15 ms margin with it, 4.6 ms
    without). floor_s = 2 ms on CPU ranks, 20 us on CUDA; rel_floor = 5%. The floors matter where
    the MAD across a handful of ranks is no scale at all (3 of 4 ranks close together by luck). On
    CPU, ranks that share busy cores are put off by the Linux scheduler for a slice (0.75-3 ms) at
    random: measured on a 2-core machine with both cores busy, 4 gloo ranks timing a 64-byte
    all_reduce, the most suspect rank's median excess was 0.02-1.25 ms in 60 clean runs of 20
    iterations, and 4.1-5.3 ms with 5 ms injected on one rank. On CUDA, events resolve ~1 us and
    NCCL launches jitter by a few us. 5% is the clock (boost) difference between healthy GPUs of
    one model, which is not a straggler.
The numbers are `Rule`'s defaults; `Rule.for_device` picks the floor by device kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826  # MAD x this = the standard deviation, for normal data


@dataclass(frozen=True)
class Rule:
    min_share: float = 0.5
    alpha: float = 1e-3
    k_mad: float = 4.0
    floor_s: float = 2e-3
    rel_floor: float = 0.05
    spike_k: float = 5.0

    @staticmethod
    def for_device(kind: str) -> Rule:
        return Rule(floor_s=20e-6 if kind == "cuda" else 2e-3)


@dataclass(frozen=True)
class Report:
    straggler_rank: int | None
    straggler_node: str | None
    basis: str
    candidate: int  # the rank with the largest median excess (tested against the rule)
    margin_s: float
    p_value: float  # binomial tail of the candidate's slowest count under chance
    rank_excess_s: list[float]  # per rank: median over iterations of (x - the iteration's median rank)
    rank_slowest_share: list[float]  # per rank: share of iterations in which it was the slowest
    slowest_per_iter: list[int]
    excess_per_iter_s: list[float]  # the slowest rank's excess over the median rank, per iteration
    spikes_per_rank: list[int]
    first_call_s: list[float] | None
    first_call_ratio: list[float] | None
    node_of_rank: list[str] | None
    nodes: list[str] | None
    node_slowest_share: list[float] | None
    node_excess_s: list[float] | None
    evidence: str

    @property
    def iterations(self) -> int:
        return len(self.slowest_per_iter)


def binomial_tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X ~ Binomial(n, p).

    Up to 1000 trials the terms are summed as they are (C(1000, 500) ~ 2.7e299 still converts to
    a float); past that C(n, k) overflows one (collectives.iters=2000 crashed every rank), so each
    term is formed in logarithms (lgamma). Pure Python: scipy.stats
    would cost each rank seconds of import."""
    if hits <= 0:
        return 1.0
    if hits > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if n <= 1000:
        return min(1.0, sum(math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(hits, n + 1)))
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    terms = (math.exp(log_n - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q)
             for k in range(hits, n + 1))
    return min(1.0, math.fsum(terms))


def _mad(x: np.ndarray) -> float:
    return float(np.median(np.abs(x - np.median(x)))) if x.size else 0.0


def spikes(samples: np.ndarray, rule: Rule) -> list[int]:
    """Per rank (rows), samples above the rank's median by more than spike_k robust deviations
    (at least the floor)."""
    out = []
    for row in samples:
        med = float(np.median(row))
        limit = med + max(rule.spike_k * MAD_TO_SIGMA * _mad(row), rule.floor_s)
        out.append(int((row > limit).sum()))
    return out


def analyze(own: np.ndarray, rule: Rule = Rule(), samples: np.ndarray | None = None,
            first_call_s: np.ndarray | None = None, nodes: list[str] | None = None,
            basis: str = "duration") -> Report:
    """The straggler report of one point (pure: tests feed tables). `own`: [world, iters] seconds."""
    own = np.asarray(own, dtype=np.float64)
    world, n = own.shape
    samples = own if samples is None else np.asarray(samples, dtype=np.float64)
    excess = np.zeros_like(own) if world == 1 else np.stack(
        [own[r] - np.median(np.delete(own, r, axis=0), axis=0) for r in range(world)])
    slowest = own.argmax(axis=0)
    share = np.bincount(slowest, minlength=world) / n
    med_excess = np.median(excess, axis=1)
    candidate = int(np.lexsort((-share, -med_excess))[0])  # largest median excess; ties: most often slowest
    hits = round(share[candidate] * n)
    p_value = binomial_tail(hits, n, 1 / world) if world > 1 else 1.0
    typical = float(np.median(samples))
    others = np.delete(med_excess, candidate)  # its own value would widen the scale it is tested against
    margin = max(rule.k_mad * MAD_TO_SIGMA * _mad(others), rule.floor_s, rule.rel_floor * typical)
    often, unlikely, large = (share[candidate] >= rule.min_share, p_value <= rule.alpha,
                              med_excess[candidate] > margin)
    tests = [(often, f"slowest in {hits}/{n} iterations ({share[candidate]:.0%}"
                     + ("" if often else f" < {rule.min_share:.0%}") + ")"),
             (unlikely, f"chance {1 / world:.0%}, p={p_value:.1g}" + ("" if unlikely else f" (> {rule.alpha:g})")),
             (large, f"median {_ms(med_excess[candidate])} over the median rank "
                     f"({'>' if large else '<='} margin {_ms(margin, sign=False)})")]
    named = world > 1 and all(ok for ok, _ in tests)
    first = None if first_call_s is None else [float(v) for v in first_call_s]
    ratio = None if first is None else [f / float(np.median(r)) for f, r in zip(first, samples)]
    per_node = _per_node(nodes, slowest, med_excess) if nodes else (None, None, None)
    node = nodes[candidate] if nodes and named else None
    where = f" on {nodes[candidate]}" if nodes else ""
    head = f"rank {candidate}{where}" if named else f"no straggler (most suspect: rank {candidate}{where})"
    return Report(
        straggler_rank=candidate if named else None, straggler_node=node, basis=basis, candidate=candidate,
        margin_s=margin, p_value=p_value, rank_excess_s=[float(v) for v in med_excess],
        rank_slowest_share=[float(v) for v in share], slowest_per_iter=[int(r) for r in slowest],
        excess_per_iter_s=[float(excess[r, i]) for i, r in enumerate(slowest)],
        spikes_per_rank=spikes(samples, rule), first_call_s=first, first_call_ratio=ratio,
        node_of_rank=list(nodes) if nodes else None, nodes=per_node[0], node_slowest_share=per_node[1],
        node_excess_s=per_node[2],
        evidence=f"{head}: " + "; ".join(text for _, text in tests) + f" [{basis}]")


def _per_node(nodes: list[str], slowest: np.ndarray, med_excess: np.ndarray):
    names = list(dict.fromkeys(nodes))
    node_of = np.array([names.index(x) for x in nodes])
    shares = np.bincount(node_of[slowest], minlength=len(names)) / len(slowest)
    excess = [float(np.median(med_excess[node_of == k])) for k in range(len(names))]
    return names, [float(v) for v in shares], excess


def _ms(seconds: float, sign: bool = True) -> str:
    return f"{seconds * 1e3:{'+' if sign else ''}.3g} ms"


def columns(report: Report) -> dict:
    """The row's straggler columns."""
    named = report.straggler_rank is not None
    return {
        "straggler_rank": report.straggler_rank,
        "straggler_node": report.straggler_node,
        "straggler_excess_s": report.rank_excess_s[report.candidate] if named else None,
        "straggler_share": report.rank_slowest_share[report.candidate] if named else None,
        "straggler_margin_s": report.margin_s,
        "straggler_p_value": report.p_value,
        "straggler_basis": report.basis,
        "straggler_evidence": report.evidence,
        "rank_excess_s": report.rank_excess_s,
        "rank_slowest_share": report.rank_slowest_share,
        "straggler_slowest_per_iter": report.slowest_per_iter,
        "straggler_excess_per_iter_s": report.excess_per_iter_s,
        "spikes_per_rank": report.spikes_per_rank,
        "first_call_s_per_rank": report.first_call_s,
        "first_call_ratio_per_rank": report.first_call_ratio,
        "node_of_rank": report.node_of_rank,
        "straggler_nodes": report.nodes,
        "node_slowest_share": report.node_slowest_share,
        "node_excess_s": report.node_excess_s,
    }


def straggler_columns(device_kind: str, *times) -> dict:
    """The one call a family makes per row: the straggler columns of the row's timed loops
    (`rank_timing.RankTimes`, one or more, their iterations taken together; the first call is the
    first loop's)."""
    usable = [t for t in times if t is not None and t.own is not None]
    if not usable:
        return {}
    own = np.concatenate([t.own for t in usable], axis=1)
    samples = np.concatenate([t.per_rank for t in usable], axis=1)
    basis = "+".join(dict.fromkeys(t.own_basis for t in usable))
    return columns(analyze(own, Rule.for_device(device_kind), samples, usable[0].first_call_s, usable[0].nodes,
                           basis))


def verdict(rows: list[dict]) -> str | None:
    """One line for under a family's table when a straggler is named in any of its rows."""
    named = [r for r in rows if _is_rank(r.get("straggler_rank"))]
    if not named:
        return None
    by_rank: dict[int, list[dict]] = {}
    for r in named:
        by_rank.setdefault(int(r["straggler_rank"]), []).append(r)
    rank, mine = max(by_rank.items(), key=lambda kv: len(kv[1]))
    points = sum(1 for r in rows if r.get("straggler_evidence"))
    node = mine[0].get("straggler_node")
    excess = float(np.median([float(r["straggler_excess_s"]) for r in mine]))
    share = float(np.median([float(r["straggler_share"]) for r in mine]))
    others = f"; also named: {', '.join(f'rank {k}' for k in sorted(by_rank) if k != rank)}" if len(by_rank) > 1 else ""
    fault = next((r["injected_fault"] for r in rows if r.get("injected_fault")), None)
    return (f"straggler: rank {rank}{f' on {node}' if node else ''} in {len(mine)} of {points} points "
            f"(median {excess * 1e3:+.3g} ms over the median rank, slowest in {share:.0%} of iterations)"
            f"{others}{f' — injected fault {fault}' if fault else ''}")


def _is_rank(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def with_verdict(renderable, rows: list[dict]):
    """A family's table with the straggler verdict printed under it, when one is named."""
    line = verdict(rows)
    if line is None:
        return renderable
    from rich.console import Group
    from rich.text import Text

    return Group(renderable, Text(line, style="bold yellow"))
