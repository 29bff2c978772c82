"""The collectives family's terminal tables: nccl-tests' layout, the alpha-beta fits, the projections."""

from __future__ import annotations

import math

import numpy as np

from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.measure.stragglers import with_verdict
from hpcbench.api.tables import fmt, new_table

SIDES = (("out_of_place", "out-of-place"), ("in_place", "in-place"))  # nccl-tests' column order
_SIDE_COLUMNS = ("time us", "algbw GB/s", "busbw GB/s", "#wrong")


def _wrong(r: dict) -> int:
    w = r.get("wrong")
    return 0 if w is None or math.isnan(w) else int(w)  # None, or NaN when read back by pandas


def _side_cells(r: dict | None, notes: list[str]) -> list[str]:
    """One placement's four cells of a size's line (notes collects why it was skipped, and remarks)."""
    if r is None:
        return ["", "", "", "N/A"]
    if r["status"] == STATUS_SKIPPED:
        notes.append(r.get("reason") or "")
        return ["", "", "", "skip"]
    if r.get("time_vs_backend") is not None:
        notes.append(f"{r['time_vs_backend']:.2f}× the backend's all_reduce")
    wrong = f"[red]{_wrong(r)}[/]" if r["status"] == STATUS_FAILED else fmt(r.get("wrong"))
    return [fmt(r.get("time_us"), ".2f"), fmt(r.get("algbw_GBps"), ".3f"), fmt(r.get("busbw_GBps"), ".3f"), wrong]


def _collective_table(name: str, mine: list[dict], fallback: bool):
    """One collective: a line per size, out-of-place and in-place side by side."""
    first = mine[0]
    columns = ["size", "count", "type", "redop", "root",
               *(f"{label}\n{c}" if c == "time us" else c for _, label in SIDES for c in _SIDE_COLUMNS), "note"]
    t = new_table(f"{name}  world {fmt(first['world_size'])} · {first['backend']}", fallback, "gloo on shared cores",
                  columns, left=("type", "redop", "root", "note"))
    by_size: dict[int | None, dict[str, dict]] = {}
    for r in mine:
        by_size.setdefault(r.get("size_bytes"), {})[r["placement"]] = r
    for size, sides in by_size.items():
        any_row = next(iter(sides.values()))
        cells = [fmt(size), fmt(any_row.get("count")), any_row["type"], any_row.get("redop") or "",
                 fmt(any_row.get("root"))]
        notes: list[str] = []
        for placement, _ in SIDES:
            cells += _side_cells(sides.get(placement), notes)
        t.add_row(*cells, "; ".join(dict.fromkeys(n for n in notes if n))[:70])
    ok = [r for r in mine if r["status"] == STATUS_OK]
    wrong = sum(_wrong(r) for r in mine)
    avg = np.mean([r["busbw_GBps"] for r in ok]) if ok else float("nan")
    t.caption = (f"# Out of bounds values : {wrong} {'OK' if not wrong else 'FAILED'}    "
                 f"# Avg bus bandwidth : {avg:.3f} GB/s (mean over sizes and placements, as nccl-tests)")
    t.caption_justify = "left"
    return t


def _fit_table(fits: list[dict]):
    t = new_table("alpha-beta model  t(n, S) = alpha·L(n) + factor(n)·S / B   (ring L and factor)", False, "",
                  ["collective", "fitted at n", "alpha us/step", "B GB/s", "sizes", "max residual", "note"],
                  left=("collective", "note"))
    for r in fits:
        t.add_row(r["collective"], fmt(r.get("world_size")), fmt(r.get("alpha_us"), ".3f"),
                  fmt(r.get("bus_bandwidth_GBps"), ".3f"), fmt(r.get("fit_points")),
                  fmt(r.get("max_rel_residual"), ".1%"), (r.get("reason") or "")[:70])
    return t


def _projection_table(projections: list[dict]):
    t = new_table("[bold]PROJECTION[/] from the fitted model (assumes ring algorithms and the same links)", False, "",
                  ["collective", "world", "size", "time us", "algbw GB/s", "busbw GB/s"], left=("collective",))
    for r in projections:
        t.add_row(r["collective"], fmt(r["world_size"]), fmt(r["size_bytes"]), fmt(r["time_us"], ".2f"),
                  fmt(r.get("algbw_GBps"), ".3f"), fmt(r.get("busbw_GBps"), ".3f"))
    return t


def table(rows: list[dict], fallback: bool):
    """nccl-tests' layout: one table per collective, out-of-place and in-place side by side; then the
    alpha-beta fits and the projections, if any."""
    from rich.console import Group

    measured = [r for r in rows if r.get("record") == "measurement"]
    parts = [_collective_table(name, [r for r in measured if r["collective"] == name], fallback)
             for name in dict.fromkeys(r["collective"] for r in measured)]
    fits = [r for r in rows if r.get("record") == "alpha_beta_fit"]
    if fits:
        parts.append(_fit_table(fits))
    projections = [r for r in rows if r.get("record") == "projection"]
    if projections:
        parts.append(_projection_table(projections))
    return with_verdict(Group(*parts), measured)
