"""Communication overlapped with computation on one rank: the communication on a side CUDA stream
while the computation runs on the current one, each side timed by its own pair of CUDA events.
The families that measure overlap (VISION.md §3: T_comp|ovl, T_comm|ovl) share it; on the CPU
each runs its communication on a thread of its own and records host times in the same shape."""

from __future__ import annotations

import torch


def overlapped_on_side_stream(side: "torch.cuda.Stream", comm, compute) -> list:
    """Enqueue `comm` on `side` and `compute` on the current stream, side by side; returns the
    four events (communication start/end, computation start/end), read later by `durations`."""
    main = torch.cuda.current_stream()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    side.wait_stream(main)
    with torch.cuda.stream(side):
        ev[0].record()
        comm()
        ev[1].record()
    ev[2].record()
    compute()
    ev[3].record()
    main.wait_stream(side)
    return ev


def durations(records: list, cuda: bool) -> tuple[list[float], list[float]]:
    """(communication, computation) seconds per record: CUDA event quadruples (synchronised here)
    or host-timed (communication_s, computation_s) pairs."""
    if cuda:
        torch.cuda.synchronize()
        return [e[0].elapsed_time(e[1]) / 1e3 for e in records], [e[2].elapsed_time(e[3]) / 1e3 for e in records]
    return [r[0] for r in records], [r[1] for r in records]
