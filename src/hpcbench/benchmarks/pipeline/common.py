"""What every schedule of one pipeline run shares: the model, the batch, synthetic durations, the
idle point-to-point latency (measured once per run) and the columns every row has."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from hpcbench.pipeline.model import ModelSpec
from hpcbench.measure.timing import host_or_event

# What `auto` (0) means, by device (documented in conf/benchmark/pipeline.yaml). On CUDA the
# stages are sized so that compute dominates Python's dispatch (~10 us a kernel): bfloat16, width
# 4096, 4096 tokens a microbatch -- about 0.8 ms of GEMMs per MLP layer's forward on an H100, so
# an action lasts milliseconds. (Width 8192 would quadruple that but not fit the float32
# single-process reference next to the pipeline on an 80 GB GPU at 8 ranks.) On the CPU: small,
# so that CI's 2 cores stay quick.
_AUTO = {"cuda": {"width": 4096, "microbatch_tokens": 4096, "dtype": "bfloat16"},
         "cpu": {"width": 64, "microbatch_size": 4, "dtype": "float32"}}
RTOL = {"float32": 1e-4, "bfloat16": 5e-2}  # parity: bfloat16 rounds to 2^-9 (measured ~1.3e-2)


def model_spec(cfg, world_size: int, kind: str) -> ModelSpec:
    auto = _AUTO[kind]
    tokens_per_sample = cfg.seq if str(cfg.model) == "transformer" else 1
    microbatch_size = cfg.microbatch_size or auto.get("microbatch_size") or -(-auto["microbatch_tokens"] // tokens_per_sample)
    return ModelSpec(kind=str(cfg.model), width=cfg.width or auto["width"], layers=cfg.layers or 4 * world_size,
                     seq=cfg.seq, microbatch_size=microbatch_size,
                     dtype=auto["dtype"] if cfg.dtype == "auto" else str(cfg.dtype))


def batch_p2p(setting, backend: str) -> bool:
    """`pipeline.batch_p2p` resolved: auto = batched on NCCL (sends and receives issued apart can
    deadlock there), one op at a time elsewhere (gloo)."""
    return backend == "nccl" if setting == "auto" else setting == "true"


@dataclass
class Setup:
    """What every schedule of one run shares."""

    cfg: Any  # the family's Config
    ctx: Any  # the RunContext
    spec: ModelSpec
    total_mb: int  # microbatches per step, the whole batch
    synthetic_s: dict | None  # fixed F/B/W/I durations in seconds (synthetic mode)
    latency: float  # idle ping-pong, half round trip (s)
    shared_clock: bool  # every rank on one host: one time.perf_counter clock
    batch_p2p: bool = False  # `pipeline.batch_p2p`, resolved

    @classmethod
    def of(cls, cfg, ctx) -> Setup:
        world, device = ctx.world, ctx.device.torch_device
        spec = model_spec(cfg, world.size, device.type)
        syn = cfg.synthetic
        synthetic_s = ({"F": syn.F_ms / 1e3, "B": syn.B_ms / 1e3, "W": syn.W_ms / 1e3,
                        "I": (syn.B_ms - syn.W_ms) / 1e3} if syn.enabled else None)
        latency = p2p_latency(world, spec, device)
        return cls(cfg, ctx, spec, cfg.microbatches or 4 * world.size, synthetic_s, latency,
                   len(set(world.hosts())) == 1, batch_p2p(cfg.batch_p2p, world.backend))

    @property
    def world(self):
        return self.ctx.world

    @property
    def device(self) -> torch.device:
        return self.ctx.device.torch_device

    @property
    def rtol(self) -> float:
        return self.cfg.rtol or RTOL[self.spec.dtype]

    @property
    def method(self) -> str:
        return host_or_event(self.device.type)

    def common_columns(self) -> dict:
        """The columns every row of the run has."""
        spec, world = self.spec, self.world
        return {"model": spec.kind, "width": spec.width, "layers": spec.layers, "seq": spec.seq,
                "microbatch_size": spec.microbatch_size, "microbatches": self.total_mb, "dtype": spec.dtype,
                "world_size": world.size, "backend": world.backend, "batch_p2p": self.batch_p2p,
                "synthetic": self.cfg.synthetic.enabled, "overlap": self.cfg.overlap, "rtol": self.rtol,
                "timing_method": self.method,
                "synthetic_ms": ({k: v * 1e3 for k, v in self.synthetic_s.items()} if self.synthetic_s else None)}


def p2p_latency(world, spec: ModelSpec, device: torch.device, iters: int = 20) -> float:
    """Half the median round trip of one activation between ranks 0 and 1 (0 on one rank)."""
    if world.size < 2:
        return 0.0
    buf = torch.zeros(spec.sample_shape(), device=device, dtype=spec.torch_dtype)
    samples = []
    world.barrier()
    if world.rank in (0, 1):
        peer = 1 - world.rank
        for i in range(iters + 3):
            t0 = time.perf_counter()
            if world.rank == 0:
                dist.send(buf, peer)
                dist.recv(buf, peer)
            else:
                dist.recv(buf, peer)
                dist.send(buf, peer)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                samples.append((time.perf_counter() - t0) / 2)
    world.barrier()
    return world.broadcast_object(statistics.median(samples) if world.rank == 0 else None)
