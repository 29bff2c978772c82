"""One training step predicted: per-chunk action costs -> the pipeline simulator -> phases,
then data-parallel communication, the optimizer, throughput, MFU and memory.

Phases follow DeepSeek's published breakdown (ISCA'25 Table 4), read off the simulated timeline
and averaged over pipeline ranks: 1F (forwards run alone: warm-up), 1B (backwards or input
gradients run alone), 1W (weight gradients run alone), F&B (overlapped forward-backward pairs:
the steady state; for schedules without pairs, 0), bubble (idle), plus the optimizer phase
(exposed data-parallel gradient reduce-scatter / parameter all-gather and the Adam update).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hpcbench.benchmarks.whatif.costs import ChunkCosts, LayerCoster, split_layers
from hpcbench.benchmarks.whatif.flops import CAUSAL, FULL, model_flops_per_token, mfu
from hpcbench.benchmarks.whatif.memory import BYTES, ChunkParams, chunk_activation_bytes, chunk_params, state_bytes
from hpcbench.benchmarks.whatif.rates import Rates
from hpcbench.benchmarks.whatif.specs import ClusterSpec, ModelSpec, ParallelSpec, infeasible
from hpcbench.pipeline.schedules import build, model_chunks
from hpcbench.pipeline.simulator import Costs, Deadlock, simulate


class Infeasible(ValueError):
    """This configuration cannot run: the reason is recorded on its row."""


@lru_cache(maxsize=256)
def cached_schedule(name: str, pp: int, microbatches: int):
    return build(name, pp, microbatches)


@dataclass(frozen=True)
class Simulated:
    makespan: float
    phases: dict  # 1F, 1B, 1W, F&B, bubble: mean seconds per rank
    peak_in_flight: dict  # rank -> most stage-microbatch activations alive on it at once


_SIMULATED: dict = {}
_SIMULATED_MAX = 4096


def simulate_step(name: str, pp: int, microbatches: int, costs: Costs, key: tuple) -> Simulated:
    """The simulated step, cached per (schedule, pp, microbatches, cost tuple)."""
    full_key = (name, pp, microbatches, key)
    hit = _SIMULATED.get(full_key)
    if hit is not None:
        return hit
    schedule = cached_schedule(name, pp, microbatches)
    try:
        tl = simulate(schedule, costs)
    except Deadlock as exc:
        raise Infeasible(str(exc)) from None
    sums = {"1F": 0.0, "1B": 0.0, "1W": 0.0, "F&B": 0.0}
    where = {"F": "1F", "B": "1B", "I": "1B", "W": "1W", "FB": "F&B"}
    for kind, seconds in tl.kind_time.items():
        sums[where[kind]] += seconds
    ranks = len(tl.busy)
    phases = {k: v / ranks for k, v in sums.items()}
    phases["bubble"] = sum(tl.idle(r) for r in tl.busy) / ranks
    out = Simulated(tl.makespan, phases, dict(tl.peak_activations))
    if len(_SIMULATED) >= _SIMULATED_MAX:
        _SIMULATED.clear()
    _SIMULATED[full_key] = out
    return out


def _layer_counts(model: ModelSpec, par: ParallelSpec, coster: LayerCoster, chunks: int) -> list[int]:
    if par.layer_split == "even":
        return [model.layers // chunks] * chunks
    weights = []
    for i in range(model.layers):
        part = coster.layer(i)
        weights.append(part.f + part.i + part.w + part.a2a_f + part.a2a_b)
    head = coster.head()
    last = head.f + head.i + head.w
    if model.mtp_depth:
        mtp = coster.mtp()
        last += mtp.f + mtp.i + mtp.w + mtp.a2a_f + mtp.a2a_b
    return split_layers(weights, chunks, 0.0, last)


def _ranges(counts: list[int]) -> list[range]:
    out, start = [], 0
    for n in counts:
        out.append(range(start, start + n))
        start += n
    return out


def predict(model: ModelSpec, cluster: ClusterSpec, par: ParallelSpec, rates: Rates) -> dict:
    """Every predicted column of one configuration's row; raises Infeasible with the reason."""
    schedule, chunks = _schedule_of(model, par)
    coster = LayerCoster(model, cluster, par, rates)
    ranges = _ranges(_layer_counts(model, par, coster, chunks))
    chunk_costs = [coster.chunk(r, c == 0, c == chunks - 1) for c, r in enumerate(ranges)]

    # which chunks each rank holds (DualPipe: its stage of each copy)
    held: dict[int, set[int]] = {}
    for stage, rank in schedule.stage_to_rank.items():
        held.setdefault(rank, set()).add(stage % chunks)
    pipe = _pipeline(model, cluster, par, rates, schedule, chunks, chunk_costs, held)
    sim = pipe.sim

    worst_mem, heaviest = _memory_per_rank(model, par, ranges, chunks, held, sim)
    dp_cols = _data_parallel(par, cluster, rates, heaviest[4], heaviest[5], chunk_costs, heaviest[3])
    step = sim.makespan + dp_cols["optimizer_phase_s"]
    mem_total, _, _, _, _, _, states, act = worst_mem
    fits = mem_total <= cluster.hbm_GB * 1e9

    tokens_step = par.data_parallel * par.microbatch_count * par.micro_batch * par.seq
    tok_s_gpu = tokens_step / step / par.gpus
    out = {
        "step_s": step, "pipeline_s": sim.makespan,
        **{f"phase_{k.replace('&', 'n').lower()}_s": v for k, v in sim.phases.items()},
        "optimizer_phase_s": dp_cols["optimizer_phase_s"],
        "tokens_per_step": tokens_step, "tokens_per_day": tokens_step * 86400 / step,
        "tokens_per_s_per_gpu": tok_s_gpu,
        "F_s": chunk_costs[0].F if chunks == 1 else max(c.F for c in chunk_costs),
        "B_s": max(c.B for c in chunk_costs), "W_s": max(c.W for c in chunk_costs), "FB_s": pipe.fb,
        "overlap_slowdown": pipe.slowdown,
        "stage_layers": [len(r) for r in ranges],
        "peak_in_flight": max(sim.peak_in_flight.values()),
        "mem_params_GB": states["params"] / 1e9, "mem_grads_GB": states["grads"] / 1e9,
        "mem_optimizer_GB": states["optimizer"] / 1e9, "mem_activations_GB": act / 1e9,
        "mem_total_GB": mem_total / 1e9, "memory_fits": fits,
        "verdict": "fits" if fits else f"infeasible: needs {mem_total / 1e9:.0f} GB > {cluster.hbm_GB:g} GB",
        **{k: v for k, v in dp_cols.items() if k != "optimizer_phase_s"},
        **_exposed_comm(par, chunk_costs, sim, pipe.slowdown, pipe.latency, pipe.bandwidth, pipe.act_bytes,
                        coster.a2a_link),
    }
    out.update(_model_flops(model, cluster, par, tok_s_gpu))
    return out


def _schedule_of(model: ModelSpec, par: ParallelSpec):
    """The configuration's schedule and its model chunks per stage copy; Infeasible with the reason."""
    reason = infeasible(model, par)
    if reason:
        raise Infeasible(reason)
    try:
        schedule = cached_schedule(str(par.schedule), par.pp, par.microbatch_count)
    except ValueError as exc:
        raise Infeasible(str(exc)) from None
    chunks = model_chunks(schedule)
    reason = infeasible(model, par, chunks)
    if reason:
        raise Infeasible(reason)
    return schedule, chunks


@dataclass(frozen=True)
class _Pipeline:
    """The simulated pipeline and the costs it was fed that other columns read."""
    sim: Simulated
    fb: float  # the overlapped forward-backward pair's cost
    slowdown: float  # of compute overlapped with all-to-all
    latency: float  # point-to-point
    bandwidth: float
    act_bytes: float  # sent per microbatch per stage boundary


def _pipeline(model: ModelSpec, cluster: ClusterSpec, par: ParallelSpec, rates: Rates, schedule, chunks: int,
              chunk_costs: list[ChunkCosts], held: dict[int, set[int]]) -> _Pipeline:
    """Per-stage action costs and point-to-point times into the simulator."""
    slowdown = rates.overlap_slowdown(par.a2a_sms) if model.moe and par.ep > 1 else 1.0
    fb = max(chunk_costs[a].pair(chunk_costs[b], slowdown) for cs in held.values() for a in cs for b in cs)
    per_stage = {s: _stage_costs(chunk_costs[s % chunks]) for s in range(schedule.num_stages)}
    tokens = par.micro_batch * par.seq / par.cp
    spans_nodes = par.gpus // par.pp >= cluster.gpus_per_node
    latency, bandwidth = rates.p2p_s(tokens * model.hidden * 2, spans_nodes)
    act_bytes = tokens * model.hidden * 2.0 / par.tp
    costs = Costs(F=chunk_costs[0].F, B=chunk_costs[0].B, FB=fb, per_stage=per_stage, p2p_latency=latency,
                  p2p_bandwidth=bandwidth, activation_bytes=act_bytes, dispatch=rates.action_gap)
    key = (tuple(tuple(sorted(v.items())) for v in per_stage.values()), fb, latency, bandwidth, act_bytes,
           rates.action_gap)
    sim = simulate_step(str(par.schedule), par.pp, par.microbatch_count, costs, key)
    return _Pipeline(sim, fb, slowdown, latency, bandwidth, act_bytes)


def _memory_per_rank(model: ModelSpec, par: ParallelSpec, ranges: list[range], chunks: int,
                     held: dict[int, set[int]], sim: Simulated) -> tuple[tuple, tuple]:
    """Memory per rank (its chunks' states + its in-flight activations, alternating between its
    chunks): the rank needing the most, and the one holding the most parameters (data parallel
    and the optimizer are costed on it), each as (bytes, params, rank, chunks, dense, experts,
    states, activation bytes)."""
    act_of = [chunk_activation_bytes(model, par, r) for r in ranges]
    per_rank = []
    for rank, cs in held.items():
        dense = experts = 0.0
        for c in cs:
            cp = chunk_params(model, par, ranges[c], c == 0, c == chunks - 1)
            dense, experts = dense + cp.dense, experts + cp.experts
        states = state_bytes(ChunkParams(dense, experts), par)
        act = sim.peak_in_flight.get(rank, 0) * sum(act_of[c] for c in cs) / len(cs)
        per_rank.append((sum(states.values()) + act, dense + experts, rank, cs, dense, experts, states, act))
    return max(per_rank, key=lambda t: t[0]), max(per_rank, key=lambda t: t[1])


def _model_flops(model: ModelSpec, cluster: ClusterSpec, par: ParallelSpec, tok_s_gpu: float) -> dict:
    """Model FLOPs per token, TFLOP/s per GPU and MFU under both attention conventions."""
    out = {}
    peak = cluster.peak_tflops["bf16"]
    for conv in (CAUSAL, FULL):
        flops = model_flops_per_token(model, par.seq, conv)
        out[f"gflop_per_token_{conv}"] = flops / 1e9
        out[f"tflops_per_gpu_{conv}"] = tok_s_gpu * flops / 1e12
        out[f"mfu_{conv}"] = mfu(tok_s_gpu, flops, peak)
    out["mfu_peak_tflops"] = peak
    return out


def _stage_costs(c: ChunkCosts) -> dict:
    return {"F": c.F, "I": c.I, "W": c.W, "B": c.B}


def _data_parallel(par: ParallelSpec, cluster: ClusterSpec, rates: Rates, dense: float, experts: float,
                   chunk_costs: list[ChunkCosts], chunks: set[int]) -> dict:
    """Gradient reduce(-scatter) and parameter all-gather over data parallel, exposed per the
    layout, and the Adam update of the local shard (memory-bound)."""
    n_dense = par.data_parallel * par.cp
    n_exp = max(1, n_dense // par.ep) if par.ep > 1 else n_dense
    g = BYTES[str(par.grad_dtype)]
    spans = par.tp * par.cp * par.data_parallel > cluster.gpus_per_node
    spans_exp = n_exp * par.tp * par.cp * par.ep > cluster.gpus_per_node
    if par.zero >= 1:
        reduce = (rates.collective_s("reduce_scatter", n_dense, dense * g, spans)
                  + rates.collective_s("reduce_scatter", n_exp, experts * g, spans_exp))
        gather = (rates.collective_s("all_gather", n_dense, dense * 2, spans)
                  + rates.collective_s("all_gather", n_exp, experts * 2, spans_exp))
    else:  # an all-reduce of the gradients; every rank updates all its parameters
        reduce = (rates.collective_s("all_reduce", n_dense, dense * g, spans)
                  + rates.collective_s("all_reduce", n_exp, experts * g, spans_exp))
        gather = 0.0
    if par.dp_overlap:  # hidden behind the last backward and the first forward of the rank's chunks
        hide_b = sum(chunk_costs[c].B for c in chunks)
        hide_f = sum(chunk_costs[c].F for c in chunks)
        exposed = max(0.0, reduce - hide_b) + max(0.0, gather - hide_f)
    else:
        exposed = reduce + gather
    local = dense / n_dense + experts / n_exp if par.zero >= 1 else dense + experts
    per_param = 8 + 4 * BYTES[str(par.moment_dtype)] + g + 2  # master r/w, moments r/w, grad read, param write
    optimizer = rates.hbm_s(local * per_param)
    return {"dp_reduce_s": reduce, "dp_gather_s": gather, "exposed_dp_s": exposed, "optimizer_step_s": optimizer,
            "optimizer_phase_s": exposed + optimizer}


def _exposed_comm(par, chunk_costs, sim, slowdown, latency, bandwidth, act_bytes, a2a_link) -> dict:
    """Communication a rank waits for, per kind (seconds per step, the busiest chunk): MoE
    all-to-all in actions run alone (hidden inside F&B pairs when compute is longer), split by
    link in proportion to each link's time; tensor-parallel collectives; pipeline P2P hops on the
    critical path (the warm-up and cool-down: 2 x (PP - 1) hops)."""
    heavy = max(chunk_costs, key=lambda c: c.F + c.B)
    alone_f = sim.phases["1F"] / heavy.F if heavy.F else 0.0
    alone_b = sim.phases["1B"] / heavy.I if heavy.I else 0.0
    pairs = sim.phases["F&B"] / max(1e-30, heavy.pair(heavy, slowdown))
    comp = (heavy.comp_f + heavy.comp_b) * slowdown
    comm = heavy.a2a_f + heavy.a2a_b
    pair_exposed = max(0.0, comm - comp)
    a2a = alone_f * heavy.a2a_f + alone_b * heavy.a2a_b + pairs * pair_exposed
    tp = alone_f * heavy.tp_f + alone_b * heavy.tp_b + pairs * (heavy.tp_f + heavy.tp_b)
    p2p = 2 * (par.pp - 1) * (latency + act_bytes / bandwidth) if par.pp > 1 else 0.0
    other = "nvlink" if a2a_link == "network" else "network"
    return {f"exposed_a2a_{a2a_link}_s": a2a, f"exposed_a2a_{other}_s": 0.0, "a2a_bound_by": a2a_link,
            "exposed_tp_s": tp, "exposed_p2p_s": p2p}
