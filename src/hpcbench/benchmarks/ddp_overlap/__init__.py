"""DDP-style bucketed backward: how much gradient all-reduce stays exposed, per bucket size.

An MLP stack runs forward+backward three ways on every rank:
  no_comm        backward alone (gradients never leave the rank): the floor
  post_backward  backward, then one all-reduce of all gradients flattened together: no overlap
  ddp            torch's DistributedDataParallel, which all-reduces buckets of `bucket_cap_mb`
                 as backward produces them, overlapping communication with the rest of backward
Exposed communication per step = T_step - T_no_comm. Before any time is reported, the averaged
gradients of DDP are checked against those of post_backward (two independent reductions).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from omegaconf import MISSING

from hpcbench.benchmarks.ddp_overlap.report import REPORT
from hpcbench.api import checks
from hpcbench.api.errors import UserError
from hpcbench.api.family import Family
from hpcbench.measure.rank_timing import gather_times, time_ranks
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK
from hpcbench.measure.stragglers import straggler_columns, with_verdict
from hpcbench.api.tables import fmt, new_table, status_cell
from hpcbench.measure.timing import host_or_event, timed_columns

_AUTO = {"cuda": {"width": 4096, "layers": 16, "batch": 64}, "cpu": {"width": 256, "layers": 6, "batch": 16}}


# what identifies a point when two runs are compared (the world size is part of the environment)
PARAMS = ("width", "layers", "batch", "mode", "bucket_cap_mb")


@dataclass
class Config:
    """Types of the `ddp_overlap:` section; defaults and their documentation: conf/benchmark/ddp_overlap.yaml."""

    width: int = MISSING
    layers: int = MISSING
    batch: int = MISSING
    bucket_cap_mb: list[float] = MISSING
    iters: int = MISSING
    warmup_iters: int = MISSING
    rtol: float = MISSING


def validate(cfg: Config) -> None:
    auto = {k: "0 = auto" for k in ("width", "layers", "batch")}
    checks.at_least("ddp_overlap", cfg, auto, width=0, layers=0, batch=0, iters=1, warmup_iters=0)
    checks.positive("ddp_overlap", cfg, "rtol")
    if not cfg.bucket_cap_mb:
        raise UserError("ddp_overlap.bucket_cap_mb=[]: list at least one bucket size (MB)")
    checks.each_positive("ddp_overlap.bucket_cap_mb", cfg.bucket_cap_mb)


def _model(width: int, layers: int, device) -> nn.Module:
    torch.manual_seed(0)  # the same weights on every rank
    blocks = []
    for _ in range(layers):
        blocks += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*blocks).to(device)


def _grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def run(cfg: Config, ctx):
    world, device = ctx.world, ctx.device.torch_device
    auto = _AUTO[device.type]
    width, layers, batch = cfg.width or auto["width"], cfg.layers or auto["layers"], cfg.batch or auto["batch"]
    ctx.set_total(2 + len(cfg.bucket_cap_mb))
    base = _model(width, layers, device)
    gen = torch.Generator(device=device).manual_seed(1000 + world.rank)  # each rank its own data
    x = torch.randn(batch, width, device=device, generator=gen)
    grad_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    common = {"width": width, "layers": layers, "batch": batch, "grad_bytes": grad_bytes,
              "world_size": world.size, "backend": world.backend}
    modes = [{"mode": "no_comm"}, {"mode": "post_backward"}, *({"mode": "ddp", "bucket_cap_mb": c} for c in cfg.bucket_cap_mb)]
    if ctx.already_measured(*({**common, **m} for m in modes)):
        return  # resume: exposed communication is measured against the baselines of the same attempt
    plain = copy.deepcopy(base)
    no_comm, post_backward = _baseline_steps(plain, x, world)
    row = {**common, "mode": "no_comm", "bucket_cap_mb": None, "status": STATUS_OK, **_timed(no_comm, "no_comm", cfg, ctx)}
    floor = row["step_us"]
    yield {**row, "exposed_comm_us": 0.0}
    row = {**common, "mode": "post_backward", "bucket_cap_mb": None, "status": STATUS_OK,
           **_timed(post_backward, "post_backward", cfg, ctx)}
    post_backward()
    reference = _grads(plain).clone()  # averaged gradients for this rank's x
    yield {**row, "exposed_comm_us": row["step_us"] - floor}
    results = []
    for row in _ddp_rows(base, x, reference, common, cfg, ctx):
        if row["status"] == STATUS_OK:
            row["exposed_comm_us"] = row["step_us"] - floor
            results.append(row)
        else:
            yield row
    best = min(results, key=lambda r: r["step_us"], default=None)
    for r in results:
        yield {**r, "best_bucket": r is best}


def _timed(step, label: str, cfg: Config, ctx) -> dict:
    ctx.heartbeat(f"ddp_overlap {label}")
    samples = time_ranks(step, ctx.world, cfg.iters, cfg.warmup_iters, ctx.heartbeat)
    times = gather_times(ctx.world, samples)
    cols = timed_columns(times.slowest_s, host_or_event(ctx.device.kind))
    return {"step_us": cols["median_s"] * 1e6, **cols, **straggler_columns(ctx.device.kind, times)}


def _baseline_steps(plain: nn.Module, x, world):
    """Backward alone, and backward followed by one all-reduce of every gradient flattened."""
    def no_comm():
        plain.zero_grad(set_to_none=False)
        plain(x).square().mean().backward()

    def post_backward():
        no_comm()
        flat = _grads(plain)
        dist.all_reduce(flat)
        flat /= world.size
        offset = 0
        for p in plain.parameters():
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
    return no_comm, post_backward


def _ddp_rows(base: nn.Module, x, reference, common: dict, cfg: Config, ctx):
    """One row per bucket size: DDP's gradients checked against the flat all-reduce, then timed."""
    world, device = ctx.world, ctx.device.torch_device
    for cap in cfg.bucket_cap_mb:
        ddp = DistributedDataParallel(copy.deepcopy(base), bucket_cap_mb=cap, broadcast_buffers=False,
                                      device_ids=[device.index] if device.type == "cuda" else None)

        def ddp_step(ddp=ddp):
            ddp.zero_grad(set_to_none=False)
            ddp(x).square().mean().backward()

        ddp_step()
        got = _grads(ddp.module)
        ok = world.all_true(bool(torch.allclose(got, reference, rtol=cfg.rtol, atol=cfg.rtol * 1e-2)))
        row = {**common, "mode": "ddp", "bucket_cap_mb": cap}
        if not ok:
            err = float((got - reference).abs().max())
            yield {**row, "status": STATUS_FAILED,
                   "reason": f"DDP gradients differ from one flat all-reduce (max abs diff {err:.3g} on rank "
                             f"{world.rank})"}
            continue
        yield {**row, "status": STATUS_OK, **_timed(ddp_step, f"ddp bucket {cap:g} MB", cfg, ctx)}
        del ddp


def table(rows: list[dict], fallback: bool):
    first = rows[0]
    title = (f"DDP bucketed backward: {fmt(first['layers'])}×Linear({fmt(first['width'])}) batch {fmt(first['batch'])}, "
             f"{first['grad_bytes'] / 2**20:.1f} MiB of gradients, world {fmt(first['world_size'])}")
    t = new_table(title, fallback, "gloo on shared cores",
                  ["mode", "bucket MB", "status", "step us", "p10–p90 us", "exposed comm us", "best"],
                  left=("mode", "status"))
    for r in rows:
        ok = r["status"] == STATUS_OK
        t.add_row(r["mode"], fmt(r.get("bucket_cap_mb"), "g"), status_cell(r, 60), fmt(r.get("step_us"), ".1f"),
                  f"{r['p10_s'] * 1e6:.1f}–{r['p90_s'] * 1e6:.1f}" if ok else "",
                  fmt(r.get("exposed_comm_us"), ".1f"), "◀ best" if r.get("best_bucket") else "")
    return with_verdict(t, rows)


def planned(cfg: Config, kind: str) -> list[dict]:
    return [{"mode": "no_comm"}, {"mode": "post_backward"}, *({"mode": "ddp", "bucket_cap_mb": c} for c in cfg.bucket_cap_mb)]


FAMILY = Family(
    name="ddp_overlap",
    summary="DDP's bucketed gradient all-reduce overlapped with backward, per bucket size",
    config=Config, run=run, params=PARAMS, distributed=True, validate=validate, table=table, report=REPORT,
    smoke=("ddp_overlap.width=64", "ddp_overlap.layers=4", "ddp_overlap.batch=8", "ddp_overlap.bucket_cap_mb=[0.01,25]",
           "ddp_overlap.iters=3", "ddp_overlap.warmup_iters=1"),
    planned=planned,
    case_id=lambda r: r["mode"] + (f"-{r['bucket_cap_mb']:g}MB" if r.get("bucket_cap_mb") is not None else ""),
)
