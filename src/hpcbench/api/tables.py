"""Terminal tables: number formatting and the CPU-fallback banner, shared by every family."""

from __future__ import annotations

import math
import numbers

from rich.table import Table


def fmt(value, spec: str = "") -> str:
    """`value` formatted with `spec`; blank for a missing value (None, NaN). Integral numbers read
    back as floats (pandas fills gaps with NaN) print as integers when no spec is given."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not spec:
        return str(as_int(value))
    return format(value, spec)


SLOWER_THAN_APART = "slower than the sum"


def fmt_share(value, spec: str = ".0%") -> str:
    """A share that overlap hid (communication hidden behind compute, F&B overlap) as a percentage.
    Below zero the overlapped run took longer than its parts one after the other (on the CPU
    fallback: threads sharing the cores), and the cell says so instead of a bare negative number."""
    text = fmt(value, spec)
    return f"{text} ({SLOWER_THAN_APART})" if text and value < 0 else text


def as_int(value):
    """An integral float (4.0, as pandas returns integers next to gaps) as an int; else unchanged."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int)) and float(value).is_integer():
        return int(value)
    return value


def fallback_banner(why: str) -> str:
    """The title suffix every family shows on the CPU fallback."""
    return f"  [yellow](CPU fallback: {why}; times are not performance numbers)[/]"


def new_table(title: str, fallback: bool, why: str, columns: list[str], left: tuple[str, ...] = ()) -> Table:
    """A results table: title (plus the fallback banner), columns right-aligned except `left`."""
    t = Table(title=title + (fallback_banner(why) if fallback else ""), title_justify="left")
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right")
    return t


def status_cell(row: dict, width: int = 50) -> str:
    """`ok`, or the status and the start of its reason."""
    status = row.get("status")
    return status if status == "ok" else f"{status}: {(row.get('reason') or '')[:width]}"


class ReasonNotes:
    """Failed and skipped rows' reasons as numbered notes under a table (each reason once), so
    that no reason widens a column of every row."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, row: dict) -> str:
        reason = row.get("reason") or "no reason recorded"
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"

    def attach(self, table: Table) -> Table:
        from rich.markup import escape

        if self.reasons:
            table.caption = "\n".join(f"[{i}] {escape(r)}" for i, r in enumerate(self.reasons, 1))
            table.caption_justify = "left"
        return table


def console():
    """stdout console; when piped, wide enough that tables are not squeezed to 80 columns."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=200)
