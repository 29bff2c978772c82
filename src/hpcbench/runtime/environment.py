"""Environment metadata recorded with every run, so results can be compared and reproduced."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

import hpcbench
from hpcbench.results.schema import SCHEMA_VERSION
from hpcbench.runtime.device import DeviceInfo, cpu_name
from hpcbench.runtime.ranks import world_size

# Variables that change what a benchmark measures; recorded verbatim when set.
_ENV_PREFIXES = ("NCCL_", "CUDA_", "TORCH_NCCL_", "TRITON_", "OMP_", "GLOO_", "SLURM_JOB", "HPCBENCH_")
_ENV_NAMES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_MAX_CONNECTIONS", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID")


def _run(cmd: list[str], cwd: str | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """Commit and dirty flag of the hpcbench source tree (null when installed from a wheel)."""
    src = str(Path(hpcbench.__file__).resolve().parent)
    sha = _run(["git", "rev-parse", "HEAD"], cwd=src)
    if sha is None:
        return {"git_sha": None, "git_dirty": None}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src)
    return {"git_sha": sha, "git_dirty": bool(status)}


def _gpu_details(device: DeviceInfo) -> dict:
    if device.kind != "cuda":
        return {"gpu_name": None, "gpu_count": 0}
    details = {
        "gpu_name": device.name,
        "gpu_count": torch.cuda.device_count(),
        "compute_capability": ".".join(map(str, device.capability)),
        "gpu_memory_bytes": device.total_memory,
        "cuda_runtime": torch.version.cuda,
        "nccl_version": ".".join(map(str, torch.cuda.nccl.version())) if torch.distributed.is_nccl_available() else None,
    }
    props = torch.cuda.get_device_properties(device.index)
    details["sm_count"] = props.multi_processor_count
    details["l2_cache_bytes"] = getattr(props, "L2_cache_size", None)
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,temperature.gpu"
    smi = _run(["nvidia-smi", f"--id={device.index}", f"--query-gpu={query}", "--format=csv,noheader,nounits"])
    if smi:
        keys = ["driver_version", "sm_clock_mhz", "sm_clock_max_mhz", "mem_clock_mhz", "mem_clock_max_mhz",
                "power_limit_w", "temperature_c"]
        details.update(dict(zip(keys, (v.strip() for v in smi.split(",")))))
    return details


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def node_name() -> str:
    """This process's node, for grouping ranks by node: SLURM's node name when srun started it
    (SLURMD_NODENAME), else the hostname; with only SLURM_NODEID, the hostname and the node
    number (containers on different nodes may all be called the same)."""
    name = os.environ.get("SLURMD_NODENAME")
    if name:
        return name
    host = socket.gethostname()
    node_id = os.environ.get("SLURM_NODEID")
    return f"{host}/node{node_id}" if node_id not in (None, "") else host


def collect_environment(device: DeviceInfo, run_id: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "hpcbench_version": hpcbench.__version__,
        **git_state(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "hostname": socket.gethostname(),
        "node_name": node_name(),
        "cpu_model": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "triton_version": _triton_version(),
        "device_kind": device.kind,
        "device_name": device.name,
        "fallback": device.fallback,
        **_gpu_details(device),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "world_size": world_size(),
        "environment": env,
    }
