"""The executor's point-to-point messages between ranks, on torch.distributed.

Which messages a step carries comes from the schedule (`ir.message_plan`, from `ir.output_key`).
Messages between two ranks are matched by their position in the sender's order (the gloo tag).
Two ways to post them (`Channels`, chosen by the family's `pipeline.batch_p2p`):

Unbatched (gloo's default): every receive of the step is posted at its start (a gloo send leaves
only once its receive is posted, so receives posted when needed would add a round trip to every
hop), each send on its own right after the action that produced it; one Work per op.

Batched (NCCL's default): `dist.batch_isend_irecv` groups. What it returns depends on the backend:
gloo gives one Work per op, NCCL (which coalesces the batch) ONE Work for the whole batch. Works
are therefore never matched to ops: a group is one `_Batch`, and every Work it returned is waited
on before any tensor it received is used -- so a group is complete only when its sends are too
(a coalesced NCCL Work, or the compute stream waiting on it, does not tell them apart), and
NCCL runs a rank's groups one after another. Groups that wait on their sends deadlock unless both
ends of every message post it in groups that are ordered alike on every rank; `BatchPlan` gives
them that order. Each message gets one time tau: when its producer ends in the unit-cost
simulation of the schedule (the one `ir` dependency rule). Every rank posts, for each tau, one
group holding all its messages (sends and receives) of that tau, at the boundary between its
actions where the simulation reaches tau -- after the producer, before the consumer. A group at
tau then waits only on groups at earlier taus and on the groups of the other ranks at the same
tau, which are posted once everything before tau is done: no cycle, under gloo's rules or
NCCL's. (The order is the simulation's, not the hardware's: a group may wait a little on one
the unit-cost order put first.)
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from hpcbench.pipeline.ir import Key, Schedule, describe, message_plan, output_key
from hpcbench.pipeline.simulator import Costs, simulate

Op = tuple[str, Key, int, int]  # ("send" | "recv", key, peer rank, tag)


@dataclass
class BatchPlan:
    """One rank's messages: tags, peers, and the groups to post before each of its actions."""

    source: dict[Key, tuple[int, int]]  # a key this rank receives -> (src, tag)
    dest: dict[Key, tuple[int, int]]  # a key this rank sends -> (dst, tag)
    expected: dict[int, list[Key]]  # src -> keys in its send order
    # boundary k (before the rank's action k; len(actions): after its last) -> (tau, ops) in tau order
    groups: dict[int, list[tuple[float, list[Op]]]] = field(default_factory=dict)

    @classmethod
    def of(cls, schedule: Schedule, rank: int, batched: bool) -> BatchPlan:
        tags: dict[Key, tuple[int, int, int]] = {}  # key -> (src, dst, tag)
        for src, messages in message_plan(schedule).items():
            per_dst: dict[int, int] = defaultdict(int)
            for dst, key in messages:
                tags[key] = (src, dst, per_dst[dst])
                per_dst[dst] += 1
        expected: dict[int, list[Key]] = defaultdict(list)
        for key, (src, dst, _) in tags.items():
            if dst == rank:
                expected[src].append(key)
        plan = cls({k: (s, t) for k, (s, d, t) in tags.items() if d == rank},
                   {k: (d, t) for k, (s, d, t) in tags.items() if s == rank}, dict(expected))
        if batched:
            plan.groups = _groups(schedule, rank, tags)
        return plan


def _groups(schedule: Schedule, rank: int, tags: dict[Key, tuple[int, int, int]]) -> dict[int, list[tuple[float, list[Op]]]]:
    """The rank's groups by tau (see the module doc), placed at its action boundaries."""
    timeline = simulate(schedule, Costs())  # positive durations: tau strictly orders every chain
    tau: dict[Key, float] = {}
    for span in timeline.spans:
        for a in span.action.parts():
            key = output_key(schedule, a)
            if key in tags:
                tau[key] = span.end
    ends = sorted(span.end for span in timeline.spans if span.rank == rank)  # the rank's boundaries 1..n
    by_tau: dict[float, list[Op]] = defaultdict(list)
    for key, (src, dst, tag) in tags.items():
        if rank in (src, dst):
            by_tau[tau[key]].append(("send", key, dst, tag) if src == rank else ("recv", key, src, tag))
    groups: dict[int, list[tuple[float, list[Op]]]] = defaultdict(list)
    for t in sorted(by_tau):
        # NCCL matches a pair's messages in the order they are posted: tag order on both ends
        ops = sorted(by_tau[t], key=lambda op: (op[0], op[2], op[3]))
        groups[bisect.bisect_right(ends, t)].append((t, ops))  # the boundary with T_k <= tau < T_k+1
    return dict(groups)


class _Batch:
    """The Works one post returned, however many: complete together; the tensors they send are
    kept alive until then."""

    def __init__(self, works: list, sent: list[torch.Tensor]):
        self.works, self.sent = list(works), sent

    def wait(self) -> None:
        for work in self.works:
            work.wait()
        self.works, self.sent = [], []


class Channels:
    """One step's messages on one rank: `before(k)` posts what boundary k carries, `send` hands
    over an output, `take` returns a received tensor once its group is complete (module doc)."""

    def __init__(self, plan: BatchPlan, use_batch: bool, shape, dtype, device):
        self.plan, self.use_batch = plan, use_batch
        self.shape, self.dtype, self.device = shape, dtype, device
        self.recvs: dict[Key, tuple[_Batch, torch.Tensor]] = {}
        self.outbox: dict[Key, torch.Tensor] = {}
        self.posted: list[_Batch] = []  # every send's batch, waited on (at the latest) by drain
        if not use_batch:
            for src, keys in plan.expected.items():
                for key in keys:
                    buf = self._buffer()
                    self.recvs[key] = (_Batch([dist.irecv(buf, src, tag=plan.source[key][1])], []), buf)

    def _buffer(self) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype, device=self.device)

    def source_of(self, key: Key) -> int:
        return self.plan.source[key][0]

    def send(self, tensor: torch.Tensor, dst: int, key: Key) -> None:
        assert self.plan.dest[key][0] == dst, (key, dst)
        self.outbox[key] = tensor

    def before(self, k: int) -> None:
        """Post what the boundary before the rank's action `k` carries."""
        if not self.use_batch:
            for key, tensor in self.outbox.items():
                dst, tag = self.plan.dest[key]
                self.posted.append(_Batch([dist.isend(tensor, dst, tag=tag)], [tensor]))
            self.outbox.clear()
            return
        for _, group in self.plan.groups.get(k, ()):
            ops, sent, received = [], [], []
            for kind, key, peer, tag in group:
                if kind == "send":
                    sent.append(self.outbox.pop(key))
                    ops.append(dist.P2POp(dist.isend, sent[-1], peer, tag=tag))
                else:
                    received.append((key, self._buffer()))
                    ops.append(dist.P2POp(dist.irecv, received[-1][1], peer, tag=tag))
            batch = _Batch(dist.batch_isend_irecv(ops), sent)  # one Work or one per op: see module doc
            self.posted.append(batch)
            for key, buf in received:
                self.recvs[key] = (batch, buf)

    def take(self, key: Key) -> torch.Tensor:
        if key not in self.recvs:  # a plan that posts a receive after its consumer: a bug here
            raise RuntimeError(f"{describe(key)} needed before its receive was posted")
        batch, buf = self.recvs.pop(key)
        batch.wait()
        return buf

    def drain(self, boundary: int) -> None:
        """After the rank's last action (`boundary` = its number of actions): the last sends out,
        every posted batch complete."""
        self.before(boundary)
        for batch in self.posted:
            batch.wait()
        self.posted.clear()
        if self.recvs or self.outbox:
            raise RuntimeError(f"received but never used: {sorted(self.recvs)[:4]}; "
                               f"never sent: {sorted(self.outbox)[:4]}")
