"""One schedule representation for the simulator and the executor, and the one dependency rule.

A schedule is, per rank, the ordered compute actions that rank runs. Symbols follow PyTorch's
pipelining names and the DualPipe paper:
  F   forward of one microbatch through one stage
  B   full backward (input and weight gradients together)
  I   backward for the input only (the gradient sent upstream)
  W   backward for the weights only (deferred: what zero-bubble schedules move into bubbles)
  FB  an overlapped pair: the forward of one microbatch and the full backward of another, run
      concurrently (DualPipe's F&B); `pair` holds the two
Communication is implied by `stage_to_rank`: an F's output goes to the next stage's rank, a B/I's
input gradient to the previous stage's rank. Sends and receives are not listed; the simulator, the
executor and the measured timeline derive them from `input_edge`/`input_key`,
`output_edge`/`output_key` and `prerequisite` below, so all three see exactly the same dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPUTE = ("F", "B", "I", "W")


@dataclass(frozen=True)
class Action:
    kind: str  # F | B | I | W | FB
    stage: int = -1
    mb: int = -1
    pair: tuple[Action, Action] | None = None  # for FB: (the F, the B)

    def __str__(self) -> str:
        if self.kind == "FB":
            return f"({self.pair[0]};{self.pair[1]})"
        return f"{self.stage}{self.kind}{self.mb}"

    def parts(self) -> tuple[Action, ...]:
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
    first_stages: tuple[int, ...] = (0,)  # where each model copy's pipeline starts (DualPipe: two)
    last_stages: tuple[int, ...] = ()  # where each copy's pipeline ends; () = the last stage

    def __post_init__(self) -> None:
        if not self.last_stages:
            self.last_stages = (self.num_stages - 1,)

    @property
    def copies(self) -> int:
        """How many copies of the model the stages hold (bidirectional DualPipe: 2)."""
        return len(self.first_stages)

    def first_stage_of(self, stage: int) -> bool:
        return stage in self.first_stages

    def last_stage_of(self, stage: int) -> bool:
        return stage in self.last_stages

    def next_stage(self, stage: int) -> int | None:
        """The stage an F's output feeds (None at the end of a pipeline)."""
        return None if self.last_stage_of(stage) else stage + 1

    def prev_stage(self, stage: int) -> int | None:
        return None if self.first_stage_of(stage) else stage - 1

    def compute_actions(self, rank: int):
        for action in self.actions[rank]:
            yield from action.parts()


# A tensor that crosses a stage boundary, named by the stage it enters: ("f", stage, mb) for the
# activation entering `stage` (an F's input), ("b", stage, mb) for the gradient entering it from
# downstream (a B's or an I's input). Plain tuples: the simulator makes hundreds of thousands.
Key = tuple[str, int, int]


def describe(key: Key) -> str:
    way, stage, mb = key
    return f"{'activation' if way == 'f' else 'gradient'} {stage}{'F' if way == 'f' else 'B'}{mb}"


# ---- the dependency rule: what an action needs, and what it hands on -----------------------------

Edge = tuple[str, int]  # a Key without its microbatch: whether and where a kind of action on a stage talks


def input_edge(schedule: Schedule, kind: str, stage: int) -> Edge | None:
    """What an action of `kind` on `stage` must be handed by another stage before it can run:
    ("f", stage) the activation from the previous stage (an F), ("b", stage) the gradient from the
    next one (a B or an I). None when its input is already on its rank: a first stage's F reads
    the batch, a last stage's backward starts from the loss its own F computed, a W continues its
    I (see `prerequisite`)."""
    if kind == "F" and not schedule.first_stage_of(stage):
        return ("f", stage)
    if kind in ("B", "I") and not schedule.last_stage_of(stage):
        return ("b", stage)
    return None


def output_edge(schedule: Schedule, kind: str, stage: int) -> Edge | None:
    """What an action of `kind` on `stage` hands another stage: an F's output to the next stage,
    a B's or an I's input gradient to the previous one; None at the ends of a pipeline and for W."""
    if kind == "F":
        nxt = schedule.next_stage(stage)
        return None if nxt is None else ("f", nxt)
    if kind in ("B", "I"):
        prev = schedule.prev_stage(stage)
        return None if prev is None else ("b", prev)
    return None


def input_key(schedule: Schedule, a: Action) -> Key | None:
    """The tensor another stage must hand `a` (`input_edge` for its microbatch), or None."""
    edge = input_edge(schedule, a.kind, a.stage)
    return None if edge is None else (edge[0], edge[1], a.mb)


def output_key(schedule: Schedule, a: Action) -> Key | None:
    """The tensor `a` hands another stage (`output_edge` for its microbatch), or None."""
    edge = output_edge(schedule, a.kind, a.stage)
    return None if edge is None else (edge[0], edge[1], a.mb)


# the kind of the action that must have run earlier on the same rank, for the same stage and
# microbatch: a backward's forward (its stashed activations, and on a last stage its loss), a W's
# I (the graph it kept)
_PREREQUISITE = {"B": "F", "I": "F", "W": "I"}


def prerequisite(a: Action) -> tuple[str, int, int] | None:
    """(kind, stage, mb) of the action `a` needs to have run earlier on its rank, or None."""
    kind = _PREREQUISITE.get(a.kind)
    return None if kind is None else (kind, a.stage, a.mb)


def message_plan(schedule: Schedule) -> dict[int, list[tuple[int, Key]]]:
    """Per rank, the messages it sends to other ranks, in its order: (dst rank, key)."""
    plan: dict[int, list[tuple[int, Key]]] = {}
    s2r = schedule.stage_to_rank
    for rank in schedule.actions:
        keys = (output_key(schedule, a) for a in schedule.compute_actions(rank))
        plan[rank] = [(s2r[k[1]], k) for k in keys if k is not None and s2r[k[1]] != rank]
    return plan


def validate(schedule: Schedule) -> None:
    """Every stage runs F once per microbatch and either B or (I then W) once, on its own rank,
    each after its `prerequisite` (in an earlier action: the halves of an FB pair run together).
    Raises ValueError naming the first violation."""
    seen: dict[tuple[str, int, int], int] = {}
    for rank, actions in schedule.actions.items():
        done: set[tuple[str, int, int]] = set()
        for action in actions:
            parts = action.parts()
            for a in parts:
                key = (a.kind, a.stage, a.mb)
                if schedule.stage_to_rank[a.stage] != rank:
                    raise ValueError(f"rank {rank} runs {a} but stage {a.stage} lives on rank "
                                     f"{schedule.stage_to_rank[a.stage]}")
                if key in seen:
                    raise ValueError(f"{a} appears twice")
                before = _PREREQUISITE.get(a.kind)  # `prerequisite`, inlined: validate sees every action
                if before is not None and (before, a.stage, a.mb) not in done:
                    raise ValueError(f"rank {rank}: {a} before its {'forward' if before == 'F' else 'input gradient'}")
                seen[key] = rank
            done.update([(a.kind, a.stage, a.mb) for a in parts] if len(parts) > 1 else [key])
    for stage in range(schedule.num_stages):
        for mb in range(schedule.num_microbatches):
            if ("F", stage, mb) not in seen:
                raise ValueError(f"stage {stage} never runs the forward of microbatch {mb}")
            full, split = ("B", stage, mb) in seen, ("I", stage, mb) in seen
            if full == split or split != (("W", stage, mb) in seen):
                raise ValueError(f"stage {stage} microbatch {mb}: needs exactly one B, or one I and one W")
