"""The grouped_gemm family's section of `hpcbench report`: TFLOP/s per layout and dtype, and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap
from hpcbench.analysis.plotting import (RUN_HATCHES, Plot, auto_log_y, bar_groups, category_ticks, color, finish,
                                        is_fallback, numeric, runs_of)
from hpcbench.api.family import ReportSpec

GROUPED_TFLOPS = "grouped_gemm_tflops.png"
LAYOUTS = ["contiguous", "masked", "k_grouped"]


def _point_labels(df: pd.DataFrame) -> pd.Series:
    text = (df["G"].astype("int64").astype(str) + "×" + df["M"].astype("int64").astype(str) + "×"
            + df["N"].astype("int64").astype(str) + "×" + df["K"].astype("int64").astype(str))
    if "imbalance" in df.columns:
        r = pd.to_numeric(df["imbalance"], errors="coerce")
        text = text + r.map(lambda v: "" if pd.isna(v) else f" r={v:g}")
    return text


def grouped_tflops(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """One panel per layout: TFLOP/s per shape, bars per (run, kernel): colour = kernel (dtype in its
    name), hatching = run; dashed lines: the dense peaks."""
    df = numeric(df, ["G", "M", "N", "K", "tflops", "peak_tflops"]).dropna(subset=["G", "M", "N", "K", "tflops"])
    if df.empty:
        return None
    df = df.assign(shape=_point_labels(df))
    layouts = [x for x in LAYOUTS if x in set(df["layout"])]
    kernels = list(dict.fromkeys(df["kernel"]))
    runs = runs_of(df)
    fig = Figure(figsize=(11, 3.6 * len(layouts)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(layouts), 1, squeeze=False)[:, 0])
    series, notes = [], []
    for ax, layout in zip(axes, layouts):
        d = df[df["layout"] == layout]
        agg = d.groupby(["run", "kernel", "shape"], sort=False)["tflops"].median().reset_index()
        shapes, note = bar_groups(list(agg["shape"]))
        if note:
            notes.append(f"{layout}: {note}")
        combos = [(r, k) for r in runs for k in kernels if ((agg["run"] == r) & (agg["kernel"] == k)).any()]
        width = 0.8 / max(1, len(combos))
        x = np.arange(len(shapes))
        for i, (run, kernel) in enumerate(combos):
            g = agg[(agg["run"] == run) & (agg["kernel"] == kernel)].set_index("shape").reindex(shapes)
            label = f"{run} · {kernel}"
            ax.bar(x - 0.4 + width * (i + 0.5), g["tflops"], width, color=color(kernels.index(kernel)),
                   hatch=RUN_HATCHES[runs.index(run) % len(RUN_HATCHES)], edgecolor="white", linewidth=0.3,
                   label=label)
            if label not in series:
                series.append(label)
        peaks = d.dropna(subset=["peak_tflops"]).drop_duplicates(["dtype", "peak_tflops"])
        for dtype, peak in zip(peaks["dtype"], peaks["peak_tflops"]):
            ax.axhline(peak, color="black" if dtype == "bf16" else "firebrick", linestyle=(0, (6, 3)),
                       linewidth=1, label=f"{dtype} peak {peak:g}")
        auto_log_y(ax, np.concatenate([agg["tflops"].to_numpy(), peaks["peak_tflops"].to_numpy()]))
        category_ticks(ax, shapes, rotation=20)
        ax.set_title(f"{layout}: G×M×N×K" + (" (K: tokens per expert)" if layout == "k_grouped" else
                                            " (M: rows per expert)"), fontsize=9)
        ax.set_ylabel("TFLOP/s (valid rows)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return finish(fig, "Grouped expert GEMMs: throughput per layout and dtype", is_fallback(df),
                  out_dir / GROUPED_TFLOPS, series, note="; ".join(notes) or None)


def _tables(d: pd.DataFrame) -> list[Table]:
    d = numeric(d, ["G", "M", "N", "K", "tflops", "GBps", "pct_peak", "median_s", "speedup_vs_bf16"])
    d = d.dropna(subset=["G", "M", "N", "K"])
    for col in ("pct_peak", "speedup_vs_bf16", "GBps"):
        if col not in d.columns:
            d[col] = np.nan
    summary = d.groupby(["layout", "kernel"], sort=False).agg(
        points=("tflops", "size"), median_tflops=("tflops", "median"), best_tflops=("tflops", "max"),
        median_GBps=("GBps", "median"), best_pct_peak=("pct_peak", "max"),
        median_fp8_speedup=("speedup_vs_bf16", "median")).reset_index()
    summary.columns = ["layout", "kernel", "points", "median TFLOP/s", "best TFLOP/s", "median GB/s",
                       "best % of peak", "median speedup vs BF16"]
    detail = pd.DataFrame({"layout": d["layout"], "shape G×M×N×K": _point_labels(d), "kernel": d["kernel"],
                           "median µs": d["median_s"] * 1e6, "TFLOP/s": d["tflops"], "GB/s": d["GBps"],
                           "% of peak": d["pct_peak"], "speedup vs BF16": d["speedup_vs_bf16"]})
    return [Table(summary), cap(detail, "point × kernel rows")]


REPORT = ReportSpec(
    title="Grouped expert GEMMs (MoE)",
    about=("TFLOP/s counted on valid rows only, per layout (contiguous: M-grouped with padding to the alignment; "
           "masked: per-expert capacity buffers; k_grouped: the weight gradient with per-expert K) and kernel "
           "(BF16 and block-scaled FP8; Triton, a per-expert torch loop, torch._grouped_mm). Dashed lines: "
           "the device's dense peak per dtype."),
    required=("layout", "G", "M", "N", "K", "kernel", "dtype", "tflops"),
    plots=(grouped_tflops,),
    tables=_tables,
    plot_files=(GROUPED_TFLOPS,),
)
