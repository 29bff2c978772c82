"""From one schedule's timed steps (every rank's action records, gathered to rank 0) to its row:
step time and throughput, the measured bubble against the simulator's (fed durations drawn from each
action's measured ones; fed the mean costs; replaying each step), the paper's closed form,
activations, blocked time, F&B overlap."""

from __future__ import annotations

import statistics

import numpy as np

from hpcbench.benchmarks.pipeline.common import Setup
from hpcbench.pipeline.executor import StepResult
from hpcbench.pipeline.ir import input_key, output_key
from hpcbench.pipeline.model import ModelSpec
from hpcbench.pipeline.simulator import Costs, Timeline, closed_form_bubble, simulate
from hpcbench.pipeline.trace import measured_timeline
from hpcbench.measure.timing import timed_columns

Steps = list[dict[int, StepResult]]  # per timed step, every rank's result on one time axis


def effective_latency(schedule, steps: Steps) -> float | None:
    """Mean time from the end of an action that sends to the start of the action on another rank
    that was already waiting for it: the point-to-point latency as the schedule sees it (posting,
    transfer, waking the receiver), which an idle ping-pong underestimates on a loaded machine.
    The mean, not the median: idle time adds hop latencies up, so the mean is what predicts it,
    and on a busy machine the hops are skewed (2 cores, both busy: median 0.2-0.6 ms, mean
    0.65-0.85 ms, p90 1.5-3 ms), where the median under-predicts the bubble."""
    by_label = {r: {str(a): a for a in schedule.actions[r]} for r in schedule.actions}
    hops = []
    for step in steps:
        sent, waited = {}, {}
        for rank, res in step.items():
            for rec in res.records:
                for a in by_label[rank][rec.label].parts():
                    out, inp = output_key(schedule, a), input_key(schedule, a)
                    if out is not None and schedule.stage_to_rank[out[1]] != rank:
                        sent[out] = rec.end
                    if inp is not None:
                        waited[inp] = (rec.start - rec.blocked, rec.start)
        hops += [waited[k][1] - sent[k] for k in waited.keys() & sent.keys() if sent[k] >= waited[k][0]]
    return statistics.fmean(hops) if hops else None


def measured_costs(steps: Steps, latency: float) -> Costs:
    """Mean measured duration per (stage, action kind), the mean F&B pair, and the dispatch gap."""
    per: dict[int, dict[str, list[float]]] = {}
    pairs = []
    for step in steps:
        for res in step.values():
            for rec in res.records:
                d = rec.end - rec.start
                if rec.kind == "FB":
                    pairs.append(d)
                else:
                    per.setdefault(rec.stage, {}).setdefault(rec.kind, []).append(d)
    per_stage = {s: {k: statistics.fmean(v) for k, v in kinds.items()} for s, kinds in per.items()}
    gaps = _gaps(steps)
    return Costs(per_stage=per_stage, FB=statistics.fmean(pairs) if pairs else None, p2p_latency=latency,
                 dispatch=statistics.fmean(gaps) if gaps else 0.0)


def _gaps(steps: Steps) -> list[float]:
    """Each rank's own time between the end of one action and the start of waiting for the next."""
    return [max(0.0, b.start - b.blocked - a.end) for step in steps for res in step.values()
            for a, b in zip(res.records, res.records[1:])]


def replay_costs(step: dict[int, StepResult], latency: float) -> Costs:
    """Every action of one measured step with its own measured duration: the simulator then
    replays that step, so what is left between the two is the model of dependencies and
    communication, not the spread of action times."""
    per_action = {rec.label: rec.end - rec.start for res in step.values() for rec in res.records}
    gaps = _gaps([step])
    return Costs(per_action=per_action, p2p_latency=latency, dispatch=statistics.fmean(gaps) if gaps else 0.0)


# simulated steps behind the prediction (a 4-rank, 16-microbatch step takes ~1 ms); odd, so the
# median is one of them and the timeline shown is the one whose bubble is the column's
PREDICTION_DRAWS = 33


def sampled_predictions(schedule, steps: Steps, latency: float, draws: int = PREDICTION_DRAWS,
                        seed: int = 0) -> list[Timeline]:
    """The simulator run `draws` times, each action given a duration drawn from its own measured
    durations over the timed steps (and the mean dispatch gap and hop latency). Mean costs hide the
    spread, and idle time grows with it (a rank that waits on the slower of two producers waits on
    more than the mean), so the mean-cost bubble under-predicts; sampling each action's measured
    times keeps the spread without replaying any one step. Seeded: the same records, the same draws."""
    durations: dict[str, list[float]] = {}
    for step in steps:
        for res in step.values():
            for rec in res.records:
                durations.setdefault(rec.label, []).append(rec.end - rec.start)
    labels = list(durations)
    gaps = _gaps(steps)
    dispatch = statistics.fmean(gaps) if gaps else 0.0
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        per_action = {label: durations[label][int(rng.integers(len(durations[label])))] for label in labels}
        out.append(simulate(schedule, Costs(per_action=per_action, p2p_latency=latency, dispatch=dispatch)))
    return out


def median_timeline(timelines: list[Timeline]) -> Timeline:
    """The timeline whose mean bubble is the median of them all (the upper middle for an even count)."""
    return sorted(timelines, key=lambda t: t.mean_bubble_ratio)[len(timelines) // 2]


def mean_kind(costs: Costs, kind: str) -> float | None:
    vals = [k[kind] for k in costs.per_stage.values() if kind in k]
    return statistics.fmean(vals) if vals else None


def align(step: dict[int, StepResult], shared_clock: bool) -> dict[int, StepResult]:
    """Put every rank's records on one time axis. Ranks on one host share time.perf_counter's
    clock, so their step origins give the offsets; across hosts the clocks are unrelated and the
    barrier before the step is the alignment (good to its skew, typically tens of microseconds)."""
    if not shared_clock:
        return step
    first = min(res.origin for res in step.values())
    return {r: res.shifted(res.origin - first) for r, res in step.items()}


def summarise(s: Setup, name: str, schedule, steps: Steps,
              cuda_peaks: list[int] | None) -> tuple[dict, Timeline, Timeline]:
    """The row's measured columns, the median step's timeline and the simulator's prediction."""
    timelines = [measured_timeline(schedule, {r: res.records for r, res in step.items()}) for step in steps]
    step_s = [t.makespan for t in timelines]
    median_i = sorted(range(len(step_s)), key=step_s.__getitem__)[len(step_s) // 2]
    shown = timelines[median_i]
    in_schedule = effective_latency(schedule, steps)
    hop = in_schedule if in_schedule is not None else s.latency
    costs = measured_costs(steps, hop)
    mean_cost = simulate(schedule, costs)
    draws = sampled_predictions(schedule, steps, hop)
    predicted = median_timeline(draws)
    row = {
        **_throughput(step_s, s.spec, s.total_mb, s.method),
        **_bubbles(name, schedule, timelines, shown, [replay_costs(step, hop) for step in steps], costs, draws,
                   mean_cost),
        # synthetic mode: the schedule alone, from the configured durations, no latency: the target
        # the measurement should approach
        "configured_bubble_ratio": _configured_bubble(schedule, s.synthetic_s, s.cfg.overlap),
        **_per_rank(shown, steps[median_i], predicted, cuda_peaks),
        **_cost_columns(costs, s.latency, in_schedule),
        "synthetic_overruns": sum(res.synthetic_overruns for step in steps for res in step.values()),
    }
    return row, shown, predicted


def _throughput(step_s: list[float], spec: ModelSpec, total_mb: int, method: str) -> dict:
    """Step time (every timed step's makespan, earliest start to latest end over the ranks) and
    its statistics, and the throughput at the median step."""
    samples = total_mb * spec.microbatch_size
    median_step = statistics.median(step_s)
    return {
        "step_ms": median_step * 1e3, "step_ms_min": min(step_s) * 1e3, "step_ms_max": max(step_s) * 1e3,
        **timed_columns(step_s, method),  # n_samples, median_s, samples_s, ... for compare
        "samples_per_s": samples / median_step,
        "tokens_per_s": samples * spec.seq / median_step if spec.kind == "transformer" else None,
    }


def _bubbles(name: str, schedule, timelines: list[Timeline], shown: Timeline, replays: list[Costs], costs: Costs,
             draws: list[Timeline], mean_cost: Timeline) -> dict:
    bubble = statistics.median(t.mean_bubble_ratio for t in timelines)
    predicted = statistics.median(t.mean_bubble_ratio for t in draws)
    closed = _closed_form(name, schedule, costs)
    return {
        "bubble_ratio": bubble,
        "bubble_ratio_per_rank": [shown.bubble_ratio(r) for r in sorted(shown.busy)],
        # the simulator fed durations drawn from each action's measured ones (`sampled_predictions`),
        # the dispatch gap and the hop latency: the median over the draws
        "predicted_bubble_ratio": predicted,
        "bubble_residual_pp": (bubble - predicted) * 100,
        # the simulator fed this run's mean cost per stage and action kind instead: blind to the spread
        "mean_cost_bubble_ratio": mean_cost.mean_bubble_ratio,
        "mean_cost_step_ms": mean_cost.makespan * 1e3,
        # the simulator replaying each timed step with every action's own measured duration: what is
        # left against the measurement is the model of dependencies and communication alone
        "replay_bubble_ratio": statistics.median(simulate(schedule, c).mean_bubble_ratio for c in replays),
        "measured_idle_ms": shown.max_bubble * 1e3,
        "closed_form_bubble_ms": None if closed is None else closed * 1e3,
        "predicted_step_ms": statistics.median(t.makespan for t in draws) * 1e3,
    }


def _closed_form(name: str, schedule, costs: Costs) -> float | None:
    """The paper's closed form for the measured mean costs (it takes uniform stages and W as part of B)."""
    f, b, w = (mean_kind(costs, k) for k in ("F", "B", "W"))
    if f is None or b is None:
        return None
    uniform = Costs(F=f, B=b, W=w if w is not None else b / 2, FB=costs.FB)
    return closed_form_bubble(name, schedule.num_stages if name == "dualpipev" else schedule.num_ranks, uniform)


def _configured_bubble(schedule, synthetic_s: dict | None, overlap: bool) -> float | None:
    """The simulator's bubble for the configured synthetic durations (an ideal F&B pair takes the
    longer of its halves when pairs overlap), no latency; None outside synthetic mode."""
    if not synthetic_s:
        return None
    d = synthetic_s
    fb = max(d["F"], d["B"]) if overlap else d["F"] + d["B"]
    return simulate(schedule, Costs(F=d["F"], B=d["B"], W=d["W"], I=d["I"], FB=fb)).mean_bubble_ratio


def _per_rank(shown: Timeline, step: dict[int, StepResult], predicted: Timeline, cuda_peaks: list[int] | None) -> dict:
    """The median step's per-rank figures, ranks in order."""
    ranks = sorted(shown.busy)
    return {
        "blocked_ms_per_rank": [sum(r.blocked for r in step[k].records) * 1e3 for k in ranks],
        "peak_activations_per_rank": [step[k].peak_live_activations for k in ranks],
        "predicted_peak_activations_per_rank": [predicted.peak_activations.get(k, 0) for k in ranks],
        "peak_activation_bytes_per_rank": [step[k].peak_activation_bytes for k in ranks],
        "peak_memory_bytes_per_rank": cuda_peaks,
    }


def _cost_columns(costs: Costs, latency: float, in_schedule: float | None) -> dict:
    f, b = mean_kind(costs, "F"), mean_kind(costs, "B")
    i, w = mean_kind(costs, "I"), mean_kind(costs, "W")
    return {
        "measured_costs_ms": {str(s): {k: v * 1e3 for k, v in kinds.items()} for s, kinds in costs.per_stage.items()},
        # a split backward against a full one (a schedule without split has only B): I + W should
        # cost about one B, W doing no work of I's again (hpcbench.pipeline.split_backward)
        "backward_ms": None if b is None else b * 1e3,
        "split_backward_ms": None if i is None or w is None else (i + w) * 1e3,
        "fb_pair_ms": None if costs.FB is None else costs.FB * 1e3,
        "dispatch_ms": costs.dispatch * 1e3,
        "p2p_latency_ms": latency * 1e3,  # idle ping-pong, half round trip
        # what the simulator used: the mean hop in the schedule (`effective_latency`)
        "p2p_latency_in_schedule_ms": None if in_schedule is None else in_schedule * 1e3,
        "fb_overlap_efficiency": (None if costs.FB is None or f is None or b is None
                                  else (f + b - costs.FB) / min(f, b)),
    }


def write_artifacts(run_dir, shown: dict, simulated: dict) -> None:
    """Chrome traces of each schedule's median measured step and its simulation, and two Gantt charts."""
    from hpcbench.pipeline.trace import write_gantt, write_trace

    for name, tl in shown.items():
        write_trace(tl, f"{name} measured", run_dir / "traces" / f"pipeline-{name}-measured.json")
        write_trace(simulated[name], f"{name} simulated", run_dir / "traces" / f"pipeline-{name}-simulated.json")
    write_gantt(shown, run_dir / "pipeline-gantt-measured.png")
    write_gantt(simulated, run_dir / "pipeline-gantt-simulated.png")
