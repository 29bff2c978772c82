"""Value checks for a family's `validate`: each refusal names the key, the value it refused and what
is accepted (`gemm.tol_bf16=-1.0: use a number > 0`), so the one line says what to change."""

from __future__ import annotations

from hpcbench.api.errors import UserError


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def at_least(section: str, cfg, notes: dict[str, str] | None = None, **minimums) -> None:
    """Every named key of `cfg` is a number >= its minimum (`iters=1, warmup_iters=0`);
    `notes` adds what a value means (`{"width": "0 = auto"}`)."""
    for key, low in minimums.items():
        value = getattr(cfg, key)
        if not (_number(value) and value >= low):
            note = f" ({notes[key]})" if notes and key in notes else ""
            raise UserError(f"{section}.{key}={value!r}: use a number >= {low}{note}")


def positive(section: str, cfg, *keys: str) -> None:
    """Every named key of `cfg` is a number > 0."""
    for key in keys:
        value = getattr(cfg, key)
        if not (_number(value) and value > 0):
            raise UserError(f"{section}.{key}={value!r}: use a number > 0")


def each_positive(key: str, values) -> None:
    """Every entry of a list is a number > 0."""
    bad = [v for v in values if not (_number(v) and v > 0)]
    if bad:
        raise UserError(f"{key}={list(values)!r}: {bad[0]!r} is not a number > 0 (every entry must be)")
