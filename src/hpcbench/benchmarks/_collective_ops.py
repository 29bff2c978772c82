"""The collectives hpcbench measures: their buffers, the call, an exactly predictable result, busbw.

Inputs are small integers stored in the benchmark's dtype, bounded so that every partial sum or
product a reduction can form is exactly representable: the expected output is then exact whatever
order the backend reduces in (ring, tree, NVLS), and a check compares bit for bit (as nccl-tests'
verifiable inputs do). Outputs are filled with a sentinel before a check, so a call that writes
nothing cannot pass.

Sizes follow nccl-tests: for all_reduce/broadcast the size is the per-rank buffer; for all_gather,
reduce_scatter and all_to_all it is the whole buffer, split into world-size chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from hpcbench.runtime.distributed import World, all_gather_flat, reduce_scatter_flat

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16, "int32": torch.int32, "int64": torch.int64, "int8": torch.int8}
REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN,
              "max": dist.ReduceOp.MAX, "avg": dist.ReduceOp.AVG}
# largest integer magnitude each dtype holds exactly (every integer up to it is representable)
_EXACT = {torch.float16: 2048, torch.bfloat16: 256, torch.float32: 2**24, torch.float64: 2**53,
          torch.int8: 126, torch.int32: 2**31 - 2, torch.int64: 2**62}
_MAX_AMPLITUDE = 8


class NotApplicable(Exception):
    """This point cannot run as asked (size, dtype, world size): a recorded skip with the reason."""


@dataclass(frozen=True)
class Collective:
    name: str
    placements: tuple[str, ...]  # torch's all_reduce/broadcast only exist in place
    split: bool  # the size is the whole buffer, cut in world-size chunks
    reduces: bool
    busbw_factor: Callable[[int], float]  # nccl-tests' factor: busbw = algbw * factor(n)
    ring_steps: Callable[[int], int]  # latency terms of a ring algorithm, for the alpha-beta model


COLLECTIVES = {c.name: c for c in (
    Collective("all_reduce", ("in_place",), False, True, lambda n: 2 * (n - 1) / n, lambda n: 2 * (n - 1)),
    Collective("all_gather", ("out_of_place", "in_place"), True, False, lambda n: (n - 1) / n, lambda n: n - 1),
    Collective("reduce_scatter", ("out_of_place", "in_place"), True, True, lambda n: (n - 1) / n, lambda n: n - 1),
    Collective("all_to_all", ("out_of_place",), True, False, lambda n: (n - 1) / n, lambda n: n - 1),
    Collective("broadcast", ("in_place",), False, False, lambda n: 1.0, lambda n: n - 1),
    # device -> host copy, reduction across ranks on the CPU (gloo), host -> device copy
    Collective("staged_all_reduce", ("in_place",), False, True, lambda n: 2 * (n - 1) / n, lambda n: 2 * (n - 1)),
)}


def amplitude(op: str, dtype: torch.dtype, n: int) -> int:
    """Largest input magnitude whose every partial reduction over n ranks stays exact in dtype."""
    limit = _EXACT[dtype]
    if op == "avg":  # inputs are multiples of n so that the average is an integer
        return min(_MAX_AMPLITUDE, limit // (n * n))
    if op in ("sum",):
        return min(_MAX_AMPLITUDE, limit // n)
    return min(_MAX_AMPLITUDE, limit)


def values(rank: int, start: int, numel: int, op: str, n: int, amp: int, device) -> torch.Tensor:
    """Rank `rank`'s crafted input for elements [start, start+numel) as int64."""
    i = torch.arange(start, start + numel, device=device, dtype=torch.int64)
    if op == "prod":  # +-1 everywhere, one rank contributes a 2: every partial product is exact
        sign = 1 - 2 * ((i + rank) % 3 == 0).to(torch.int64)
        return sign * (1 + (i % n == rank).to(torch.int64))
    # multipliers coprime to every modulus 2*amp+1 (3..17): with 7 and 13 a modulus of 7 made each
    # rank's input constant along its buffer and one of 13 made every rank's input the same, hiding
    # misplaced elements and chunks taken from the wrong rank. 23 (not 19) for the rank: no rank's
    # own chunk is already its min/max/sum reduction at 2-8 ranks, so an in-place reduce_scatter
    # that writes nothing fails the check on every rank
    v = (i * 8 + rank * 23 + 3) % (2 * amp + 1) - amp
    return v * n if op == "avg" else v


def reduced(op: str, start: int, numel: int, n: int, amp: int, device) -> torch.Tensor:
    acc = values(0, start, numel, op, n, amp, device)
    for q in range(1, n):
        v = values(q, start, numel, op, n, amp, device)
        acc = {"sum": torch.add, "avg": torch.add, "prod": torch.mul,
               "min": torch.minimum, "max": torch.maximum}[op](acc, v)
    return acc // n if op == "avg" else acc


@dataclass(frozen=True)
class Point:
    collective: str
    size_bytes: int
    dtype: str
    op: str
    placement: str
    root: int = 0


class Prepared:
    """One rank's buffers for one point; `call` runs the collective once."""

    def __init__(self, point: Point, world: World, group=None):
        self.point, self.world, self.group = point, world, group  # group None: the default group
        self.coll = COLLECTIVES[point.collective]
        self.dtype = DTYPES[point.dtype]
        self.device = world.device.torch_device
        n, elt = world.size, torch.empty((), dtype=self.dtype).element_size()
        self.op = point.op if self.coll.reduces else "sum"
        if point.size_bytes % elt:
            raise NotApplicable(f"{point.size_bytes} B is not a whole number of {point.dtype} elements")
        total = point.size_bytes // elt
        if self.coll.split and total % n:
            raise NotApplicable(f"{point.size_bytes} B does not split into {n} equal chunks of {point.dtype} "
                                f"(use sizes that are multiples of {n * elt} B)")
        self.amp = amplitude(self.op, self.dtype, n)
        if self.amp < 1:
            raise NotApplicable(f"{point.dtype} cannot hold an exactly checkable {self.op} over {n} ranks")
        if point.root >= n:
            raise NotApplicable(f"root {point.root} is not a rank of a world of {n}")
        self.chunk = total // n if self.coll.split else total
        self.count = self.chunk  # nccl-tests' count column: per-rank elements
        self._build(total)

    # ---- buffers ----
    def _empty(self, numel: int) -> torch.Tensor:
        return torch.empty(numel, dtype=self.dtype, device=self.device)

    def _build(self, total: int) -> None:
        r, c, name = self.world.rank, self.chunk, self.coll.name
        in_place = self.point.placement == "in_place"
        if name in ("all_reduce", "broadcast", "staged_all_reduce"):
            self.inp = self.out = self._empty(total)
        elif name == "all_gather":
            self.out = self._empty(total)
            self.inp = self.out[r * c:(r + 1) * c] if in_place else self._empty(c)
        elif name == "reduce_scatter":
            self.inp = self._empty(total)
            self.out = self.inp[r * c:(r + 1) * c] if in_place else self._empty(c)
        elif name == "all_to_all":
            self.inp, self.out = self._empty(total), self._empty(total)
        if name == "staged_all_reduce":
            self.host = torch.empty(total, dtype=self.dtype, pin_memory=self.world.device.kind == "cuda")

    def reset(self) -> None:
        """Crafted inputs in; a sentinel in every output element the collective must overwrite."""
        n, r, c, name = self.world.size, self.world.rank, self.chunk, self.coll.name
        separate_out = name in ("all_gather", "all_to_all") or (
            name == "reduce_scatter" and self.point.placement == "out_of_place")
        if separate_out:
            self.out.fill_(_sentinel(self.dtype))
        if name == "all_gather":  # in place, the input is this rank's chunk of the output
            self.inp.copy_(values(r, r * c, c, self.op, n, self.amp, self.device))
        elif name in ("reduce_scatter", "all_to_all"):
            self.inp.copy_(values(r, 0, n * c, self.op, n, self.amp, self.device))
        else:
            self.inp.copy_(values(r, 0, c, self.op, n, self.amp, self.device))

    def expected(self) -> torch.Tensor:
        n, r, c, name, dev = self.world.size, self.world.rank, self.chunk, self.coll.name, self.device
        if name in ("all_reduce", "staged_all_reduce"):
            return reduced(self.op, 0, c, n, self.amp, dev)
        if name == "broadcast":
            return values(self.point.root, 0, c, self.op, n, self.amp, dev)
        if name == "all_gather":
            return torch.cat([values(q, q * c, c, self.op, n, self.amp, dev) for q in range(n)])
        if name == "reduce_scatter":
            return reduced(self.op, r * c, c, n, self.amp, dev)
        return torch.cat([values(q, r * c, c, self.op, n, self.amp, dev) for q in range(n)])  # all_to_all

    def wrong(self) -> int:
        """Output elements on this rank that differ from the exact answer."""
        return int((self.out != self.expected().to(self.dtype)).sum().item())

    # ---- the call ----
    def call(self, async_op: bool = False):
        name, op = self.coll.name, REDUCE_OPS[self.op]
        group = self.group
        if name == "all_reduce":
            return dist.all_reduce(self.inp, op=op, group=group, async_op=async_op)
        if name == "broadcast":
            return dist.broadcast(self.inp, src=self.point.root, group=group, async_op=async_op)
        if name == "all_gather":
            return all_gather_flat(self.out, self.inp, group=group, async_op=async_op)
        if name == "reduce_scatter":
            return reduce_scatter_flat(self.out, self.inp, op=op, group=group, async_op=async_op)
        if name == "all_to_all":
            return dist.all_to_all_single(self.out, self.inp, group=group, async_op=async_op)
        # staged: the host reduction is synchronous, so there is nothing to overlap within one call
        self.host.copy_(self.inp)
        dist.all_reduce(self.host, op=op, group=self.world.cpu_group)
        self.inp.copy_(self.host)
        return None


def _sentinel(dtype: torch.dtype):
    return float("nan") if dtype.is_floating_point else torch.iinfo(dtype).max


def run_calls(prepared: Prepared, calls: int, blocking: bool) -> None:
    """`calls` back-to-back collectives: each completed before the next (blocking), or all in flight."""
    if blocking:
        for _ in range(calls):
            prepared.call(async_op=False)
        return
    works = [prepared.call(async_op=True) for _ in range(calls)]
    for work in works:
        if work is not None:
            work.wait()
