"""The terminal table: one line per point, its phases side by side (rows are stored per phase)."""

from __future__ import annotations

from hpcbench.benchmarks.moe_alltoall.settings import label_of
from hpcbench.results.schema import STATUS_OK
from hpcbench.measure.stragglers import with_verdict
from hpcbench.api.tables import fmt, fmt_share, new_table

COLUMNS = ["impl", "layout", "payload", "tokens x hidden", "E/k", "routing", "imbal", "counts us", "disp us",
           "disp GB/s", "max GB/s", "comb us", "comb GB/s", "x unif", "T_ovl us", "hidden", "status"]
_LEFT = ("impl", "layout", "payload", "routing", "status")


def _us(row: dict | None) -> str:
    return fmt(row.get("median_s") * 1e6, ".1f") if row and row.get("median_s") is not None else ""


def _status(phases: dict[str, dict], reasons: list[str]) -> str:
    """`ok`, or the status (and the phase, when the others differ) with a footnote to its reason."""
    bad = [(p, r) for p, r in phases.items() if r.get("status") != STATUS_OK]
    if not bad:
        return STATUS_OK
    phase, r = bad[0]
    reason = r.get("reason") or "no reason recorded"
    if reason not in reasons:
        reasons.append(reason)
    where = "" if len(bad) == len(phases) and len({x["status"] for _, x in bad}) == 1 else f" ({phase})"
    return f"{r['status']}{where} [{reasons.index(reason) + 1}]"


def _routing_cell(r: dict) -> str:
    kind = r["routing"]
    if kind == "skewed":
        return f"skewed r={float(r['imbalance']):g}"
    if kind == "node_limited":
        return f"nodes {fmt(r.get('groups_per_token'))}/{fmt(r.get('node_groups'))}"
    return kind


def _line(phases: dict[str, dict], reasons: list[str]) -> list[str]:
    r = next(iter(phases.values()))
    c, d, b, o = (phases.get(p) or {} for p in ("counts", "dispatch", "combine", "overlapped"))
    layout = phases.get("layout")  # DeepEP: its local layout kernel, no count exchange
    counts_cell = _us(c) if c or not layout else f"{_us(layout)} layout"
    return [r["impl"], r["layout"], r["dispatch_dtype"], f"{fmt(r['tokens_per_rank'])}x{fmt(r['hidden'])}",
            f"{fmt(r['num_experts'])}/{fmt(r['top_k'])}", _routing_cell(r), fmt(r.get("imbalance_measured"), ".2f"),
            counts_cell, _us(d), fmt(d.get("logical_GBps"), ".3f"), fmt(d.get("busiest_GBps"), ".3f"), _us(b),
            fmt(b.get("logical_GBps"), ".3f"), fmt(d.get("time_vs_uniform"), ".2f"), fmt(o.get("t_ovl_us"), ".1f"),
            fmt_share(o.get("hidden_fraction")), _status(phases, reasons)]


def table(rows: list[dict], fallback: bool):
    by_point: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_point.setdefault(label_of(r), {})[r["phase"]] = r
    first = rows[0]
    t = new_table(f"MoE dispatch / combine  world {fmt(first.get('world_size'))} · {first.get('backend')} "
                  "(times: median of the slowest rank)", fallback, "gloo ranks share the cores", COLUMNS, left=_LEFT)
    reasons: list[str] = []
    for phases in by_point.values():
        t.add_row(*_line(phases, reasons))
    notes = sorted({r["note"] for r in rows if r.get("note")})
    wrong = sum(int(r.get("wrong") or 0) for r in rows)
    t.caption = "\n".join([
        ("GB/s: DeepEP's logical bandwidth (dispatch: rows received x payload, FP8 incl. scales; combine: rows "
        "sent back x 2H; local rows included), mean over ranks; max: the busiest rank's max(sent, received) "
        "wire bytes / time (nccl-tests alltoallv); x unif: dispatch time / an equal-split all_to_all_single of the "
        "same bytes; imbal: busiest rank's tokens / mean of the others; hidden: share of T_comm hidden behind "
        "the expert GEMMs (dispatch + combine of one micro-batch, GEMMs of another)."),
        f"# wrong rows or entries (exact checks): {wrong} {'OK' if not wrong else 'FAILED'}", *notes,
        *(f"[{i}] {reason}" for i, reason in enumerate(reasons, 1))])
    t.caption_justify = "left"
    return with_verdict(t, rows)
