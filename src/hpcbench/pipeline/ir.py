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

A schedule can also be held as a `Program`: the same actions as flat integer arrays. Generators of
large schedules (DualPipe) build that directly, and `Schedule.actions` then makes each rank's
Action objects only when something asks for them: a 1,024-rank schedule has millions of actions,
and the simulator and `validate` read the arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

COMPUTE = ("F", "B", "I", "W")
KIND_CODE = {k: i for i, k in enumerate(COMPUTE)}  # the integer a Program stores for each kind
NO_PART = -1  # a Program's second-part columns for an action that is not an FB pair


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
    # the same actions as arrays, when a generator built them so (then `actions` is read-only)
    program: Program | None = field(default=None, repr=False, compare=False)

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


@dataclass(frozen=True, eq=False)
class Program:
    """Every rank's actions as flat arrays, ranks in ascending order: rank `ranks[r]`'s j-th action
    is row `offsets[r] + j`. `kind`, `stage`, `mb` describe the action, or the F of an FB pair;
    `kind2`, `stage2`, `mb2` the pair's backward half, NO_PART for a single action. Kinds are
    KIND_CODE integers."""

    ranks: tuple[int, ...]
    offsets: np.ndarray
    kind: np.ndarray
    stage: np.ndarray
    mb: np.ndarray
    kind2: np.ndarray
    stage2: np.ndarray
    mb2: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rank_of_rows(self) -> np.ndarray:
        """The rank of every row."""
        return np.repeat(np.asarray(self.ranks, dtype=np.int64), np.diff(self.offsets))

    def decode(self, lo: int, hi: int) -> list[Action]:
        """Rows lo..hi-1 as Action objects (FB pairs rebuilt from their two halves)."""
        cols = [c[lo:hi].tolist() for c in (self.kind, self.stage, self.mb, self.kind2, self.stage2, self.mb2)]
        out = []
        for k, s, m, k2, s2, m2 in zip(*cols):
            first = Action(COMPUTE[k], s, m)
            out.append(first if k2 == NO_PART else Action("FB", pair=(first, Action(COMPUTE[k2], s2, m2))))
        return out


class ProgramActions(Mapping):
    """`Schedule.actions` of a schedule held as a Program: rank -> its Action list, decoded the
    first time it is asked for and kept (read-only: the Program stays the truth)."""

    def __init__(self, program: Program):
        self._program = program
        self._row = {r: i for i, r in enumerate(program.ranks)}
        self._lists: dict[int, list[Action]] = {}

    def __getitem__(self, rank: int) -> list[Action]:
        if rank not in self._lists:
            i = self._row[rank]  # KeyError for a rank the schedule lacks, as a dict would
            self._lists[rank] = self._program.decode(int(self._program.offsets[i]), int(self._program.offsets[i + 1]))
        return self._lists[rank]

    def __iter__(self):
        return iter(self._program.ranks)

    def __len__(self) -> int:
        return len(self._program.ranks)


def from_program(name: str, num_ranks: int, num_stages: int, num_microbatches: int, stage_to_rank: dict[int, int],
                 program: Program, **kwargs) -> Schedule:
    """A Schedule whose actions are `program` (decoded to Action objects only on demand)."""
    return Schedule(name, num_ranks, num_stages, num_microbatches, stage_to_rank, ProgramActions(program),
                    program=program, **kwargs)


def program_of(schedule: Schedule) -> Program:
    """The schedule as a Program: the one its generator built, else encoded from its actions
    (each call: a plain dict of lists may have been changed since)."""
    if schedule.program is not None:
        return schedule.program
    ranks = tuple(sorted(schedule.actions))
    cols: list[list[int]] = [[], [], [], [], [], []]
    kind, stage, mb, kind2, stage2, mb2 = (c.append for c in cols)
    lengths = []
    for rank in ranks:
        actions = schedule.actions[rank]
        lengths.append(len(actions))
        for a in actions:
            first, second = a.pair if a.kind == "FB" else (a, None)
            kind(KIND_CODE[first.kind])
            stage(first.stage)
            mb(first.mb)
            kind2(NO_PART if second is None else KIND_CODE[second.kind])
            stage2(NO_PART if second is None else second.stage)
            mb2(NO_PART if second is None else second.mb)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return Program(ranks, offsets, *(np.asarray(c, dtype=np.int64) for c in cols))


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
    Raises ValueError naming the first violation.

    A schedule held as a Program is checked on its arrays; only one that fails that check is
    walked action by action, to name its first violation."""
    if schedule.program is not None and _program_is_valid(schedule, schedule.program):
        return
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


def _program_is_valid(schedule: Schedule, p: Program) -> bool:
    """`validate`'s rules on the arrays, all at once: True when every one holds."""
    S, M = schedule.num_stages, schedule.num_microbatches
    two = p.kind2 != NO_PART
    row = np.arange(len(p), dtype=np.int64)
    kind = np.concatenate([p.kind, p.kind2[two]])
    stage = np.concatenate([p.stage, p.stage2[two]])
    mb = np.concatenate([p.mb, p.mb2[two]])
    where = np.concatenate([row, row[two]])  # the row (action) each part is in
    if len(kind) and not ((kind >= 0).all() and (kind < len(COMPUTE)).all() and (stage >= 0).all()
                          and (stage < S).all() and (mb >= 0).all() and (mb < M).all()):
        return False
    s2r = np.full(S, -1, dtype=np.int64)
    for st, r in schedule.stage_to_rank.items():
        if 0 <= st < S:
            s2r[st] = r
    if not (s2r[stage] == p.rank_of_rows()[where]).all():
        return False
    flat = (kind * S + stage) * M + mb
    pos = np.full(len(COMPUTE) * S * M, -1, dtype=np.int64)
    pos[flat] = where
    if np.count_nonzero(pos >= 0) != len(flat):  # some (kind, stage, mb) appears twice
        return False
    pos = pos.reshape(len(COMPUTE), S, M)
    f, b, i, w = (pos[KIND_CODE[k]] for k in COMPUTE)
    if (f < 0).any() or ((b >= 0) == (i >= 0)).any() or ((i >= 0) != (w >= 0)).any():
        return False
    # prerequisites in an earlier action of the same rank (the rank is its stage's, checked above)
    return bool((f[b >= 0] < b[b >= 0]).all() and (f[i >= 0] < i[i >= 0]).all() and (i[w >= 0] < w[w >= 0]).all())
