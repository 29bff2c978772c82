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
"""

from __future__ import annotations

from collections import deque

from hpcbench.pipeline.ir import Action, Schedule


def requirements(num_ranks: int, num_microbatches: int) -> str | None:
    """Why DualPipe cannot run this shape, or None."""
    if num_ranks < 2 or num_ranks % 2:
        return f"DualPipe needs an even number of ranks >= 2 (got {num_ranks})"
    if num_microbatches % 2 or num_microbatches < 2 * num_ranks:
        return (f"DualPipe needs an even number of microbatches >= 2 x ranks = {2 * num_ranks} "
                f"(got {num_microbatches})")
    return None


class _Rank:
    """Per-rank program builder: microbatch counters per phase and the deferred-W queue."""

    def __init__(self, rank: int, pp: int):
        second_half = rank >= pp // 2
        self.stage = {p: (rank if p ^ second_half == 0 else pp + (pp - 1 - rank)) for p in (0, 1)}
        self.next_f = {0: 0, 1: 0}
        self.next_b = {0: 0, 1: 0}
        self.deferred_w: deque[Action] = deque()
        self.actions: list[Action] = []

    def _f(self, phase: int) -> Action:
        a = Action("F", self.stage[phase], self.next_f[phase])
        self.next_f[phase] += 1
        return a

    def _b(self, phase: int, zero_bubble: bool = False) -> Action:
        stage, mb = self.stage[phase], self.next_b[phase]
        self.next_b[phase] += 1
        if zero_bubble:  # input gradient now, weight gradient later (W)
            self.deferred_w.append(Action("W", stage, mb))
            return Action("I", stage, mb)
        return Action("B", stage, mb)

    def forward(self, phase: int) -> None:
        self.actions.append(self._f(phase))

    def backward(self, phase: int, zero_bubble: bool = False) -> None:
        self.actions.append(self._b(phase, zero_bubble))

    def weight(self) -> None:
        self.actions.append(self.deferred_w.popleft())

    def forward_backward(self, f_phase: int, b_phase: int) -> None:
        f, b = self._f(f_phase), self._b(b_phase)
        self.actions.append(Action("FB", pair=(f, b)))


def dualpipe(num_ranks: int, num_microbatches: int) -> Schedule:
    reason = requirements(num_ranks, num_microbatches)
    if reason:
        raise ValueError(reason)
    pp, half = num_ranks, num_ranks // 2
    n = num_microbatches // 2  # per copy
    actions = {}
    for rank in range(pp):
        h = min(rank, pp - 1 - rank)
        middle = rank in (half - 1, half)
        r = _Rank(rank, pp)
        for _ in range((half - h - 1) * 2):  # 1
            r.forward(0)
        for _ in range(h + 1):  # 2
            r.forward(0)
            r.forward(1)
        for _ in range(half - h - 1):  # 3
            r.backward(1, zero_bubble=True)
            r.weight()
            r.forward(1)
        for i in range(n - pp + h + 1):  # 4
            if i == 0 and middle:
                r.forward(0)
                r.backward(1)
            else:
                r.forward_backward(0, 1)
            r.forward_backward(1, 0)
        for _ in range(half - h - 1):  # 5
            r.backward(1)
            r.forward_backward(1, 0)
        zero_bubble = False
        for i in range(h + 1):  # 6
            if i == (h + 1) // 2 and h % 2 == 1:
                zero_bubble = True
            r.backward(1, zero_bubble)
            if i == (h + 1) // 2 and h % 2 == 0:
                zero_bubble = True
            r.backward(0, zero_bubble)
        for _ in range(half - h - 1):  # 7
            r.weight()
            r.backward(0, zero_bubble=True)
        for _ in range(h + 1):  # 8
            r.weight()
        assert not r.deferred_w, f"rank {rank}: weight gradients left over"
        actions[rank] = r.actions
    stage_to_rank = {j: j for j in range(pp)} | {pp + j: pp - 1 - j for j in range(pp)}
    return Schedule("dualpipe", pp, 2 * pp, n, stage_to_rank, actions, params_per_rank=2.0,
                    first_stages=(0, pp), last_stages=(pp - 1, 2 * pp - 1))
