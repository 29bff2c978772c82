"""The mamf family's terminal output: the shapes searched, then the MAMF per dtype, last, where the
eye lands when a run ends.

A search visits thousands of shapes (exhaustive: 3375 per dtype): the points table lists every
point of a small search, and otherwise the fastest few per dtype and the first few points that
did not succeed; `hpcbench report` plots them all."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from hpcbench.benchmarks.mamf.summary import (
    SUMMARY,
    ok_points,
    shape_label,
    summary_rows,
)
from hpcbench.results.schema import STATUS_OK
from hpcbench.api.tables import fmt, new_table

ALL_POINTS_UP_TO = 40  # a search this small is listed in full
TOP_PER_DTYPE = 10
NOT_OK_SHOWN = 10  # a GPU without FP8 skips a whole dtype: thousands of rows with one reason
WHY_FALLBACK = "host clock on shared cores"


def _times(label: str | None) -> str:
    """'2048x2048x13312' as the tables write shapes: 2048×2048×13312."""
    return (label or "").replace("x", "×")


def _summaries(rows: list[dict]) -> list[dict]:
    """The stored summary per dtype (the last one: a resumed run's covers every attempt), else one
    computed from the points at hand (a run cut short before its summary)."""
    stored = {r["dtype"]: r for r in rows if r.get("record") == SUMMARY and r.get("status") == STATUS_OK}
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows if r.get("dtype")))
    computed = {r["dtype"]: r for r in summary_rows(rows, dtypes)}
    return [stored.get(d) or computed[d] for d in dtypes if d in stored or d in computed]


def headline(summaries: list[dict], fallback: bool) -> Text:
    text = Text()
    for s in summaries:
        pct = f" ({s['best_pct_peak']:.1f}% of the {s['peak_tflops']:g} dense peak)" if s.get("best_pct_peak") else ""
        text.append(f"MAMF {s['dtype']}: ", style="bold")
        text.append(f"{s['best_tflops']:.4g} TFLOP/s", style="bold green" if not fallback else "bold yellow")
        text.append(f" at M×N×K {_times(s['best_shape'])}{pct}\n")
    if fallback:
        text.append("(CPU fallback: these are not performance numbers)\n", style="yellow")
    return text


def _summary_table(summaries: list[dict], fallback: bool):
    t = new_table("MAMF: maximum achievable matmul FLOPS", fallback, WHY_FALLBACK,
                  ["dtype", "best M×N×K", "TFLOP/s", "% peak", "best by max M×N×K", "max TFLOP/s",
                   "mean TFLOP/s", "geomean TFLOP/s", "shapes", "warm-up s"], left=("dtype", "best M×N×K",
                                                                                   "best by max M×N×K"))
    for s in summaries:
        t.add_row(s["dtype"], _times(s["best_shape"]), fmt(s["best_tflops"], ".4g"), fmt(s.get("best_pct_peak"), ".1f"),
                  _times(s.get("best_max_shape")), fmt(s.get("best_max_tflops"), ".4g"), fmt(s["mean_tflops"], ".4g"),
                  fmt(s["geomean_tflops"], ".4g"), fmt(s["shapes"]), fmt(s.get("warmup_s"), ".0f"))
    t.caption = ("best: highest TFLOP/s from the median time; by max: from the fastest call; "
                 "means over every ok shape of the dtype")
    t.caption_justify = "left"
    return t


def _shown_points(points: list[dict]) -> tuple[list[dict], int]:
    if len(points) <= ALL_POINTS_UP_TO:
        return points, 0
    shown = [r for r in points if r.get("status") != STATUS_OK][:NOT_OK_SHOWN]
    for dtype in dict.fromkeys(r["dtype"] for r in points):
        ok = sorted((r for r in ok_points(points) if r["dtype"] == dtype), key=lambda r: -float(r["tflops"]))
        shown += ok[:TOP_PER_DTYPE]
    return shown, len(points) - len(shown)


def _ms(r: dict, key: str) -> str:
    return fmt(r[key] * 1e3, ".4g") if r.get(key) is not None else ""


def _points_table(points: list[dict], fallback: bool):
    shown, hidden = _shown_points(points)
    t = new_table("MAMF search: C = A @ B^T", fallback, WHY_FALLBACK,
                  ["dtype", "M×N×K", "status", "median ms", "p10–p90 ms", "CV", "TFLOP/s", "max TFLOP/s", "% peak",
                   "calc_diff"], left=("dtype", "M×N×K", "status"))
    for r in shown:
        ok = r.get("status") == STATUS_OK
        t.add_row(r["dtype"], _times(shape_label(r)), "ok" if ok else f"[red]{r.get('status')}[/]",
                  _ms(r, "median_s") if ok else (r.get("reason") or "")[:60],
                  f"{_ms(r, 'p10_s')}–{_ms(r, 'p90_s')}" if ok else "", fmt(r.get("cv"), ".1%"),
                  fmt(r.get("tflops"), ".4g"), fmt(r.get("tflops_max"), ".4g"), fmt(r.get("pct_peak"), ".1f"),
                  fmt(r.get("calc_diff"), ".2e"))
    if hidden:
        t.caption = (f"the {TOP_PER_DTYPE} fastest shapes per dtype and the first {NOT_OK_SHOWN} points not ok; "
                     f"{hidden} more in the run's rows (hpcbench report plots them all)")
        t.caption_justify = "left"
    return t


def table(rows: list[dict], fallback: bool):
    points = [r for r in rows if r.get("record") in (None, "point")]
    summaries = _summaries(rows)
    parts = [_points_table(points, fallback)] if points else []
    if summaries:
        parts += [_summary_table(summaries, fallback), headline(summaries, fallback)]
    return Group(*parts)
