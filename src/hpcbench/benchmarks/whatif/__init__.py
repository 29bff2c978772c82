"""What-if at cluster scale: a training step predicted from hpcbench's own measurements.

A model (conf/whatif/model), a cluster (conf/whatif/cluster) and a parallel layout
(conf/whatif/parallel) give per-action costs for each pipeline chunk (GEMMs, attention, memory
traffic, tensor-parallel collectives, MoE all-to-all with node-limited routing, overlap inside
F&B pairs: `costs`), which the pipeline simulator turns into a step; data-parallel
communication and the optimizer follow (`step`). Rates come from measured runs
(`whatif.costs_from`) or the cluster's published figures x its one calibrated efficiency
(`rates`); every row lists which inputs were measured and which assumed. No GPU is needed.

A configuration the layout cannot run (GPU count, divisibility, the schedule's microbatch
needs) is a row with status skipped and the reason; run alone (not in a sweep) it is also a
one-line error with exit status 2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from hpcbench.benchmarks.whatif import specs
from hpcbench.benchmarks.whatif.rates import Rates, load_rates
from hpcbench.benchmarks.whatif.report import REPORT
from hpcbench.benchmarks.whatif.step import Infeasible, predict
from hpcbench.benchmarks.whatif.table import table
from hpcbench.api.errors import UserError
from hpcbench.api.family import Family
from hpcbench.results.schema import STATUS_OK, STATUS_SKIPPED
from hpcbench.measure.timing import timed_columns

# the configuration keys that identify a point (compare joins on them)
PARAMS = ("model", "cluster", "parallel", "gpus", "tp", "pp", "dp", "cp", "ep", "zero", "schedule", "micro_batch",
          "microbatches", "seq", "global_batch", "recompute", "gemm_dtype", "nvlink_GBps", "net_GBps",
          "compute_efficiency", "costs_from")


@dataclass
class Config:
    """Types of the `whatif:` section; defaults and documentation: conf/benchmark/whatif.yaml."""

    model: Any = MISSING  # a name in conf/whatif/model, or the composed group
    cluster: Any = MISSING
    parallel: Any = MISSING
    costs_from: list[str] = MISSING
    allow_other_device: bool = MISSING


@dataclass(frozen=True)
class Scenario:
    model: specs.ModelSpec
    cluster: specs.ClusterSpec
    parallel: specs.ParallelSpec


def scenario(cfg: Config) -> Scenario:
    s = Scenario(specs.load("model", cfg.model), specs.load("cluster", cfg.cluster), specs.load("parallel", cfg.parallel))
    specs.check_values(s.model, s.cluster, s.parallel)
    return s


def validate(cfg: Config) -> None:
    s = scenario(cfg)  # unknown names and impossible values; layouts that cannot run are rows, not errors
    if cfg.costs_from:  # a missing run, or one of another device, is refused before the run directory exists
        load_rates(s.cluster, list(cfg.costs_from), cfg.allow_other_device)


def point_of(s: Scenario, costs_from: list[str]) -> dict:
    m, c, p = s.model, s.cluster, s.parallel
    return {"model": m.name, "cluster": c.name, "parallel": p.name, "gpus": p.gpus, "tp": p.tp, "pp": p.pp,
            "dp": p.data_parallel, "cp": p.cp, "ep": p.ep, "zero": p.zero, "schedule": str(p.schedule),
            "micro_batch": p.micro_batch, "microbatches": p.microbatch_count, "seq": p.seq,
            "global_batch": p.global_batch, "recompute": str(p.recompute), "gemm_dtype": str(p.gemm_dtype),
            "nvlink_GBps": c.nvlink_GBps, "net_GBps": c.net_GBps, "compute_efficiency": c.compute_efficiency,
            "costs_from": ",".join(costs_from)}


def evaluate(s: Scenario, rates: Rates, costs_from: list[str] = ()) -> dict:
    """One configuration's row (ok with the prediction, or skipped with the reason)."""
    row = point_of(s, list(costs_from))
    row.update(calibrated_on=s.cluster.calibrated_on, measured=", ".join(
        f"{k} ({v})" for k, v in rates.measured.items()), assumed=", ".join(rates.assumed()))
    t0 = time.perf_counter()
    try:
        out = predict(s.model, s.cluster, s.parallel, rates)
    except Infeasible as exc:
        return {**row, "status": STATUS_SKIPPED, "reason": f"infeasible: {exc}"}
    out["predict_wall_s"] = time.perf_counter() - t0
    # the row's "time" is the predicted step (one value): compare and report read it like a measurement
    return {**row, "status": STATUS_OK, "reason": None, **out,
            **timed_columns([out["step_s"]], "predicted")}


def run(cfg: Config, ctx):
    s = scenario(cfg)
    ctx.set_total(1)
    rates = load_rates(s.cluster, list(cfg.costs_from), cfg.allow_other_device)
    row = evaluate(s, rates, cfg.costs_from)
    # a prediction is not a CPU measurement; it inherits the fallback label only from measured inputs
    row["fallback"] = bool(rates.measured) and ctx.device.fallback and cfg.allow_other_device
    yield row
    if row["status"] == STATUS_SKIPPED and ctx.single_run:  # a sweep's other jobs go on
        raise UserError(f"whatif: {row['reason']}")


def planned(cfg: Config, kind: str) -> list[dict]:
    s = scenario(cfg)
    return [point_of(s, list(cfg.costs_from))]


FAMILY = Family(
    name="whatif",
    summary="What-if training step at cluster scale (DeepSeek-V3 on 2,048 H800 ...) from measured or published rates",
    config=Config, run=run, params=PARAMS, validate=validate, table=table, report=REPORT,
    smoke=("whatif/model=meg21_1_7b", "whatif/parallel=meg21_1_7b", "whatif/cluster=a100"),
    planned=planned,
    case_id=lambda r: f"{r['model']}-{r['cluster']}-{r['parallel']}-pp{r['pp']}-{r['schedule']}",
)
