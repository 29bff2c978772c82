"""What a simulated schedule yields: when each rank ran each action (Span), when each tensor
crossed between ranks (Transfer), and the Timeline that holds them with the per-rank totals."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from hpcbench.pipeline.ir import Action, Key, Schedule


@dataclass(frozen=True)
class Span:
    rank: int
    action: Action
    start: float
    end: float


@dataclass(frozen=True)
class Transfer:
    src_rank: int
    dst_rank: int
    src_action: Action  # the F (its activation) or the B/I (its input gradient) that is sent
    start: float
    end: float
    dst_key: Key  # the tensor it makes ready on dst_rank

    @property
    def what(self) -> str:
        return f"{'activation' if self.src_action.kind == 'F' else 'gradient'} of {self.src_action}"


@dataclass
class Timeline:
    schedule: Schedule
    spans: list[Span]
    transfers: list[Transfer]
    makespan: float
    busy: dict[int, float]
    peak_activations: dict[int, int]
    # total time of each action kind over all ranks ("FB" for a pair), from the arrays: what
    # `spans` would sum to, without making a Span per action
    kind_time: dict[str, float] = field(default_factory=dict)

    def idle(self, rank: int) -> float:
        return self.makespan - self.busy[rank]

    def bubble_ratio(self, rank: int) -> float:
        return self.idle(rank) / self.makespan

    @property
    def max_bubble(self) -> float:
        return max(self.idle(r) for r in self.busy)

    @property
    def mean_bubble_ratio(self) -> float:
        return sum(self.bubble_ratio(r) for r in self.busy) / len(self.busy)


def peak_activations(spans: list[Span]) -> dict[int, int]:
    """Most stage-microbatch activations alive at once per rank: from a forward's start until the
    end of its backward (B), or of its W when the backward is split (W still needs them).

    A rank's spans are sequential, so walking them in order visits these events in time order,
    with a span's frees before the next span's allocations."""
    live: dict[int, int] = defaultdict(int)
    peaks: dict[int, int] = defaultdict(int)
    for span in spans:
        rank = span.rank
        for a in span.action.parts():
            if a.kind == "F":
                live[rank] += 1
                peaks[rank] = max(peaks[rank], live[rank])
        for a in span.action.parts():
            if a.kind in ("B", "W"):
                live[rank] -= 1
    return dict(peaks)
