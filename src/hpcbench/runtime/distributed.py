"""The ranks of a multi-rank run: where they come from and the process groups they share.

Ranks are given by torchrun (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT), by srun
(SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, translated here), or started by hpcbench itself through
torch's elastic launcher (`hpcbench.runtime.launch`), which sets the torchrun variables.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hpcbench.api.errors import UserError
from hpcbench.runtime.device import DeviceInfo
from hpcbench.runtime.ranks import launched_ranks  # noqa: F401  (re-exported)

BACKEND_CHOICES = ("auto", "nccl", "gloo")


def _first_slurm_host() -> str:
    nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST")
    if nodelist:
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30)
            if out.returncode == 0 and out.stdout.split():
                return out.stdout.split()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return os.environ.get("SLURM_LAUNCH_NODE_IPADDR") or socket.gethostname()


def adopt_slurm_environment() -> None:
    """Translate srun's variables into the torchrun ones that env:// initialisation reads."""
    if os.environ.get("RANK") is not None or os.environ.get("SLURM_PROCID") is None:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ.setdefault("LOCAL_WORLD_SIZE", os.environ.get("SLURM_STEP_TASKS_PER_NODE", "1").split("(")[0])
    os.environ.setdefault("MASTER_ADDR", _first_slurm_host())
    # one port per job, so that jobs sharing a node do not collide
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


# torch 2.13 renamed the flat-tensor collectives; the old names still work but warn
def all_gather_flat(output, input, group=None, async_op=False):
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return fn(output, input, group=group, async_op=async_op)


def reduce_scatter_flat(output, input, op, group=None, async_op=False):
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return fn(output, input, op=op, group=group, async_op=async_op)


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int
    backend: str
    device: DeviceInfo
    cpu_group: object  # a gloo group for host-side traffic: timing gathers, the CPU-staged all-reduce

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """All ranks line up, and on CUDA nothing earlier is still running on the device."""
        if self.device.kind == "cuda":
            torch.cuda.synchronize()
        dist.barrier(group=self.cpu_group)

    def gather_rows(self, values: list[float]) -> torch.Tensor:
        """A [world, len(values)] float64 table of every rank's values (same length on all ranks)."""
        mine = torch.tensor(values, dtype=torch.float64)
        out = torch.empty(self.size * len(values), dtype=torch.float64)
        all_gather_flat(out, mine, group=self.cpu_group)
        return out.view(self.size, len(values))

    def sum_int(self, value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, group=self.cpu_group)
        return int(t.item())

    def all_true(self, flag: bool) -> bool:
        return self.sum_int(0 if flag else 1) == 0

    def broadcast_object(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]

    def gather_object(self, obj) -> list | None:
        """Every rank's `obj` on rank 0 (None elsewhere), over the host group."""
        out = [None] * self.size if self.is_rank0 else None
        dist.gather_object(obj, out, dst=0, group=self.cpu_group)
        return out

    def hosts(self) -> list[str]:
        names = [None] * self.size
        dist.all_gather_object(names, socket.gethostname(), group=self.cpu_group)
        return names


def init_world(device: DeviceInfo, backend: str, timeout_s: float) -> World:
    """Join the process group described by the environment (after `adopt_slurm_environment`)."""
    if backend not in BACKEND_CHOICES:
        raise UserError(f"dist.backend={backend!r} is not one of {', '.join(BACKEND_CHOICES)}")
    if backend == "auto":
        backend = "nccl" if device.kind == "cuda" else "gloo"
    if backend == "nccl" and device.kind != "cuda":
        raise UserError("dist.backend=nccl needs device=cuda")
    if backend == "nccl" and not dist.is_nccl_available():
        raise UserError("dist.backend=nccl but this torch build has no NCCL")
    # the backend's own timeout is a backstop: hpcbench's watchdog names the stuck rank first
    timeout = _dt.timedelta(seconds=timeout_s + 60)
    kwargs = {"device_id": device.torch_device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    cpu_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                 local_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                 backend=backend, device=device, cpu_group=cpu_group)


def shutdown_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
