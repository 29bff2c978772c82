"""The same schedule on torch.distributed.pipelining's own runtime, as a cross-check.

hpcbench's executor gives per-action timestamps, synthetic stages and concurrent F&B pairs; this
runs the schedules torch ships through torch's `PipelineStage` and schedule classes (`step()`),
on the same model chunks and batch, and reports its step time and its loss and gradients for the
same parity check. torch's runtime runs an overlapped F&B action's halves one after the other
unless a custom function is registered for it, and it has no per-action timing, so it
cross-checks correctness and step time, not the bubble.
"""

from __future__ import annotations

import copy
import time

import torch
from torch.nn import functional as F

from hpcbench.pipeline.ir import Schedule
from hpcbench.pipeline.torch_schedules import TORCH_SCHEDULES


class TorchRuntime:
    def __init__(self, name: str, schedule: Schedule, chunks: list[torch.nn.Module], rank: int,
                 device: torch.device):
        from torch.distributed.pipelining import PipelineStage
        from torch.distributed.pipelining.schedules import (
            PipelineScheduleSingle,
            get_schedule_class,
        )

        self.stage_ids = [s for s, r in sorted(schedule.stage_to_rank.items()) if r == rank]
        self.modules = {s: copy.deepcopy(chunks[s]) for s in self.stage_ids}
        stages = [PipelineStage(self.modules[s], s, schedule.num_stages, device) for s in self.stage_ids]
        cls = get_schedule_class(TORCH_SCHEDULES[name][0])
        single = issubclass(cls, PipelineScheduleSingle)
        self.n = schedule.num_microbatches
        # per-microbatch mean squared error; torch divides the accumulated gradients by n (scale_grads)
        self.schedule = cls(stages[0] if single else stages, self.n, loss_fn=F.mse_loss)
        self.first = 0 in self.stage_ids
        self.last = schedule.num_stages - 1 in self.stage_ids
        self.device = device

    def step(self, xs: list[torch.Tensor], ys: list[torch.Tensor]) -> tuple[float, dict[int, float]]:
        """One step; returns its seconds on this rank and the losses this rank computed
        (microbatch index -> loss / n, as hpcbench's executor reports them)."""
        for m in self.modules.values():
            m.zero_grad(set_to_none=True)
        losses: list[torch.Tensor] = []
        args = (torch.cat(xs),) if self.first else ()
        kwargs = {"target": torch.cat(ys), "losses": losses} if self.last else {}
        t0 = time.perf_counter()
        self.schedule.step(*args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        return elapsed, {i: float(loss.detach()) / self.n for i, loss in enumerate(losses)}

    def grads_by_chunk(self) -> dict[int, list[torch.Tensor]]:
        return {s: [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                    for p in m.parameters()] for s, m in self.modules.items()}
