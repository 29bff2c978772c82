"""The MoE dispatch/combine section of `hpcbench report`: bandwidth against tokens per rank and against
the measured imbalance (a line per run, implementation, layout and payload dtype), the overlap of
expert GEMMs with dispatch + combine, and a table of the key numbers (with DeepEP's published
figure beside a point only when hardware and configuration match it)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap, num
from hpcbench.analysis.plotting import (
    time_bars,
    RUN_LINESTYLES,
    Plot,
    auto_log_y,
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

BW_TOKENS = "moe_alltoall_bw_tokens.png"
BW_IMBALANCE = "moe_alltoall_bw_imbalance.png"
OVERLAP_BARS = "moe_alltoall_overlap.png"
SERIES = ["impl", "layout", "dispatch_dtype"]
TIMES = {"t_comp_us": "T_comp", "t_comm_us": "T_comm", "t_seq_us": "T_seq", "t_ovl_us": "T_ovl"}
# DeepEP normal mode, intranode EP8 on H800 (deepseek-ai/DeepEP docs/legacy.md): logical GB/s
ANCHOR = {"match": {"layout": "per_rank", "dispatch_dtype": "fp8", "tokens_per_rank": 4096, "hidden": 7168,
                    "top_k": 8, "num_experts": 256, "world_size": 8, "routing": "uniform"},
          "device": "H800", "dispatch": 153.0, "combine": 158.0}


def _bandwidth(df: pd.DataFrame, out_dir: Path, x: str, xlabel: str, path: str, title: str) -> Plot | None:
    df = numeric(df, [x, "logical_GBps"]).dropna(subset=[x, "logical_GBps"])
    df = df[df["phase"].isin(["dispatch", "combine"])]
    if df.empty:
        return None
    agg = df.groupby(["run", *SERIES, "phase", x], sort=False)["logical_GBps"].median().reset_index()
    runs = runs_of(agg)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, squeeze=False)[0]
    series, styles = [], {}
    for ax, phase in zip(axes, ("dispatch", "combine")):
        sub = agg[agg["phase"] == phase]
        for key, g in sub.groupby(["run", *SERIES], sort=False):
            g = g.sort_values(x)
            label = " · ".join(str(k) for k in key)
            style = styles.setdefault(tuple(key[1:]), len(styles))
            ax.plot(g[x], g["logical_GBps"], color=color(style), linestyle=RUN_LINESTYLES[runs.index(key[0]) % 4],
                    marker="o", markersize=4, label=label)
            series.append(f"{phase}: {label}")
        auto_log_y(ax, sub["logical_GBps"])
        ax.set_title(phase, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("logical bandwidth (GB/s, DeepEP's definition)")
        ax.grid(True, alpha=0.3)
        if len(sub):
            ax.legend(fontsize=8)
    return finish(fig, title, is_fallback(df), out_dir / path, series)


def bw_vs_tokens(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """Dispatch and combine logical bandwidth against tokens per rank."""
    return _bandwidth(df, out_dir, "tokens_per_rank", "tokens per rank", BW_TOKENS,
                      "MoE dispatch / combine bandwidth vs tokens per rank")


def bw_vs_imbalance(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """Dispatch and combine logical bandwidth against the measured routing imbalance."""
    return _bandwidth(df, out_dir, "imbalance_measured", "imbalance (busiest rank / mean of the others)",
                      BW_IMBALANCE, "MoE dispatch / combine bandwidth vs routing imbalance")


def overlap_bars(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """T_comp, T_comm, T_seq, T_ovl per point: expert GEMMs against dispatch + combine."""
    times = list(TIMES)
    df = numeric(df[df["phase"] == "overlapped"], times).dropna(subset=["t_ovl_us"])
    if df.empty:
        return None
    keys = [k for k in (*SERIES, "tokens_per_rank", "hidden", "num_experts", "top_k", "routing", "imbalance")
            if k in df.columns]
    agg = df.groupby(["run", *keys], sort=False, dropna=False)[times].median().reset_index()
    short = {"tokens_per_rank": lambda v: f"T{v:g}", "hidden": lambda v: f"H{v:g}", "num_experts": lambda v: f"E{v:g}",
             "top_k": lambda v: f"k{v:g}", "imbalance": lambda v: f"r{v:g}"}
    agg["group"] = group_labels(agg, keys, {k: short.get(k, str) for k in keys})
    groups, note = bar_groups(agg["group"].tolist())
    runs = runs_of(agg)
    fig = Figure(figsize=(max(8, 1.1 * len(groups) * len(runs) + 3), 5.5), layout="constrained")
    ax = fig.subplots()
    series = time_bars(ax, agg, groups, TIMES)
    category_ticks(ax, groups, rotation=0 if len(groups) <= 2 else 30)
    ax.set_ylabel("time (µs, median of the slowest rank)")
    ax.grid(True, axis="y", alpha=0.3)
    return finish(fig, "Expert GEMMs overlapped with dispatch + combine", is_fallback(df), out_dir / OVERLAP_BARS,
                  series, note)


def _anchor(row: pd.Series, phase: str) -> float | None:
    """DeepEP's published GB/s for this point, only when device and configuration match it (rule 9)."""
    if ANCHOR["device"] not in str(row.get("device", "")):
        return None
    if any(str(row.get(k)) != str(v) and row.get(k) != v for k, v in ANCHOR["match"].items()):
        return None
    return ANCHOR[phase]


def _tables(d: pd.DataFrame) -> list[Table]:
    d = num(d, "median_s", "logical_GBps", "imbalance_measured", "hidden_fraction", "tokens_per_rank", "hidden",
            "num_experts", "top_k", "world_size")
    keys = [k for k in (*SERIES, "tokens_per_rank", "hidden", "num_experts", "top_k", "routing", "imbalance",
                        "world_size", "device") if k in d.columns]
    out = None
    for phase, cols in (("dispatch", {"median_s": "dispatch µs", "logical_GBps": "dispatch GB/s"}),
                        ("combine", {"median_s": "combine µs", "logical_GBps": "combine GB/s"}),
                        ("overlapped", {"hidden_fraction": "hidden fraction"})):
        sub = d[d["phase"] == phase]
        present = [c for c in cols if c in sub.columns]
        if sub.empty or not present:
            continue
        agg = sub.groupby(keys, sort=False, dropna=False)[[*present, "imbalance_measured"]].median()
        agg = agg.rename(columns=cols)
        if "median_s" in cols:
            agg[cols["median_s"]] *= 1e6
        out = agg if out is None else out.join(agg.drop(columns="imbalance_measured"), how="outer")
    if out is None:
        return []
    out = out.reset_index()
    for phase in ("dispatch", "combine"):
        anchor = out.apply(_anchor, axis=1, args=(phase,)) if len(out) else pd.Series(dtype=float)
        if anchor.notna().any() and f"{phase} GB/s" in out.columns:
            out[f"{phase} % of DeepEP H800"] = 100 * out[f"{phase} GB/s"] / anchor
    out = out.drop(columns=["device"], errors="ignore")
    return [cap(out.rename(columns={"imbalance": "r requested", "imbalance_measured": "imbalance measured",
                                    "dispatch_dtype": "payload", "tokens_per_rank": "tokens", "num_experts": "E",
                                    "top_k": "k", "world_size": "ranks"}), "points")]


REPORT = ReportSpec(
    title="MoE dispatch / combine",
    about=("Logical bandwidth (DeepEP's definition: rows received × payload bytes, FP8 with its scales, local rows "
           "included; combine: the same rows sent back in BF16) against tokens per rank and against the measured "
           "imbalance (busiest rank's received tokens / the mean of the others); T_comp, T_comm, T_seq, T_ovl of "
           "one micro-batch's expert GEMMs overlapped with another's dispatch + combine. Medians of the slowest rank."),
    required=("phase", "logical_GBps"),
    plots=(bw_vs_tokens, bw_vs_imbalance, overlap_bars),
    tables=_tables,
    plot_files=(BW_TOKENS, BW_IMBALANCE, OVERLAP_BARS),
)
