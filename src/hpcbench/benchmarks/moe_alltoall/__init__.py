"""Expert-parallel MoE dispatch and combine: tokens to the ranks holding their top-k experts and back.

Per point (payload dtype x layout x tokens per rank x hidden x experts x top-k x routing), on the
run's ranks (gloo on CPU, NCCL on GPUs), three phases as real dispatchers run them, each a row:
  counts    the send layout and the exchange of per-destination counts (host reads the splits)
  dispatch  token rows to their experts' ranks: one all_to_all_single with split sizes; BF16, or
            FP8 E4M3 with one FP32 scale per 128 channels; per_rank (a token sent once to each rank
            holding any of its experts: DeepEP normal mode) or per_expert (once per (token, expert):
            DeepEP low-latency mode, pplx)
  combine   the experts' BF16 outputs back, summed per token (weighted by the router's weights
            with weighted=true)
and a fourth, `overlapped`: one micro-batch's expert GEMMs while another dispatches and combines
(DualPipe's idea; T_comp, T_comm, T_seq, T_ovl, hidden fraction). Routing: uniform, skewed (the
busiest rank receives r x the mean of the others), node-limited, or a traffic-matrix file; its
statistics are in every row. Every phase is checked bit-exact against a single-process reference
before it is timed. DeepEP's Buffer runs the same points when `deep_ep` imports on GPUs (else its
rows are skipped with the reason). Definitions: VISION.md §3 and the module docstrings of
`measure` (bandwidths), `routing`, `exchange`, `expert_overlap`; config: conf/benchmark/moe_alltoall.yaml.
"""

from __future__ import annotations

import sys

from hpcbench.benchmarks.moe_alltoall.deepep import measure_deep_ep
from hpcbench.benchmarks.moe_alltoall.measure import measure_torch
from hpcbench.benchmarks.moe_alltoall.report import REPORT
from hpcbench.benchmarks.moe_alltoall.routing import draw, stats
from hpcbench.benchmarks.moe_alltoall.settings import (
    Config,
    Point,
    check_world,
    label_of,
    phases,
    points,
    sizes,
    validate,
)
from hpcbench.benchmarks.moe_alltoall.table import table
from hpcbench.api.family import Family

# what identifies a point when two runs are compared (the world size is part of the environment)
PARAMS = ("impl", "phase", "layout", "dispatch_dtype", "tokens_per_rank", "hidden", "num_experts", "top_k", "routing",
          "imbalance", "node_groups", "groups_per_token", "traffic_matrix", "weighted", "seed")


def _routing(point: Point, world: int):
    return draw(point.routing, world, point.tokens_per_rank, point.num_experts, point.top_k, point.seed,
                 point.imbalance, point.node_groups, point.groups_per_token, point.traffic_matrix)


def run(cfg: Config, ctx):
    world, kind = ctx.world, ctx.device.kind
    check_world(cfg, kind, world.size)  # the CLI checked it before starting ranks; a direct caller may not have
    todo = points(cfg, kind)
    note = sizes(cfg, kind).note
    ctx.set_total(sum(len(phases(p.impl, cfg.expert_overlap)) for p in todo))
    if note and world.is_rank0:
        print(f"hpcbench: note: {note}", file=sys.stderr)
    drawn: dict = {}
    for point in todo:
        names = phases(point.impl, cfg.expert_overlap)
        base = {**point.params(), "world_size": world.size, "backend": world.backend, "combine_dtype": "bf16",
                "preset": str(cfg.preset), "note": note}
        if ctx.already_measured(*({**base, "phase": p} for p in names)):
            continue
        ctx.heartbeat(f"moe {point.label}")
        if point.routing_key not in drawn:  # one routing per shape and routing, shared by layouts and dtypes
            routing = _routing(point, world.size)
            drawn = {point.routing_key: (routing, stats(routing))}
        routing, routing_stats = drawn[point.routing_key]
        base.update(routing_stats)
        measure = measure_deep_ep if point.impl == "deep_ep" else measure_torch
        yield from measure(point, routing, base, names, cfg, ctx)


def planned(cfg: Config, kind: str) -> list[dict]:
    return [{**p.params(), "phase": ph} for p in points(cfg, kind) for ph in phases(p.impl, cfg.expert_overlap)]


FAMILY = Family(
    name="moe_alltoall",
    summary="MoE expert-parallel dispatch/combine: FP8/BF16, skewed routing, exact checks, overlap with experts",
    config=Config, run=run, params=PARAMS, distributed=True, validate=validate, check_world=check_world,
    table=table, report=REPORT,
    smoke=("moe_alltoall.tokens_per_rank=[32]", "moe_alltoall.hidden=[128]", "moe_alltoall.iters=3",
           "moe_alltoall.warmup_iters=1"),
    planned=planned,
    case_id=lambda r: f"{label_of(r)}-{r['phase']}",
)
