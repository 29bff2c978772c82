"""The what-if section of `hpcbench report`: stacked step-breakdown bars per configuration, and
the step against interconnect bandwidth, one line per schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap, num
from hpcbench.analysis.plotting import (
    Plot,
    RUN_LINESTYLES,
    bar_groups,
    category_ticks,
    color,
    finish,
    group_labels,
    numeric,
    runs_of,
)
from hpcbench.api.family import ReportSpec

BREAKDOWN = "whatif_breakdown.png"
BANDWIDTH = "whatif_bandwidth.png"
PHASES = {"phase_1f_s": "1F (warm-up forwards)", "phase_bubble_s": "bubble", "phase_1b_s": "1B (backwards alone)",
          "phase_1w_s": "1W (weight gradients alone)", "phase_fnb_s": "F&B (overlapped pairs)",
          "optimizer_phase_s": "optimizer (exposed DP + Adam)"}
KEYS = ["model", "cluster", "parallel", "gpus", "tp", "pp", "dp", "ep", "cp", "schedule", "microbatches",
        "nvlink_GBps", "net_GBps", "compute_efficiency", "costs_from"]


def _by_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """A Hydra sweep's jobs are runs named <sweep>/<job>: plot them as one series, the sweep."""
    df = df.copy()
    df["run"] = df["run"].astype(str).str.split("/").str[0]
    return df


def step_breakdown(df: pd.DataFrame, out_dir: Path) -> Plot:
    """One stacked bar per configuration (and run): the step's phases in seconds."""
    df = numeric(_by_sweep(df), list(PHASES))
    keys = [k for k in KEYS if k in df.columns]
    agg = df.groupby(["run", *keys], sort=False, dropna=False)[list(PHASES)].median().reset_index()
    agg["group"] = group_labels(agg, keys)
    groups, note = bar_groups(agg["group"].tolist())
    runs = runs_of(agg)
    fig = Figure(figsize=(max(8, 0.9 * len(groups) * len(runs) + 4), 5.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(runs)
    x = np.arange(len(groups))
    series = []
    for ri, run in enumerate(runs):
        g = agg[agg["run"] == run].drop_duplicates("group").set_index("group").reindex(groups)
        bottom = np.zeros(len(groups))
        for pi, (col, name) in enumerate(PHASES.items()):
            values = g[col].fillna(0.0).to_numpy()
            ax.bar(x - 0.4 + width * (ri + 0.5), values, width, bottom=bottom, color=color(pi),
                   label=name if ri == 0 else None, edgecolor="white", linewidth=0.3)
            bottom += values
            series.append(f"{run} · {name}")
    category_ticks(ax, groups, rotation=0 if len(groups) <= 4 else 45)
    ax.set_ylabel("seconds per step")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return finish(fig, "Predicted step breakdown", False, out_dir / BREAKDOWN, series, note)


def bandwidth_sweep(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """Step time against NVLink (and network) bandwidth, one line per schedule and run."""
    df = numeric(_by_sweep(df), ["step_s", "nvlink_GBps", "net_GBps"])
    axes = [c for c in ("nvlink_GBps", "net_GBps") if c in df.columns and df[c].nunique() > 1]
    if not axes:
        return None
    fig = Figure(figsize=(6 * len(axes), 4.5), layout="constrained")
    panels = np.atleast_1d(fig.subplots(1, len(axes)))
    series = []
    others = [k for k in KEYS if k in df.columns and k not in ("schedule", *axes)]
    for ax, axis in zip(panels, axes):
        for ri, run in enumerate(runs_of(df)):
            part = df[df["run"] == run]
            label_extra = group_labels(part, others)
            for si, ((sched, extra), g) in enumerate(part.assign(_extra=label_extra).groupby(
                    ["schedule", "_extra"], sort=False)):
                line = g.groupby(axis)["step_s"].median().sort_index()
                name = f"{run} · {sched}" + ("" if extra == "all" else f" {extra}")
                ax.plot(line.index, line.values, marker="o", color=color(si),
                        linestyle=RUN_LINESTYLES[ri % len(RUN_LINESTYLES)], label=name)
                series.append(name)
        ax.set_xlabel(axis.replace("_GBps", " GB/s per GPU"))
        ax.set_ylabel("predicted step (s)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return finish(fig, "Predicted step vs interconnect bandwidth", False, out_dir / BANDWIDTH, series)


def _tables(d: pd.DataFrame) -> list[Table]:
    cols = ["step_s", *PHASES, "tokens_per_day", "tflops_per_gpu_causal", "mfu_causal", "mfu_full", "mem_total_GB"]
    d = num(d, *cols)
    keys = [k for k in ("model", "cluster", "parallel", "pp", "schedule", "nvlink_GBps") if k in d.columns]
    out = d[keys].copy()
    for c in cols:
        out[c] = d[c] if c in d.columns else np.nan
    out["tokens_per_day"] = out["tokens_per_day"] / 1e9
    return [cap(out.rename(columns={"tokens_per_day": "tokens/day (B)"}), "configurations")]


REPORT = ReportSpec(
    title="What-if training step",
    about=("Predicted steps from the what-if model: each configuration's phases stacked (DeepSeek's breakdown: "
           "warm-up forwards, bubble, backwards and weight gradients run alone, overlapped F&B pairs, optimizer), "
           "and the step against interconnect bandwidth per schedule when a sweep varies it. Predictions, not "
           "measurements: their inputs (measured or assumed) are listed on each row."),
    required=("step_s",),
    plots=(step_breakdown, bandwidth_sweep),
    tables=_tables,
    plot_files=(BREAKDOWN, BANDWIDTH),
)
