"""Rank of this process, from torchrun's or SLURM's environment; rank 0 alone writes and prints."""

from __future__ import annotations

import os


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def global_rank() -> int:
    return _env_int("RANK", "SLURM_PROCID", default=0)


def world_size() -> int:
    return _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)


def is_rank0() -> bool:
    """The one rule for which process writes files and prints: global rank 0 (of torchrun's, srun's
    or hpcbench's own ranks), or the only process. A World's rank agrees with it."""
    return global_rank() == 0


def launched_ranks() -> bool:
    """True when a launcher (torchrun, srun, hpcbench's own) already started this process as a rank."""
    if os.environ.get("RANK") is not None and os.environ.get("WORLD_SIZE") is not None:
        return True
    # srun sets SLURM_STEP_NUM_TASKS for the processes of a job step; a batch script itself is no rank
    return os.environ.get("SLURM_PROCID") is not None and os.environ.get("SLURM_STEP_NUM_TASKS") is not None
