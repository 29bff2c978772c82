"""Message sizes the nccl-tests way: binary suffixes in, binary units out (bandwidth stays decimal GB/s)."""

from __future__ import annotations

import re

from hpcbench.api.errors import UserError

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


def parse_bytes(value, key: str = "size") -> int:
    """'32M' -> 33554432 (K/M/G/T are powers of 1024, as in nccl-tests' -b/-e/-i)."""
    if isinstance(value, bool):
        raise UserError(f"{key}={value!r} is not a size")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise UserError(f"{key}={value!r} is not a size (use bytes or a K/M/G suffix, e.g. 8, 64K, 32M)")
        n = int(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if n <= 0:
        raise UserError(f"{key}={value!r}: use a size > 0 (bytes or a K/M/G suffix, e.g. 8, 64K, 32M)")
    return n


def size_sweep(min_bytes, max_bytes, step_factor: float = 2.0, step_bytes=0, section: str = "") -> list[int]:
    """nccl-tests' -b/-e/-f/-i: from min to max (inclusive) by a factor, or by a step when step_bytes > 0.
    `section` prefixes the keys named in errors (`collectives.`)."""
    at = f"{section}." if section else ""
    lo, hi = parse_bytes(min_bytes, f"{at}min_bytes"), parse_bytes(max_bytes, f"{at}max_bytes")
    if hi < lo:
        raise UserError(f"{at}max_bytes={max_bytes!r}: smaller than {at}min_bytes={min_bytes!r} (use max >= min)")
    step = parse_bytes(step_bytes, f"{at}step_bytes") if str(step_bytes) not in ("0", "") else 0
    if not step and not step_factor > 1:
        raise UserError(f"{at}step_factor={step_factor!r}: use a factor > 1 (or a {at}step_bytes > 0)")
    sizes, size = [], lo
    while size <= hi:
        sizes.append(size)
        size = size + step if step else max(size + 1, int(size * step_factor))
        if len(sizes) > 10_000:
            raise UserError("the size sweep has more than 10000 points; raise step_factor or step_bytes")
    return sizes


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"
