"""The full bidirectional DualPipe schedule (DeepSeek-V3 §3.2.1), which torch does not ship.

Two copies of the model run as two pipelines in opposite directions over the same ranks: copy 0's
stage j sits on rank j, copy 1's stage j on rank PP-1-j, and each copy is fed half the microbatches
from its own end. Stages are numbered 0..PP-1 for copy 0 and PP..2PP-1 for copy 1.

On rank r, "phase 0" is the copy whose early stage this rank holds (copy 0 on the first half of the
ranks, copy 1 on the second half) and "phase 1" the other. Each rank follows DualPipe's 8-step
program, with h = min(r, PP-1-r) and n = microbatches per copy:
  1 nF0      (PP/2-h-1)*2 forwards of phase 0           5 nB1F1B0   (PP/2-h-1) x [B1, (F1&B0)]
  2 nF0F1    (h+1) x [F0, F1]                            6 nB1B0     (h+1) x [B1, B0], zero-bubble from halfway
  3 nB1W1F1  (PP/2-h-1) x [I1, W, F1]                    7 nWB0      (PP/2-h-1) x [W, I0]
  4 main     (n-PP+h+1) x [(F0&B1), (F1&B0)]             8 nW        (h+1) x W
The two middle ranks do not overlap their first main-step pair (it would lengthen the bubble).

Each rank's program is assembled from those steps as arrays (`ir.Program`), with no object per
action: a 1,024-rank schedule has millions of them. Microbatches are numbered as the steps consume
them: the k-th forward of a phase takes microbatch k, the k-th backward (B or I) likewise, and the
k-th W finishes the k-th I (a first-in first-out queue of deferred weight gradients).
"""

from __future__ import annotations

import numpy as np

from hpcbench.pipeline.ir import KIND_CODE, NO_PART, Program, Schedule, from_program

_F, _B, _I, _W = (KIND_CODE[k] for k in ("F", "B", "I", "W"))
# an action template: (kind, phase) of its part, then of an FB pair's backward half (NO_PART if none);
# a W's phase is that of the I it finishes, filled in later
_F0, _F1 = (_F, 0, NO_PART, 0), (_F, 1, NO_PART, 0)
_B0, _B1, _I0, _I1 = (_B, 0, NO_PART, 0), (_B, 1, NO_PART, 0), (_I, 0, NO_PART, 0), (_I, 1, NO_PART, 0)
_WW = (_W, 0, NO_PART, 0)
_F0B1, _F1B0 = (_F, 0, _B, 1), (_F, 1, _B, 0)


def requirements(num_ranks: int, num_microbatches: int) -> str | None:
    """Why DualPipe cannot run this shape, or None."""
    if num_ranks < 2 or num_ranks % 2:
        return f"DualPipe needs an even number of ranks >= 2 (got {num_ranks})"
    if num_microbatches % 2 or num_microbatches < 2 * num_ranks:
        return (f"DualPipe needs an even number of microbatches >= 2 x ranks = {2 * num_ranks} "
                f"(got {num_microbatches})")
    return None


def _repeat(templates: list[tuple], times: int) -> np.ndarray:
    return np.tile(np.asarray(templates, dtype=np.int64).reshape(-1, 4), (max(times, 0), 1))


def _templates(h: int, pp: int, n: int) -> np.ndarray:
    """The actions, as templates (one row each) in DualPipe's 8-step order, of a rank h away from
    the nearer end (both such ranks run the same program on their own stages)."""
    half = pp // 2
    edge = half - h - 1  # steps 1, 3, 5 and 7 repeat this often
    main = n - pp + h + 1
    blocks = [_repeat([_F0], 2 * edge), _repeat([_F0, _F1], h + 1), _repeat([_I1, _WW, _F1], edge)]  # 1-3
    if main > 0 and h == half - 1:  # 4: the two middle ranks do not overlap their first pair
        blocks += [_repeat([_F0, _B1, _F1B0], 1), _repeat([_F0B1, _F1B0], main - 1)]
    else:
        blocks.append(_repeat([_F0B1, _F1B0], main))
    blocks.append(_repeat([_B1, _F1B0], edge))  # 5
    # 6: backward of phase 1 then 0, h + 1 times; zero-bubble (I now, W later) from the middle on
    six = _repeat([_B1, _B0], h + 1)
    split_from = 2 * ((h + 1) // 2) + (0 if h % 2 else 1)
    six[split_from:, 0] = _I
    blocks += [six, _repeat([_WW, _I0], edge), _repeat([_WW], h + 1)]  # 6-8
    return np.concatenate(blocks)


def _numbered(h: int, pp: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind, phase, mb) per action and part (two columns: an FB pair's F, then its backward;
    NO_PART where an action has no second part) of the program `_templates` gives."""
    t = _templates(h, pp, n)
    kinds, phases = t[:, [0, 2]], t[:, [1, 3]].copy()
    present = kinds != NO_PART
    # the parts in the order the rank runs them: row by row, an FB pair's F before its backward
    kind, phase = kinds[present], phases[present]
    mb = np.zeros(len(kind), dtype=np.int64)
    backward = (kind == _B) | (kind == _I)
    for p in (0, 1):
        for group in (kind == _F, backward):
            sel = group & (phase == p)
            mb[sel] = np.arange(np.count_nonzero(sel))
    weights, inputs = np.flatnonzero(kind == _W), np.flatnonzero(kind == _I)
    assert len(weights) == len(inputs), f"{h} from the end: weight gradients left over"
    phase[weights], mb[weights] = phase[inputs], mb[inputs]  # the k-th W finishes the k-th I
    mbs = np.full(kinds.shape, NO_PART, dtype=np.int64)
    mbs[present], phases[present] = mb, phase
    return kinds, phases, mbs


def dualpipe(num_ranks: int, num_microbatches: int) -> Schedule:
    reason = requirements(num_ranks, num_microbatches)
    if reason:
        raise ValueError(reason)
    pp = num_ranks
    n = num_microbatches // 2  # per copy
    programs = {h: _numbered(h, pp, n) for h in range(pp // 2)}
    parts = []
    for rank in range(pp):
        kinds, phases, mbs = programs[min(rank, pp - 1 - rank)]
        # phase 0 is the copy whose early stage this rank holds: copy 0 on the first half of the ranks
        own, other = rank, pp + (pp - 1 - rank)
        stage_of = np.array([own, other] if rank < pp // 2 else [other, own])
        stages = np.where(kinds != NO_PART, stage_of[phases], NO_PART)
        parts.append((kinds[:, 0], stages[:, 0], mbs[:, 0], kinds[:, 1], stages[:, 1], mbs[:, 1]))
    offsets = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])]).astype(np.int64)
    columns = (np.concatenate([p[c] for p in parts]) for c in range(6))
    program = Program(tuple(range(pp)), offsets, *columns)
    stage_to_rank = {j: j for j in range(pp)} | {pp + j: pp - 1 - j for j in range(pp)}
    return from_program("dualpipe", pp, 2 * pp, n, stage_to_rank, program, params_per_rank=2.0,
                        first_stages=(0, pp), last_stages=(pp - 1, 2 * pp - 1))
