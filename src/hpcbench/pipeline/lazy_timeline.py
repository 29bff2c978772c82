"""A simulated timeline's spans and transfers as lists made on first read, from the simulation's
arrays (row numbers and times): millions for a large schedule, and often only the totals are read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hpcbench.pipeline.ir import Action
from hpcbench.pipeline.timeline import Span, Transfer


class _Lazy(Sequence):
    """A list made on first use: a simulated timeline's spans or transfers (millions, for a large
    schedule, and often only the totals are read)."""

    def __init__(self):
        self._items = None

    def _make(self) -> list:
        raise NotImplementedError

    @property
    def items(self) -> list:
        if self._items is None:
            self._items = self._make()
        return self._items

    def __getitem__(self, i):
        return self.items[i]

    def __iter__(self):
        return iter(self.items)

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self) -> str:
        return repr(self.items)


class LazySpans(_Lazy):
    """The spans of the simulation `sim` (a simulator._Simulation after its run), rows in `order`."""

    def __init__(self, sim, order: np.ndarray):
        super().__init__()
        self._sim, self._order = sim, order

    def __len__(self) -> int:
        return len(self._order)

    def _make(self) -> list[Span]:
        sim = self._sim
        row_rank = sim.program.rank_of_rows().tolist()
        action = _row_actions(sim)
        starts, ends = sim.start, sim.end.tolist()
        return [Span(row_rank[i], action(i), starts[i], ends[i]) for i in self._order.tolist()]


class LazyTransfers(_Lazy):
    """The transfers of the simulation `sim`, one per entry of `sent`."""

    def __init__(self, sim, sent: np.ndarray):
        super().__init__()
        self._sim, self._sent = sim, sent  # row * 2 + part (0: the action or an FB's F, 1: its B)

    def __len__(self) -> int:
        return len(self._sent)

    def _make(self) -> list[Transfer]:
        sim = self._sim
        row_rank = sim.program.rank_of_rows().tolist()
        action = _row_actions(sim)
        ends = sim.end.tolist()
        S, M, hop, out = sim.schedule.num_stages, sim.schedule.num_microbatches, sim.hop, []
        for code in self._sent.tolist():
            i, second = divmod(code, 2)
            key = (sim.out2 if second else sim.out1)[i]
            dst = int(sim.dst_rank[second][i])
            way, rest = divmod(key, S * M)
            end = ends[i]
            out.append(Transfer(row_rank[i], dst, action(i).parts()[second], end, end + hop,
                                ("fb"[way], *divmod(rest, M))))
        return out


def _row_actions(sim):
    """row -> the schedule's Action object for it (the same objects `schedule.actions` holds)."""
    actions, offsets, index = sim.schedule.actions, sim.offsets, {}
    rank_of = sim.program.rank_of_rows().tolist()

    def action(i: int) -> Action:
        r = rank_of[i]
        if r not in index:
            index[r] = (actions[r], offsets[sim.index[r]])
        lst, lo = index[r]
        return lst[i - lo]

    return action
