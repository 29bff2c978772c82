"""Every schedule hpcbench knows, by name: torch's (through the adapter) and its own DualPipe."""

from __future__ import annotations

from hpcbench.pipeline.dualpipe import dualpipe
from hpcbench.pipeline.dualpipe import requirements as dualpipe_requirements
from hpcbench.pipeline.ir import Schedule, validate
from hpcbench.pipeline.torch_schedules import TORCH_SCHEDULES, torch_schedule

SCHEDULES = (*TORCH_SCHEDULES, "dualpipe")


def check_name(name: str) -> None:
    if name not in SCHEDULES:
        raise ValueError(f"unknown pipeline schedule {name!r} (available: {', '.join(SCHEDULES)})")


def requirement(name: str, num_ranks: int, num_microbatches: int) -> str | None:
    """Why `name` cannot run this shape (with what would work), or None."""
    check_name(name)
    if num_ranks < 1 or num_microbatches < 1:
        return "ranks and microbatches must be positive"
    if name == "dualpipe":
        return dualpipe_requirements(num_ranks, num_microbatches)
    if name == "dualpipev" and num_microbatches < 2 * num_ranks:
        return f"{name} needs at least 2 x ranks = {2 * num_ranks} microbatches (got {num_microbatches})"
    return None


def build(name: str, num_ranks: int, num_microbatches: int) -> Schedule:
    """The schedule, validated (every F/B/W once per stage and microbatch); ValueError says why not.

    `num_microbatches` is the whole batch: DualPipe feeds half of it from each end."""
    reason = requirement(name, num_ranks, num_microbatches)
    if reason:
        raise ValueError(f"{name}: {reason}")
    try:
        schedule = dualpipe(num_ranks, num_microbatches) if name == "dualpipe" else torch_schedule(
            name, num_ranks, num_microbatches)
    except ValueError as exc:
        raise ValueError(f"{name} with {num_ranks} ranks and {num_microbatches} microbatches: {exc}") from None
    validate(schedule)
    return schedule


def model_chunks(schedule: Schedule) -> int:
    """How many pieces the model is cut into (DualPipe's two copies share them)."""
    return schedule.num_stages // schedule.copies
