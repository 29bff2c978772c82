"""Adapter: torch.distributed.pipelining's schedules -> hpcbench's schedule representation.

torch's schedule IR (`pipeline_order`, `_Action`, `_ComputationType`) is private and has changed
between releases (an int Enum up to 2.10, a str Enum since; OVERLAP_F_B since 2.9), so this is the
one module that touches it. Schedules are built against mock stages, as torch's own visualiser
does: no process group, no model. Computation types are read by their enum *names*, which have
been stable across those releases.
"""

from __future__ import annotations

from unittest import mock

from hpcbench.pipeline.ir import Action, Schedule

# hpcbench name -> (torch class name, stages per rank)
TORCH_SCHEDULES = {
    "gpipe": ("GPipe", 1),
    "1f1b": ("1F1B", 1),
    "interleaved_1f1b": ("Interleaved1F1B", 2),
    "zb1p": ("InterleavedZeroBubble", 1),  # one stage per rank: ZB-H1
    "zbv": ("ZBVZeroBubble", 2),
    "dualpipev": ("DualPipeV", 2),
}
_KIND = {"FORWARD": "F", "FULL_BACKWARD": "B", "BACKWARD_INPUT": "I", "BACKWARD_WEIGHT": "W"}
# data-parallel bookkeeping some schedules list (FSDP unshard/reshard, gradient reduction): not pipeline work
_SKIPPED = {"UNSHARD", "RESHARD", "REDUCE_GRAD", "WAIT_REDUCE_GRAD"}


def _convert(action) -> Action:
    kind = action.computation_type.name
    if kind == "OVERLAP_F_B":
        f, b = (_convert(a) for a in action.sub_actions)
        return Action("FB", pair=(f, b))
    if kind not in _KIND:
        raise ValueError(f"unexpected action {action} in a compute-only schedule")
    return Action(_KIND[kind], action.stage_index, action.microbatch_index)


def _single_stage_order(name: str, rank: int, num_ranks: int, n: int) -> list[Action]:
    """The order torch's single-stage runtime executes (`_step_microbatches`): GPipe runs every
    forward then every backward; 1F1B runs min(n, ranks - rank) forwards, then alternates backward
    and forward. (torch's `pipeline_order` for these two is informational only, and in 2.13 its
    1F1B order for the last rank skips microbatch 0, so it is not used.)"""
    if name == "gpipe":
        return [Action("F", rank, m) for m in range(n)] + [Action("B", rank, m) for m in range(n)]
    warmup = min(n, num_ranks - rank)
    order = [Action("F", rank, m) for m in range(warmup)]
    for m in range(n - warmup):
        order += [Action("B", rank, m), Action("F", rank, warmup + m)]
    return order + [Action("B", rank, m) for m in range(n - warmup, n)]


def torch_schedule(name: str, num_ranks: int, num_microbatches: int) -> Schedule:
    """Build torch's schedule `name` for `num_ranks` ranks; raises ValueError with torch's reason."""
    from torch.distributed.pipelining.schedules import (
        PipelineScheduleSingle,
        get_schedule_class,
    )
    from torch.distributed.pipelining.stage import PipelineStage

    torch_name, per_rank = TORCH_SCHEDULES[name]
    try:
        cls = get_schedule_class(torch_name)
    except ValueError as exc:
        raise ValueError(f"this torch has no {torch_name} schedule") from exc
    stage = mock.create_autospec(PipelineStage, instance=True)
    stage.group_rank, stage.group_size, stage.submod = 0, num_ranks, None
    stage.num_stages = per_rank * num_ranks
    single = issubclass(cls, PipelineScheduleSingle)
    try:
        instance = cls(stage if single else [stage] * per_rank, num_microbatches)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    num_stages = per_rank * num_ranks
    if single:
        stage_to_rank = {s: s for s in range(num_stages)}
        actions = {rank: _single_stage_order(name, rank, num_ranks, num_microbatches) for rank in range(num_ranks)}
    else:
        stage_to_rank = dict(instance.stage_index_to_group_rank)
        actions = {rank: [_convert(a) for a in instance.pipeline_order[rank]
                          if a is not None and a.computation_type.name not in _SKIPPED]
                   for rank in range(num_ranks)}
    return Schedule(name, num_ranks, num_stages, num_microbatches, stage_to_rank, actions,
                    params_per_rank=float(per_rank) if name in ("dualpipev",) else 1.0)
