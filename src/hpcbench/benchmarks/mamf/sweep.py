"""Which shapes a MAMF search visits, and in what order (mamf-finder's conventions).

Each of M, N and K is either an explicit list of sizes or a range `[start, stop, step]` read like
`np.arange` (stop exclusive), except that a start of 0 means "start at step": a size of 0 is no
matmul, and mamf-finder's ranges are written `0 20480 256` to mean 256, 512, ..., 20224.
The shapes are visited in nested loops, M outermost, then N, then K (mamf-finder's order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcbench.api.errors import UserError

DIMS = ("m", "n", "k")
Shape = tuple[int, int, int]


@dataclass
class Dims:
    """The sizes of one search, per dimension either `<d>` (a list) or `<d>_range` ([start, stop, step]).
    An empty key is "not given": the preset's entry for that dimension applies."""

    m: list[int] = field(default_factory=list)
    m_range: list[int] = field(default_factory=list)
    n: list[int] = field(default_factory=list)
    n_range: list[int] = field(default_factory=list)
    k: list[int] = field(default_factory=list)
    k_range: list[int] = field(default_factory=list)


def arange(spec: list[int], where: str) -> list[int]:
    """The sizes of a range `[start, stop, step]`: np.arange(start or step, stop, step)."""
    if len(spec) != 3 or any(isinstance(v, bool) or not isinstance(v, int) for v in spec):
        raise UserError(f"{where}={list(spec)}: a range is [start, stop, step] (three integers)")
    start, stop, step = spec
    if step <= 0:
        raise UserError(f"{where}={list(spec)}: step must be positive")
    if start < 0:
        raise UserError(f"{where}={list(spec)}: start must be >= 0 (0 means start at step)")
    if start >= stop:
        raise UserError(f"{where}={list(spec)}: empty range (start {start} >= stop {stop})")
    first = start or step
    if first >= stop:
        raise UserError(f"{where}={list(spec)}: no sizes (start 0 means start at step {step}, "
                        f"which is not below stop {stop})")
    return list(range(first, stop, step))


def sizes_of(values: list[int], range_: list[int], key: str) -> list[int] | None:
    """One dimension's sizes from its list `key` or its range `key`_range; None when neither is given."""
    if values and range_:
        raise UserError(f"{key}: give either {key} or {key}_range, not both")
    if range_:
        return arange(list(range_), f"{key}_range")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise UserError(f"{key}={list(values)}: sizes must be positive integers")
    repeated = sorted({v for v in values if list(values).count(v) > 1})
    if repeated:  # the same point twice: resume and compare identify a point by its sizes
        raise UserError(f"{key}={list(values)}: {repeated[0]} appears more than once")
    return list(values) or None


def resolve(given: Dims, preset: Dims, given_where: str, preset_where: str) -> tuple[list[int], list[int], list[int]]:
    """(Ms, Ns, Ks): per dimension the sizes given, else the preset's."""
    out = []
    for d in DIMS:
        sizes = sizes_of(getattr(given, d), getattr(given, f"{d}_range"), f"{given_where}.{d}")
        if sizes is None:
            sizes = sizes_of(getattr(preset, d), getattr(preset, f"{d}_range"), f"{preset_where}.{d}")
        if sizes is None:
            raise UserError(f"{preset_where}: no {d} sizes (give {given_where}.{d} or {given_where}.{d}_range)")
        out.append(sizes)
    return out[0], out[1], out[2]


def search_order(ms: list[int], ns: list[int], ks: list[int]) -> list[Shape]:
    """Every (M, N, K) in mamf-finder's nested order: M outermost, K innermost."""
    return [(m, n, k) for m in ms for n in ns for k in ks]
