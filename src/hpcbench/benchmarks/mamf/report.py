"""The mamf family's section of `hpcbench report`: TFLOP/s over M, and the MAMF per run and dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table
from hpcbench.analysis.plotting import (
    RUN_LINESTYLES,
    Plot,
    auto_log_y,
    color,
    finish,
    is_fallback,
    numeric,
    runs_of,
)
from hpcbench.api.family import ReportSpec

MAMF_TFLOPS = "mamf_tflops_over_m.png"
MAX_LINES = 12  # an exhaustive search has 256 (N, K) pairs per dtype: only the best lines stay readable

_COLUMNS = ["M", "N", "K", "tflops", "peak_tflops"]


def _curves(df: pd.DataFrame) -> pd.DataFrame:
    """Median TFLOP/s per (run, dtype, N, K, M): repeated points (attempts) count once."""
    df = numeric(df, _COLUMNS).dropna(subset=["M", "N", "K", "tflops"])
    df = df.astype({"M": "int64", "N": "int64", "K": "int64"})
    return df.groupby(["run", "dtype", "N", "K", "M"], sort=False)["tflops"].median().reset_index()


def tflops_over_m(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """TFLOP/s against M, a line per (run, N, K, dtype); at most MAX_LINES, those reaching the
    highest TFLOP/s (the note says how many were left out)."""
    agg = _curves(df)
    if agg.empty:
        return None
    keys = ["run", "dtype", "N", "K"]
    best = agg.groupby(keys, sort=False)["tflops"].max().sort_values(ascending=False, kind="stable")
    kept = best.index[:MAX_LINES]
    note = f"the {MAX_LINES} of {len(best)} (N, K, dtype) lines reaching the highest TFLOP/s" if len(best) > MAX_LINES \
        else None
    runs = runs_of(agg)
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.subplots()
    series = []
    for i, key in enumerate(kept):
        run, dtype, n, k = key
        g = agg[(agg["run"] == run) & (agg["dtype"] == dtype) & (agg["N"] == n) & (agg["K"] == k)].sort_values("M")
        label = f"{run} · {dtype} N={n} K={k}"
        ax.plot(g["M"], g["tflops"], color=color(i), linestyle=RUN_LINESTYLES[runs.index(run) % len(RUN_LINESTYLES)],
                marker="o" if len(g) <= 60 else None, markersize=3, linewidth=1.2, label=label)
        series.append(label)
    peaks = numeric(df, ["peak_tflops"]).dropna(subset=["peak_tflops"]).drop_duplicates(["dtype", "peak_tflops"])
    for dtype, peak in zip(peaks["dtype"], peaks["peak_tflops"]):
        ax.axhline(peak, color="black" if dtype == "bf16" else "firebrick", linestyle=(0, (6, 3)), linewidth=1,
                   label=f"{dtype} dense peak {peak:g} TFLOP/s")
    auto_log_y(ax, np.concatenate([agg["tflops"].to_numpy(), peaks["peak_tflops"].to_numpy(dtype=float)]))
    ax.set_xlabel("M")
    ax.set_ylabel("TFLOP/s (median time)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2 if len(series) > 8 else 1, loc="best")
    return finish(fig, "MAMF search: TFLOP/s over M", is_fallback(df), out_dir / MAMF_TFLOPS, series, note)


def _tables(d: pd.DataFrame) -> list[Table]:
    """One line per dtype: the best shape and its TFLOP/s, the best by max, the means over shapes."""
    d = numeric(d, [*_COLUMNS, "tflops_max"]).dropna(subset=["M", "N", "K", "tflops"])
    if d.empty:
        return []
    d = d.astype({"M": "int64", "N": "int64", "K": "int64"}).copy()  # one block: adding a column stays cheap
    d["shape"] = d["M"].astype(str) + "×" + d["N"].astype(str) + "×" + d["K"].astype(str)
    lines = []
    for dtype, g in d.groupby("dtype", sort=False):
        best = g.loc[g["tflops"].idxmax()]
        by_max = g.loc[g["tflops_max"].idxmax()] if g["tflops_max"].notna().any() else None
        peak = best.get("peak_tflops")
        lines.append({
            "dtype": dtype, "best M×N×K": best["shape"], "TFLOP/s": best["tflops"],
            "% of peak": 100 * best["tflops"] / peak if pd.notna(peak) and peak else np.nan,
            "best by max M×N×K": by_max["shape"] if by_max is not None else None,
            "max TFLOP/s": by_max["tflops_max"] if by_max is not None else np.nan,
            "mean TFLOP/s": g["tflops"].mean(), "geomean TFLOP/s": float(np.exp(np.log(g["tflops"]).mean())),
            "shapes": len(g)})
    return [Table(pd.DataFrame(lines))]


REPORT = ReportSpec(
    title="MAMF: maximum achievable matmul FLOPS",
    about=("TFLOP/s (from the median time) of C = A @ B^T over M, a line per (N, K, dtype), with the device's "
           "dense peak per dtype as dashed lines; the table gives each dtype's best shape (its MAMF), the best "
           "by the fastest call, and the arithmetic and geometric means over every shape searched."),
    required=("M", "N", "K", "dtype", "tflops"),
    plots=(tflops_over_m,),
    tables=_tables,
    plot_files=(MAMF_TFLOPS,),
)
