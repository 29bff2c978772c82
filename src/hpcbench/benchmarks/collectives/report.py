"""The collectives family's section of `hpcbench report`: its plots and tables."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap, num
from hpcbench.analysis.plotting import (RUN_LINESTYLES, Plot, auto_log_y, binary_size_axis, color, finish, is_fallback,
                                        numeric, runs_of)
from hpcbench.api.family import ReportSpec
from hpcbench.api.sizes import format_bytes

BUSBW_PNG = "collectives_busbw.png"


# ---- plots ------------------------------------------------------------------------------------

def collectives_busbw(df: pd.DataFrame, out_dir: Path) -> Plot:
    """Bus bandwidth against message size, one panel per collective, a line per (run, placement)."""
    df = numeric(df, ["size_bytes", "busbw_GBps"]).dropna(subset=["size_bytes", "busbw_GBps"])
    df = df.assign(placement=df["placement"].fillna("-") if "placement" in df.columns else "-")
    agg = (df.groupby(["run", "collective", "placement", "size_bytes"], sort=False)["busbw_GBps"]
           .median().reset_index())
    runs, colls = runs_of(agg), list(dict.fromkeys(agg["collective"]))
    placements = list(dict.fromkeys(agg["placement"]))
    ncols = min(3, len(colls))
    nrows = math.ceil(len(colls) / ncols)
    fig = Figure(figsize=(5 * ncols + 1, 3.6 * nrows + 1.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    series, handles = [], {}
    for ax, coll in zip(axes.flat, colls):
        sub = agg[agg["collective"] == coll]
        for (run, placement), g in sub.groupby(["run", "placement"], sort=False):
            g = g.sort_values("size_bytes")
            label = f"{run} · {placement}"
            (line,) = ax.plot(g["size_bytes"], g["busbw_GBps"], color=color(runs.index(run)),
                              linestyle=RUN_LINESTYLES[placements.index(placement) % len(RUN_LINESTYLES)],
                              marker="o" if len(g) <= 40 else None, markersize=3, label=label)
            handles.setdefault(label, line)
            series.append(f"{coll}: {label}")
        binary_size_axis(ax, sub["size_bytes"])
        auto_log_y(ax, sub["busbw_GBps"])
        ax.set_title(coll, fontsize=10)
        ax.set_xlabel("message size")
        ax.set_ylabel("busbw (GB/s)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(colls):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=min(4, len(handles)), fontsize=8)
    return finish(fig, "Collectives bus bandwidth", is_fallback(df), out_dir / BUSBW_PNG, series)


# ---- tables -----------------------------------------------------------------------------------

def _tables(d: pd.DataFrame) -> list[Table]:
    d = num(d, "size_bytes", "busbw_GBps", "algbw_GBps", "time_us").dropna(subset=["size_bytes", "busbw_GBps"])
    d = d.assign(placement=d["placement"].fillna("-") if "placement" in d.columns else "-")
    agg = (d.groupby(["collective", "placement", "size_bytes"], sort=False)[["time_us", "algbw_GBps", "busbw_GBps"]]
           .median().reset_index())
    g = agg.groupby(["collective", "placement"], sort=False)
    smallest = agg.loc[g["size_bytes"].idxmin()].set_index(["collective", "placement"])
    best = agg.loc[g["busbw_GBps"].idxmax()].set_index(["collective", "placement"])
    largest = agg.loc[g["size_bytes"].idxmax()].set_index(["collective", "placement"])
    out = pd.DataFrame({"sizes": g.size(),
                        "smallest": smallest["size_bytes"], "time µs @ smallest": smallest["time_us"],
                        "peak busbw GB/s": best["busbw_GBps"], "@ size": best["size_bytes"],
                        "largest": largest["size_bytes"], "busbw GB/s @ largest": largest["busbw_GBps"]})
    for c in ("smallest", "@ size", "largest"):  # capped below, so this map stays tiny
        out[c] = out[c].map(lambda v: format_bytes(int(v)))
    return [cap(out.reset_index(), "collective × placement rows")]


REPORT = ReportSpec(
    title="Collectives",
    about=("Bus bandwidth against message size (nccl-tests convention: decimal GB/s, binary sizes), "
           "one panel per collective."),
    required=("collective", "size_bytes", "busbw_GBps"),
    plots=(collectives_busbw,),
    tables=_tables,
    plot_files=(BUSBW_PNG,),
)
