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
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hpcbench.errors import UserError
from hpcbench.rank_timing import gather_times, time_ranks
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK

DISTRIBUTED = True

_AUTO = {"cuda": {"width": 4096, "layers": 16, "batch": 64}, "cpu": {"width": 256, "layers": 6, "batch": 16}}


# what identifies a point when two runs are compared (the world size is part of the environment)
PARAMS = ("width", "layers", "batch", "mode", "bucket_cap_mb")

@dataclass
class Config:
    width: int = 0  # hidden size; 0 = auto (4096 on CUDA, 256 on CPU)
    layers: int = 0  # Linear+GELU blocks; 0 = auto (16 / 6)
    batch: int = 0  # rows per rank; 0 = auto (64 / 16)
    bucket_cap_mb: list[float] = field(default_factory=lambda: [1.0, 5.0, 25.0, 100.0])
    iters: int = 10
    warmup_iters: int = 2
    rtol: float = 1e-4  # DDP's averaged gradients vs one flat all-reduce (fp32, different summation order)


def validate(cfg: Config) -> None:
    if min(cfg.width, cfg.layers, cfg.batch) < 0 or cfg.iters < 1 or cfg.warmup_iters < 0:
        raise UserError("ddp_overlap: width/layers/batch must be >= 0 (0 = auto), iters >= 1, warmup_iters >= 0")
    if not cfg.bucket_cap_mb or min(cfg.bucket_cap_mb) <= 0:
        raise UserError("ddp_overlap.bucket_cap_mb must list positive sizes (MB)")


def _model(width: int, layers: int, device) -> nn.Module:
    torch.manual_seed(0)  # the same weights on every rank
    blocks = []
    for _ in range(layers):
        blocks += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*blocks).to(device)


def _grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def run(cfg: Config, ctx):
    validate(cfg)
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

    def timed(step, label: str) -> dict:
        ctx.heartbeat(f"ddp_overlap {label}")
        samples = time_ranks(step, world, cfg.iters, cfg.warmup_iters, ctx.heartbeat)
        t = gather_times(world, samples)
        s = t.slowest_stats()
        return {"timing_method": "cuda_event" if device.type == "cuda" else "perf_counter",
                "step_us": s.median_s * 1e6, "n_samples": s.n, "median_s": s.median_s, "p10_s": s.p10_s,
                "p90_s": s.p90_s, "iqr_s": s.iqr_s, "cv": s.cv, "min_s": s.min_s, "max_s": s.max_s,
                "samples_s": t.slowest_s.tolist()}

    plain = copy.deepcopy(base)

    def no_comm():
        plain.zero_grad(set_to_none=False)
        plain(x).square().mean().backward()

    row = {**common, "mode": "no_comm", "bucket_cap_mb": None, "status": STATUS_OK, **timed(no_comm, "no_comm")}
    floor = row["step_us"]
    yield {**row, "exposed_comm_us": 0.0}

    def post_backward():
        no_comm()
        flat = _grads(plain)
        dist.all_reduce(flat)
        flat /= world.size
        offset = 0
        for p in plain.parameters():
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    row = {**common, "mode": "post_backward", "bucket_cap_mb": None, "status": STATUS_OK,
           **timed(post_backward, "post_backward")}
    post_backward()
    reference = _grads(plain).clone()  # averaged gradients for this rank's x
    yield {**row, "exposed_comm_us": row["step_us"] - floor}

    results = []
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
        row.update(status=STATUS_OK, **timed(ddp_step, f"ddp bucket {cap:g} MB"))
        row["exposed_comm_us"] = row["step_us"] - floor
        results.append(row)
        del ddp
    best = min(results, key=lambda r: r["step_us"], default=None)
    for r in results:
        yield {**r, "best_bucket": r is best}


def table(rows: list[dict], fallback: bool):
    from rich.table import Table

    first = rows[0]
    title = (f"DDP bucketed backward: {first['layers']}×Linear({first['width']}) batch {first['batch']}, "
             f"{first['grad_bytes'] / 2**20:.1f} MiB of gradients, world {first['world_size']}")
    if fallback:
        title += "  [yellow](CPU fallback: not performance numbers)[/]"
    t = Table(title=title, title_justify="left")
    for col in ("mode", "bucket MB", "status", "step us", "p10–p90 us", "exposed comm us", "best"):
        t.add_column(col, justify="left" if col in ("mode", "status") else "right")
    for r in rows:
        ok = r["status"] == STATUS_OK
        t.add_row(r["mode"], "" if r.get("bucket_cap_mb") is None else f"{r['bucket_cap_mb']:g}",
                  r["status"] if ok else f"{r['status']}: {(r.get('reason') or '')[:60]}",
                  f"{r['step_us']:.1f}" if ok else "",
                  f"{r['p10_s'] * 1e6:.1f}–{r['p90_s'] * 1e6:.1f}" if ok else "",
                  f"{r['exposed_comm_us']:.1f}" if ok else "", "◀ best" if r.get("best_bucket") else "")
    return t
