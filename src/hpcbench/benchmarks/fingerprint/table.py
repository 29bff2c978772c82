"""The fingerprint's one summary table: each metric, its anchor, and the verdict."""

from __future__ import annotations

import math

from hpcbench.benchmarks.fingerprint.verdict import ABOVE, BELOW, FAILED, OK
from hpcbench.api.tables import SLOWER_THAN_APART, fmt, new_table

_STYLE = {OK: "[green]ok[/]", BELOW: "[red]below anchor[/]", ABOVE: "[red]above anchor[/]",
          FAILED: "[red]failed[/]"}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))  # NaN: a gap in a DataFrame read back


def _value(r: dict, key: str) -> str:
    v = r.get(key)
    if _missing(v):
        return ""
    if r.get("unit") != "fraction":
        return fmt(v, ".4g")
    return fmt(100 * v, ".1f") + " %" + (f" ({SLOWER_THAN_APART})" if v < 0 and r.get("higher_is_better") else "")


def _unit(r: dict) -> str:
    return "" if r.get("unit") == "fraction" else str(r.get("unit") or "")


def _anchor(r: dict) -> str:
    if _missing(r.get("anchor_value")):
        return ""
    text = _value({**r, "unit": r.get("anchor_unit") or r.get("unit")}, "anchor_value")
    return f"{text} ({r.get('anchor_hardware') or '?'})"


def _verdict(r: dict) -> str:
    v = r.get("verdict") or ""
    if r.get("status") not in ("ok", None) and v != FAILED:
        return f"[dim]{v}[/]"
    return _STYLE.get(v, v)


def _where(r: dict) -> str:
    if r.get("status") != "ok":
        return str(r.get("reason") or "")[:90]
    parts = [str(r.get("source") or "")]
    if r.get("anchor_source"):
        parts.append(f"anchor: {r['anchor_source']}")
    elif r.get("anchor_note") and not r.get("fallback"):  # on the fallback, the banner says it once
        parts.append(str(r["anchor_note"]))
    return "; ".join(p for p in parts if p)


def table(rows: list[dict], fallback: bool):
    first = rows[0]
    tol = first.get("tolerance_pct")
    t = new_table(f"Node fingerprint: {first.get('device')} (tolerance {fmt(tol, 'g')} % of anchor)", fallback,
                  "numbers from the CPU fallback are never compared with GPU anchors",
                  ["metric", "value", "unit", "% peak", "anchor", "% anchor", "verdict", "source / why not"],
                  left=("metric", "unit", "verdict", "source / why not"))
    for r in rows:
        t.add_row(str(r.get("label") or r.get("metric")), _value(r, "value"), _unit(r), fmt(r.get("pct_peak"), ".1f"),
                  _anchor(r), fmt(r.get("pct_of_anchor"), ".1f"), _verdict(r), _where(r))
    return t
