"""The executor's point-to-point messages between ranks, on torch.distributed.

Which messages a step carries comes from the schedule (`ir.message_plan`, from `ir.output_key`).
Messages between two ranks are matched by their position in the sender's order (the gloo tag),
and the receiver posts receives in that order, which is what NCCL's in-order matching needs.
Sends are posted in the same batch as the next receives: on NCCL, sends and receives between two
ranks that are issued separately can deadlock, so they go out together, as in DualPipe's own
implementation.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

from hpcbench.pipeline.ir import Key, Schedule, message_plan


class Channels:
    """Receives in each sender's order; sends batched with the next receives (see module doc)."""

    def __init__(self, schedule: Schedule, rank: int, shape, dtype, device, use_batch: bool):
        self.rank, self.shape, self.dtype, self.device, self.use_batch = rank, shape, dtype, device, use_batch
        self.expected: dict[int, list[Key]] = defaultdict(list)  # src -> keys in its send order
        self.source: dict[Key, tuple[int, int]] = {}  # key -> (src, tag)
        self.tag_to: dict[tuple[int, Key], int] = {}  # (dst, key) -> tag, for this rank's sends
        for src, messages in message_plan(schedule).items():
            per_dst: dict[int, int] = defaultdict(int)
            for dst, key in messages:
                tag = per_dst[dst]
                per_dst[dst] += 1
                if dst == rank:
                    self.expected[src].append(key)
                    self.source[key] = (src, tag)
                if src == rank:
                    self.tag_to[(dst, key)] = tag
        self.posted = defaultdict(int)
        self.recvs: dict[Key, tuple[object, torch.Tensor]] = {}
        self.pending_sends: list[tuple[torch.Tensor, int, int]] = []
        self.send_works: list[tuple[object, torch.Tensor]] = []

    def send(self, tensor: torch.Tensor, dst: int, key: Key) -> None:
        self.pending_sends.append((tensor, dst, self.tag_to[(dst, key)]))

    def post_all(self) -> None:
        """Post every receive of the step at once (gloo): a gloo send leaves only once its receive
        is posted, so receives posted when needed would add a round trip to every hop. Not for
        NCCL, whose receives would hold up the sends queued behind them on the same stream."""
        self.post([keys[-1] for keys in self.expected.values() if keys])

    def source_of(self, key: Key) -> int:
        return self.source[key][0]

    def post(self, needed: list[Key]) -> None:
        """Post the pending sends and the receives up to each needed message, in one batch."""
        recv_ops: list[tuple[Key, torch.Tensor, int, int]] = []
        for key in needed:
            src, tag = self.source[key]
            while self.posted[src] <= tag:
                k = self.expected[src][self.posted[src]]
                recv_ops.append((k, torch.empty(self.shape, dtype=self.dtype, device=self.device), src,
                                 self.posted[src]))
                self.posted[src] += 1
        if not recv_ops and not self.pending_sends:
            return
        sends, self.pending_sends = self.pending_sends, []
        if self.use_batch:
            ops = [dist.P2POp(dist.isend, t, dst, tag=tag) for t, dst, tag in sends]
            ops += [dist.P2POp(dist.irecv, buf, src, tag=tag) for _, buf, src, tag in recv_ops]
            works = dist.batch_isend_irecv(ops)
        else:
            works = [dist.isend(t, dst, tag=tag) for t, dst, tag in sends]
            works += [dist.irecv(buf, src, tag=tag) for _, buf, src, tag in recv_ops]
        self.send_works += [(w, t) for w, (t, _, _) in zip(works, sends)]
        for w, (key, buf, _, _) in zip(works[len(sends):], recv_ops):
            self.recvs[key] = (w, buf)

    def take(self, key: Key) -> torch.Tensor:
        work, buf = self.recvs.pop(key)
        work.wait()
        return buf

    def drain(self) -> None:
        self.post([])
        for work, _ in self.send_works:
            work.wait()
        self.send_works.clear()
        if self.recvs:
            raise RuntimeError(f"received but never used: {sorted(self.recvs)[:4]}")
