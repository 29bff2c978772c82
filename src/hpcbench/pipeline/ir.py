"""One schedule representation for the simulator and the executor.

A schedule is, per rank, the ordered compute actions that rank runs. Symbols follow PyTorch's
pipelining names and the DualPipe paper:
  F   forward of one microbatch through one stage
  B   full backward (input and weight gradients together)
  I   backward for the input only (the gradient sent upstream)
  W   backward for the weights only (deferred: what zero-bubble schedules move into bubbles)
  FB  an overlapped pair: the forward of one microbatch and the full backward of another, run
      concurrently (DualPipe's F&B); `pair` holds the two
Communication is implied by `stage_to_rank`: an F's output goes to the next stage's rank, a B/I's
input gradient to the previous stage's rank. Sends and receives are not listed; the simulator and
the executor derive them, so both see exactly the same dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMPUTE = ("F", "B", "I", "W")


@dataclass(frozen=True)
class Action:
    kind: str  # F | B | I | W | FB
    stage: int = -1
    mb: int = -1
    pair: tuple["Action", "Action"] | None = None  # for FB: (the F, the B)

    def __str__(self) -> str:
        if self.kind == "FB":
            return f"({self.pair[0]};{self.pair[1]})"
        return f"{self.stage}{self.kind}{self.mb}"

    def parts(self) -> tuple["Action", ...]:
        return self.pair if self.kind == "FB" else (self,)


@dataclass
class Schedule:
    name: str
    num_ranks: int
    num_stages: int
    num_microbatches: int  # per stage (per direction for bidirectional DualPipe)
    stage_to_rank: dict[int, int]
    actions: dict[int, list[Action]]  # rank -> ordered actions
    params_per_rank: float = 1.0  # model copies' share held per rank (DualPipe: 2x)
    notes: dict = field(default_factory=dict)

    def first_stage_of(self, stage: int) -> bool:
        return stage in self.notes.get("first_stages", (0,))

    def last_stage_of(self, stage: int) -> bool:
        return stage in self.notes.get("last_stages", (self.num_stages - 1,))

    def next_stage(self, stage: int) -> int | None:
        """The stage an F's output feeds (None at the end of a pipeline)."""
        return None if self.last_stage_of(stage) else stage + 1

    def prev_stage(self, stage: int) -> int | None:
        return None if self.first_stage_of(stage) else stage - 1

    def compute_actions(self, rank: int):
        for action in self.actions[rank]:
            yield from action.parts()


def validate(schedule: Schedule) -> None:
    """Every stage runs F once per microbatch and either B or (I then W) once, on its own rank,
    with F before its backward and I before W. Raises ValueError naming the first violation."""
    seen: dict[tuple[str, int, int], int] = {}
    for rank, actions in schedule.actions.items():
        done: set[tuple[str, int, int]] = set()
        for action in actions:
            for a in action.parts():
                key = (a.kind, a.stage, a.mb)
                if schedule.stage_to_rank[a.stage] != rank:
                    raise ValueError(f"rank {rank} runs {a} but stage {a.stage} lives on rank "
                                     f"{schedule.stage_to_rank[a.stage]}")
                if key in seen:
                    raise ValueError(f"{a} appears twice")
                if a.kind in ("B", "I") and ("F", a.stage, a.mb) not in done:
                    raise ValueError(f"rank {rank}: {a} before its forward")
                if a.kind == "W" and ("I", a.stage, a.mb) not in done:
                    raise ValueError(f"rank {rank}: {a} before its input gradient")
                seen[key] = rank
                done.add(key)
    for stage in range(schedule.num_stages):
        for mb in range(schedule.num_microbatches):
            if ("F", stage, mb) not in seen:
                raise ValueError(f"stage {stage} never runs the forward of microbatch {mb}")
            full, split = ("B", stage, mb) in seen, ("I", stage, mb) in seen
            if full == split or split != (("W", stage, mb) in seen):
                raise ValueError(f"stage {stage} microbatch {mb}: needs exactly one B, or one I and one W")
