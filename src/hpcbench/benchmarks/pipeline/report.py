"""The pipeline family's section of `hpcbench report`: its plots and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap, num
from hpcbench.analysis.plotting import (
    Plot,
    bar_groups,
    category_ticks,
    color,
    finish,
    group_labels,
    is_fallback,
    numeric,
    runs_of,
)
from hpcbench.api.family import ReportSpec

PIPELINE = "pipeline_bubble.png"

# ---- pipeline ---------------------------------------------------------------------------------

_PIPE_KEYS = ["schedule", "microbatches", "world_size", "model", "synthetic", "overlap"]


def pipeline_bubble(df: pd.DataFrame, out_dir: Path) -> Plot:
    """Two panels per schedule: bubble ratio measured vs simulator; idle ms measured vs closed form."""
    nums = ["bubble_ratio", "predicted_bubble_ratio", "measured_idle_ms", "closed_form_bubble_ms"]
    df = numeric(df, nums)
    for c in nums:
        if c not in df.columns:
            df[c] = np.nan
    keys = [k for k in _PIPE_KEYS if k in df.columns]
    agg = df.groupby(["run", *keys], sort=False, dropna=False)[nums].median().reset_index()
    extra = group_labels(agg, keys[1:])
    agg["group"] = agg["schedule"].astype(str) + ("" if (extra == "all").all() else "\n" + extra)
    groups, note = bar_groups(agg["group"].tolist())
    runs = runs_of(agg)
    fig = Figure(figsize=(max(12, 1.1 * len(groups) * len(runs) + 4), 5.5), layout="constrained")
    ax_ratio, ax_ms = fig.subplots(1, 2)
    width = 0.8 / (2 * len(runs))
    x = np.arange(len(groups))
    series = []
    panels = ((ax_ratio, "bubble_ratio", "predicted_bubble_ratio", "measured", "simulator", 100.0),
              (ax_ms, "measured_idle_ms", "closed_form_bubble_ms", "measured", "closed form", 1.0))
    for ri, run in enumerate(runs):
        g = agg[agg["run"] == run].drop_duplicates("group").set_index("group").reindex(groups)
        for ax, a, b, a_name, b_name, scale in panels:
            pos = x - 0.4 + width * (2 * ri + 0.5)
            ax.bar(pos, g[a] * scale, width, color=color(ri), label=f"{run} · {a_name}")
            known = g[b].notna().to_numpy()  # no closed form for a schedule: no bar, not a zero bar
            ax.bar((pos + width)[known], (g[b] * scale)[known], width, color=color(ri), alpha=0.45,
                   hatch="//", edgecolor="black", linewidth=0.4, label=f"{run} · {b_name}")
            series += [f"{run} · {a_name} {a}", f"{run} · {b_name} {b}"]
    for ax, ylabel, title in ((ax_ratio, "bubble ratio (%)", "bubble ratio: measured vs simulator"),
                              (ax_ms, "idle time per step (ms, worst rank)", "idle time: measured vs closed form")):
        category_ticks(ax, groups, rotation=0 if len(groups) <= 7 else 45)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return finish(fig, "Pipeline bubbles by schedule", is_fallback(df), out_dir / PIPELINE, series, note)



# ---- tables ---------------------------------------------------------------------------------

def _pipeline_tables(d: pd.DataFrame) -> list[Table]:
    cols = ["step_ms", "bubble_ratio", "predicted_bubble_ratio", "measured_idle_ms", "closed_form_bubble_ms"]
    d = num(d, *cols)
    for c in cols:
        if c not in d.columns:
            d[c] = np.nan
    keys = [k for k in ("schedule", "microbatches", "world_size") if k in d.columns]
    agg = d.groupby(keys, sort=False, dropna=False)[cols].median().reset_index()
    out = agg[keys].copy()
    out["step ms"] = agg["step_ms"]
    out["bubble % (measured)"] = agg["bubble_ratio"] * 100
    out["bubble % (simulator)"] = agg["predicted_bubble_ratio"] * 100
    out["residual pp"] = (agg["bubble_ratio"] - agg["predicted_bubble_ratio"]) * 100
    out["idle ms (measured)"] = agg["measured_idle_ms"]
    out["idle ms (closed form)"] = agg["closed_form_bubble_ms"]
    return [cap(out, "configurations")]


REPORT = ReportSpec(
    title="Pipeline schedules",
    about=("Bubble ratio measured vs predicted by the simulator from measured costs, and the worst rank's idle "
           "time vs the paper's closed form (absent where a schedule has none)."),
    required=("schedule", "bubble_ratio",),
    plots=(pipeline_bubble,),
    tables=_pipeline_tables,
    plot_files=(PIPELINE,),
)
