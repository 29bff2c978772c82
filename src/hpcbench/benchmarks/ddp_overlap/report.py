"""The ddp_overlap family's section of `hpcbench report`: its plots and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap, num
from hpcbench.analysis.plotting import bar_groups, Plot, color, runs_of, numeric, is_fallback, finish, category_ticks, group_labels
from hpcbench.api.family import ReportSpec

DDP = "ddp_overlap.png"

# ---- DDP --------------------------------------------------------------------------------------

_DDP_KEYS = ["mode", "bucket_cap_mb", "width", "layers", "batch", "world_size"]
_MODE_ORDER = {"no_comm": 0, "post_backward": 1, "ddp": 2}


def ddp_label(agg: pd.DataFrame) -> pd.Series:
    """'no_comm', 'post_backward', 'ddp 25 MB' (+ width/layers/... when those vary)."""
    mode = agg["mode"].astype(str)
    buckets = agg["bucket_cap_mb"].drop_duplicates()
    mb = agg["bucket_cap_mb"].map({b: ("" if pd.isna(b) else f" {b:g} MB") for b in buckets}).astype(str)
    label = mode + mb.where(mode == "ddp", "")
    extra = group_labels(agg, [k for k in _DDP_KEYS[2:] if k in agg.columns])
    return label if (extra == "all").all() else label + " " + extra


def ddp_steps(df: pd.DataFrame, out_dir: Path) -> Plot:
    """Step time per mode and bucket size, a bar per run; the exposed-communication part hatched."""
    df = numeric(df, ["bucket_cap_mb", "step_us", "exposed_comm_us"])
    if "bucket_cap_mb" not in df.columns:
        df["bucket_cap_mb"] = np.nan
    keys = [k for k in _DDP_KEYS if k in df.columns]
    cols = [c for c in ("step_us", "exposed_comm_us") if c in df.columns]
    agg = df.groupby(["run", *keys], sort=False, dropna=False)[cols].median().reset_index()
    agg["_order"] = agg["mode"].map(_MODE_ORDER).fillna(len(_MODE_ORDER))
    agg = agg.sort_values(["_order", "bucket_cap_mb"], kind="stable", na_position="first")
    agg["group"] = ddp_label(agg)
    groups, note = bar_groups(agg["group"].tolist())
    runs = runs_of(agg)
    fig = Figure(figsize=(max(8, 0.9 * len(groups) * len(runs) + 3), 5.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(runs)
    x = np.arange(len(groups))
    series = []
    for ri, run in enumerate(runs):
        g = agg[agg["run"] == run].drop_duplicates("group").set_index("group").reindex(groups)
        pos = x - 0.4 + width * (ri + 0.5)
        ax.bar(pos, g["step_us"], width, color=color(ri), label=run)
        if "exposed_comm_us" in g.columns:
            # the top part of each bar that communication added over the no-communication floor
            exposed = g["exposed_comm_us"].clip(lower=0).where(g["exposed_comm_us"] > 0)
            ax.bar(pos, exposed, width, bottom=g["step_us"] - exposed, color="none", edgecolor="black",
                   hatch="//", linewidth=0.5, label="exposed comm" if ri == 0 else None)
        series.append(run)
    ax.legend(fontsize=8)
    category_ticks(ax, groups, rotation=0 if len(groups) <= 6 else 45)
    ax.set_xlabel("gradient synchronisation")
    ax.set_ylabel("step time (µs, median)")
    ax.grid(True, axis="y", alpha=0.3)
    title = "DDP step time: communication overlapped with backward"
    return finish(fig, title, is_fallback(df), out_dir / DDP, series, note)




# ---- tables ---------------------------------------------------------------------------------

def _ddp_tables(d: pd.DataFrame) -> list[Table]:
    d = num(d, "bucket_cap_mb", "step_us", "exposed_comm_us")
    if "bucket_cap_mb" not in d.columns:
        d["bucket_cap_mb"] = np.nan
    keys = [k for k in ("mode", "bucket_cap_mb", "width", "layers", "batch") if k in d.columns]
    cols = [c for c in ("step_us", "exposed_comm_us") if c in d.columns]
    agg = d.groupby(keys, sort=False, dropna=False)[cols].median().reset_index()
    label = ddp_label(agg)
    out = pd.DataFrame({"synchronisation": label, "step µs": agg["step_us"]})
    if "exposed_comm_us" in agg.columns:
        out["exposed comm µs"] = agg["exposed_comm_us"]
    floor = agg.loc[agg["mode"] == "no_comm", "step_us"].min()
    out["vs no_comm"] = agg["step_us"] / floor if pd.notna(floor) else np.nan
    best = out.loc[agg["mode"] == "ddp", "step µs"]
    out["best bucket"] = (out["step µs"] == best.min()) & (agg["mode"] == "ddp") if len(best) else False
    return [cap(out, "configurations")]


REPORT = ReportSpec(
    title="DDP: gradient all-reduce overlapped with backward",
    about=("Training step time without communication, with one all-reduce after backward, and with DDP's "
           "bucketed all-reduce per bucket size; the hatched top of a bar is the communication left exposed."),
    required=("mode", "step_us",),
    plots=(ddp_steps,),
    tables=_ddp_tables,
    plot_files=(DDP,),
)
