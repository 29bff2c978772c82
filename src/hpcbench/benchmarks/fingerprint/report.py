"""The fingerprint's section of `hpcbench report`: one bar per (metric, run), its anchor beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap, num
from hpcbench.analysis.plotting import Plot, color, finish, is_fallback, runs_of
from hpcbench.api.family import ReportSpec

LINES_PNG = "fingerprint_lines.png"


def _label(row) -> str:
    unit = row.get("unit")
    return f"{row['metric']} [{unit}]" if isinstance(unit, str) and unit else str(row["metric"])


def fingerprint_lines(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """A panel per metric (units differ), a bar per run; the matching anchor as a dashed line."""
    d = num(df, "value", "anchor_value").dropna(subset=["value"])
    if d.empty:
        return None
    metrics = list(dict.fromkeys(d["metric"]))
    runs = runs_of(d)
    cols = min(3, len(metrics))
    rows = int(np.ceil(len(metrics) / cols))
    fig = Figure(figsize=(4.5 * cols + 1, 3.2 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes, metrics):
        m = d[d["metric"] == metric]
        values = [m.loc[m["run"] == r, "value"].median() for r in runs]
        ax.bar(np.arange(len(runs)), values, color=[color(i) for i in range(len(runs))])
        anchors = m["anchor_value"].dropna()
        if not anchors.empty:
            ax.axhline(anchors.iloc[0], color="black", linestyle="--", linewidth=1, label="published anchor")
            ax.legend(fontsize=8)
        ax.set_title(_label(m.iloc[0]), fontsize=9)
        ax.set_xticks(np.arange(len(runs)), runs, rotation=30, ha="right", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    return finish(fig, "Node fingerprint: each metric per run (dashed: the published anchor, where one matches)",
                  is_fallback(df), out_dir / LINES_PNG, runs)


def _tables(d: pd.DataFrame) -> list[Table]:
    d = num(d, "value", "pct_peak", "anchor_value", "pct_of_anchor")
    cols = [c for c in ("metric", "value", "unit", "pct_peak", "anchor_value", "pct_of_anchor", "verdict",
                        "reason") if c in d.columns]
    out = d[cols].rename(columns={"pct_peak": "% of peak", "anchor_value": "anchor", "pct_of_anchor": "% of anchor"})
    return [cap(out.reset_index(drop=True), "summary lines")]


REPORT = ReportSpec(
    title="Node fingerprint",
    about=("Each summary line of the fingerprint (the other families' headline numbers and the device copy "
           "bandwidth), a bar per run, beside the published anchor matching the device and configuration "
           "(none on the CPU fallback, never a guess)."),
    required=("metric",),
    plots=(fingerprint_lines,),
    tables=_tables,
    plot_files=(LINES_PNG,),
    first=True,  # the headline of a fingerprint run: the families it summarises follow
)
