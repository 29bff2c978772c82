"""Which device a run measures, and the CPU fallback's Triton interpreter.

`TRITON_INTERPRET=1` is read by Triton when a kernel is decorated, so it must be set before
`hpcbench.kernels` is imported: `resolve_device` does that for CPU runs.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch

from hpcbench.api.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cuda" | "cpu"
    name: str
    index: int | None
    capability: tuple[int, int] | None
    total_memory: int | None  # bytes

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.kind, self.index) if self.kind == "cuda" else torch.device("cpu")

    @property
    def fallback(self) -> bool:
        """CPU measurements are a functional fallback, not performance numbers."""
        return self.kind == "cpu"

    def free_memory(self) -> int | None:
        if self.kind == "cuda":
            return torch.cuda.mem_get_info(self.index)[0]
        return _host_available_memory()


def _host_available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def device_kind(requested: str) -> str:
    """What `resolve_device` would pick, without touching the GPU (a launcher must not hold one)."""
    if requested not in DEVICE_CHOICES:
        raise UserError(f"device={requested!r} is not one of {', '.join(DEVICE_CHOICES)}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but torch sees no CUDA device (is this a CPU build of torch?)")
    return "cuda" if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()) else "cpu"


def resolve_device(requested: str, local_rank: int = 0) -> DeviceInfo:
    """Resolve `auto|cpu|cuda` to a concrete device; CPU turns on the Triton interpreter."""
    if device_kind(requested) == "cuda":
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo("cuda", props.name, index, (props.major, props.minor), props.total_memory)
    enable_triton_interpreter()
    return DeviceInfo("cpu", cpu_name(), None, None, None)


def enable_triton_interpreter() -> None:
    """Make Triton kernels run in its CPU interpreter; must happen before they are decorated."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return
    if any(name.startswith("hpcbench.kernels.") for name in sys.modules):
        raise RuntimeError("hpcbench.kernels was imported before the Triton interpreter was enabled")
    os.environ["TRITON_INTERPRET"] = "1"
