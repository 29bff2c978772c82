"""Report plots: one PNG per benchmark family, several runs overlaid (series labelled by run id).

Every function takes the ok rows of one family from all runs, with a `run` column naming the run,
and writes one PNG. Figures are built on matplotlib.figure.Figure, never pyplot: no global state,
no display, nothing left open between plots. Data are aggregated with groupby first, so Python
loops run over series (runs x variants), never over rows; a 100,000-row run plots in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from hpcbench.sizes import format_bytes

DPI = 100
FALLBACK_NOTE = "CPU fallback: not performance numbers"
MAX_LABELLED_TICKS = 40  # more category labels than this overlap: label an even subset
MAX_BAR_GROUPS = 40  # bar charts beyond this many groups are unreadable: plot the first ones
RUN_LINESTYLES = ["-", "--", ":", "-."]
RUN_HATCHES = ["", "//", "..", "xx", "\\\\", "++"]
RUN_MARKERS = [".", "x", "+", "1"]  # point-only series: the run is told apart by marker shape
OVERLAP_TIMES = {"t_comp_us": "T_comp", "t_comm_us": "T_comm", "t_seq_us": "T_seq", "t_ovl_us": "T_ovl"}

# file names, so that a report can tell which PNGs it owns
GEMM_TFLOPS = "gemm_tflops.png"
GEMM_SPEEDUP = "gemm_fp8_speedup.png"
COLLECTIVES = "collectives_busbw.png"
OVERLAP = "overlap.png"
DDP = "ddp_overlap.png"
PIPELINE = "pipeline_bubble.png"
ALL_FILES = (GEMM_TFLOPS, GEMM_SPEEDUP, COLLECTIVES, OVERLAP, DDP, PIPELINE)


@dataclass
class Plot:
    path: Path
    series: list[str]  # legend labels of the data series drawn (reference lines excluded)
    title: str
    note: str | None = None  # what was left out, if anything


# ---- shared helpers ---------------------------------------------------------------------------

def _color(i: int):
    return f"C{i % 10}"


# fixed colours for the known kernels, so a kernel looks the same in every plot and report
KERNELS = ["torch_bf16", "triton_bf16", "torch_fp8_tensor", "triton_fp8_tensor", "torch_fp8_row", "triton_fp8_row",
           "triton_fp8_block"]


def _kernel_color(kernel: str, present: list[str]):
    extra = [k for k in present if k not in KERNELS]
    return _color(KERNELS.index(kernel) if kernel in KERNELS else len(KERNELS) + extra.index(kernel))


def _runs(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["run"]))


def _numeric(df: pd.DataFrame, columns) -> pd.DataFrame:
    """Rows loaded from JSON may hold None in numeric columns: make them float (NaN)."""
    df = df.copy()
    for c in columns:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _is_fallback(df: pd.DataFrame) -> bool:
    return "fallback" in df.columns and bool(df["fallback"].eq(True).any())


def _finish(fig: Figure, title: str, fallback: bool, path: Path, series: list[str], note=None) -> Plot:
    # the warning sits in the image too, because PNGs get pasted around without the report
    heading = title + (f"\n{FALLBACK_NOTE}" if fallback else "") + (f"\n{note}" if note else "")
    fig.suptitle(heading)
    fig.savefig(path, dpi=DPI)
    return Plot(path=path, series=series, title=title, note=note)


def _auto_log_y(ax, values) -> None:
    """Log scale when the values span more than two decades (CPU and GPU numbers, tiny shapes)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() > 100:
        ax.set_yscale("log")


def _category_ticks(ax, labels: list[str], rotation: int = 45) -> None:
    """Tick labels for categories 0..n-1; past MAX_LABELLED_TICKS only an even subset is labelled."""
    n = len(labels)
    step = max(1, math.ceil(n / MAX_LABELLED_TICKS))
    ticks = list(range(0, n, step))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([labels[i] for i in ticks], rotation=rotation, ha="right" if rotation else "center",
                       fontsize=8)


def _binary_size_axis(ax, sizes) -> None:
    """log2 x axis with ticks on powers of two labelled 8 B, 1 KiB, 1 MiB (at most ~12 ticks)."""
    ax.set_xscale("log", base=2)
    lo = math.floor(math.log2(max(float(np.min(sizes)), 1)))
    hi = math.ceil(math.log2(max(float(np.max(sizes)), 1)))
    step = max(1, math.ceil((hi - lo + 1) / 12))
    ax.xaxis.set_major_locator(FixedLocator([2.0 ** k for k in range(lo, hi + 1, step)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_bytes(round(x))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)


def _group_labels(df: pd.DataFrame, columns: list[str], fmt: dict | None = None) -> pd.Series:
    """One label per row from the columns that vary across the frame (constant ones say nothing)."""
    fmt = fmt or {}
    varying = [c for c in columns if c in df.columns and df[c].nunique(dropna=False) > 1]
    if not varying:
        return pd.Series("all", index=df.index)
    parts = []
    for c in varying:
        # formatting maps over distinct values only, then broadcasts back to the rows
        uniq = df[c].drop_duplicates()
        text = {v: (fmt[c](v) if c in fmt else f"{c}={v}") for v in uniq}
        parts.append(df[c].map(text).astype(str))
    label = parts[0]
    for p in parts[1:]:
        label = label + " " + p
    return label


# ---- GEMM -------------------------------------------------------------------------------------

def _gemm_backend(df: pd.DataFrame) -> pd.Series:
    if "backend" in df.columns:
        return df["backend"].fillna(df["kernel"].str.split("_").str[0])
    return df["kernel"].str.split("_").str[0]


def shape_axis(df: pd.DataFrame) -> pd.DataFrame:
    """Distinct (M, N, K) ordered by flops, with their x position and an 'M×N×K' label."""
    shapes = df[["M", "N", "K"]].drop_duplicates().astype("int64")
    shapes["shape_flops"] = 2 * shapes["M"] * shapes["N"] * shapes["K"]
    shapes = shapes.sort_values(["shape_flops", "M", "N", "K"], kind="stable").reset_index(drop=True)
    shapes["x"] = np.arange(len(shapes))
    shapes["shape"] = shapes["M"].astype(str) + "×" + shapes["N"].astype(str) + "×" + shapes["K"].astype(str)
    return shapes


def gemm_tflops(df: pd.DataFrame, out_dir: Path) -> Plot:
    """TFLOP/s against shape (ordered by flops), a line per (run, kernel), dtype peaks as rooflines."""
    df = _numeric(df, ["M", "N", "K", "tflops", "peak_tflops"]).dropna(subset=["M", "N", "K", "tflops"])
    agg = (df.groupby(["run", "kernel", "M", "N", "K"], sort=False)["tflops"].median().reset_index())
    shapes = shape_axis(agg)
    agg = agg.astype({"M": "int64", "N": "int64", "K": "int64"}).merge(shapes, on=["M", "N", "K"])
    runs, kernels = _runs(agg), list(dict.fromkeys(agg["kernel"]))
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.subplots()
    series = []
    # few shapes: lines with markers; many: points only, since a line through thousands of unrelated
    # shapes is a solid band that hides every value
    lines = len(shapes) <= 60
    for (run, kernel), g in agg.groupby(["run", "kernel"], sort=False):
        g = g.sort_values("x")
        label = f"{run} · {kernel}"
        style = RUN_LINESTYLES[runs.index(run) % len(RUN_LINESTYLES)] if lines else "none"
        ax.plot(g["x"], g["tflops"], color=_kernel_color(kernel, kernels), linestyle=style,
                marker="o" if lines else RUN_MARKERS[runs.index(run) % len(RUN_MARKERS)],
                markersize=3, linewidth=1.2, label=label)
        series.append(label)
    peaks = df.dropna(subset=["peak_tflops"]).drop_duplicates(["dtype", "peak_tflops"])
    peak_values = []
    for dtype, peak in zip(peaks["dtype"], peaks["peak_tflops"]):
        ax.axhline(peak, color="black" if dtype == "bf16" else "firebrick", linestyle=(0, (6, 3)),
                   linewidth=1, label=f"{dtype} peak {peak:g} TFLOP/s")
        peak_values.append(peak)
    _auto_log_y(ax, np.concatenate([agg["tflops"].to_numpy(), peak_values]))
    _category_ticks(ax, shapes["shape"].tolist())
    ax.set_xlabel("shape M×N×K (ordered by FLOPs)")
    ax.set_ylabel("TFLOP/s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(series) > 8 else 1, loc="best")
    return _finish(fig, "GEMM throughput", _is_fallback(df), out_dir / GEMM_TFLOPS, series)


def fp8_speedup(df: pd.DataFrame) -> pd.DataFrame:
    """Per run, shape and FP8 kernel: median_s of the same backend's BF16 kernel / the FP8 kernel's.

    Columns run, M, N, K, kernel, bf16_kernel, bf16_s, fp8_s, speedup. Empty when no pair exists.
    """
    df = _numeric(df, ["M", "N", "K", "median_s"]).dropna(subset=["M", "N", "K", "median_s"])
    df = df.assign(backend=_gemm_backend(df))
    keys = ["run", "backend", "M", "N", "K"]
    med = df.groupby([*keys, "dtype", "kernel"], sort=False)["median_s"].median().reset_index()
    base = med[(med["dtype"] == "bf16") & (med["kernel"] == med["backend"] + "_bf16")]
    base = base.rename(columns={"kernel": "bf16_kernel", "median_s": "bf16_s"}).drop(columns="dtype")
    fp8 = med[med["dtype"] == "fp8"].rename(columns={"median_s": "fp8_s"}).drop(columns="dtype")
    out = fp8.merge(base, on=keys)
    out["speedup"] = out["bf16_s"] / out["fp8_s"]
    return out.astype({"M": "int64", "N": "int64", "K": "int64"})[
        ["run", "M", "N", "K", "kernel", "bf16_kernel", "bf16_s", "fp8_s", "speedup"]]


def gemm_fp8_speedup(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """FP8 speedup over BF16 per shape: bars per (run, FP8 kernel), a line at 1.0; None without pairs."""
    sp = fp8_speedup(df)
    if sp.empty:
        return None
    shapes = shape_axis(sp)
    sp = sp.merge(shapes, on=["M", "N", "K"])
    combos = sp[["run", "kernel"]].drop_duplicates()
    runs, kernels = _runs(sp), list(dict.fromkeys(sp["kernel"]))
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.subplots()
    bars = len(shapes) * len(combos) <= 400  # past that, bars are slivers: markers read better
    width = 0.8 / len(combos)
    series = []
    for i, (run, kernel) in enumerate(zip(combos["run"], combos["kernel"])):
        g = sp[(sp["run"] == run) & (sp["kernel"] == kernel)]
        label = f"{run} · {kernel}"
        color = _kernel_color(kernel, kernels)
        if bars:
            # bars grow from parity (1.0), up when FP8 wins, down when it loses; reads right on a log axis
            ax.bar(g["x"] - 0.4 + width * (i + 0.5), g["speedup"] - 1.0, width, bottom=1.0, color=color,
                   hatch=RUN_HATCHES[runs.index(run) % len(RUN_HATCHES)], edgecolor="white", linewidth=0.3,
                   label=label)
        else:
            ax.plot(g["x"], g["speedup"], linestyle="none", marker=RUN_MARKERS[runs.index(run) % len(RUN_MARKERS)],
                    markersize=3, color=color, label=label)
        series.append(label)
    ax.axhline(1.0, color="black", linewidth=1, label="BF16 parity (1.0)")
    _auto_log_y(ax, sp["speedup"])
    _category_ticks(ax, shapes["shape"].tolist())
    ax.set_xlabel("shape M×N×K (ordered by FLOPs)")
    ax.set_ylabel("speedup over BF16 (same backend)  [×]")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(series) > 8 else 1, loc="best")
    return _finish(fig, "FP8 speedup over BF16", _is_fallback(df), out_dir / GEMM_SPEEDUP, series)


# ---- collectives ------------------------------------------------------------------------------

def collectives_busbw(df: pd.DataFrame, out_dir: Path) -> Plot:
    """Bus bandwidth against message size, one panel per collective, a line per (run, placement)."""
    df = _numeric(df, ["size_bytes", "busbw_GBps"]).dropna(subset=["size_bytes", "busbw_GBps"])
    df = df.assign(placement=df["placement"].fillna("-") if "placement" in df.columns else "-")
    agg = (df.groupby(["run", "collective", "placement", "size_bytes"], sort=False)["busbw_GBps"]
           .median().reset_index())
    runs, colls = _runs(agg), list(dict.fromkeys(agg["collective"]))
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
            (line,) = ax.plot(g["size_bytes"], g["busbw_GBps"], color=_color(runs.index(run)),
                              linestyle=RUN_LINESTYLES[placements.index(placement) % len(RUN_LINESTYLES)],
                              marker="o" if len(g) <= 40 else None, markersize=3, label=label)
            handles.setdefault(label, line)
            series.append(f"{coll}: {label}")
        _binary_size_axis(ax, sub["size_bytes"])
        _auto_log_y(ax, sub["busbw_GBps"])
        ax.set_title(coll, fontsize=10)
        ax.set_xlabel("message size")
        ax.set_ylabel("busbw (GB/s)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(colls):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=min(4, len(handles)), fontsize=8)
    return _finish(fig, "Collectives bus bandwidth", _is_fallback(df), out_dir / COLLECTIVES, series)


# ---- overlap ----------------------------------------------------------------------------------

_OVERLAP_KEYS = ["collective", "comm_bytes", "compute", "compute_shape", "comm_dtype", "comm_priority",
                 "cuda_device_max_connections", "nccl_min_ctas", "nccl_max_ctas", "world_size"]


def _bar_groups(agg: pd.DataFrame, order: list[str]) -> tuple[list[str], str | None]:
    groups = list(dict.fromkeys(order))
    if len(groups) <= MAX_BAR_GROUPS:
        return groups, None
    return groups[:MAX_BAR_GROUPS], f"first {MAX_BAR_GROUPS} of {len(groups)} groups shown"


def overlap_times(df: pd.DataFrame, out_dir: Path) -> Plot:
    """Grouped bars T_comp, T_comm, T_seq, T_ovl per communication size (and any other varying knob)."""
    times = list(OVERLAP_TIMES)
    df = _numeric(df, ["comm_bytes", *times])
    keys = [k for k in _OVERLAP_KEYS if k in df.columns]
    agg = df.groupby(["run", *keys], sort=False, dropna=False)[times].median().reset_index()
    agg = agg.sort_values([k for k in ("comm_bytes", "collective") if k in agg.columns], kind="stable")
    agg["group"] = _group_labels(agg, keys, {"comm_bytes": lambda v: format_bytes(int(v)),
                                             "collective": str})
    groups, note = _bar_groups(agg, agg["group"].tolist())
    runs = _runs(agg)
    fig = Figure(figsize=(max(8, 1.2 * len(groups) * len(runs) + 3), 6), layout="constrained")
    ax = fig.subplots()
    n = len(runs) * len(times)
    width = 0.8 / n
    x = np.arange(len(groups))
    series = []
    for ri, run in enumerate(runs):
        g = agg[agg["run"] == run].drop_duplicates("group").set_index("group").reindex(groups)
        for mi, col in enumerate(times):
            ax.bar(x - 0.4 + width * (ri * len(times) + mi + 0.5), g[col], width, color=_color(mi),
                   hatch=RUN_HATCHES[ri % len(RUN_HATCHES)], edgecolor="white", linewidth=0.3)
            series.append(f"{run} · {OVERLAP_TIMES[col]}")
    legend = [Patch(color=_color(i), label=OVERLAP_TIMES[c]) for i, c in enumerate(times)]
    if len(runs) > 1:
        legend += [Patch(facecolor="lightgray", hatch=RUN_HATCHES[i % len(RUN_HATCHES)], label=r)
                   for i, r in enumerate(runs)]
    ax.legend(handles=legend, fontsize=8)
    _category_ticks(ax, groups, rotation=0 if len(groups) <= 8 else 45)
    ax.set_xlabel("communication size")
    ax.set_ylabel("time (µs, median of the slowest rank)")
    ax.grid(True, axis="y", alpha=0.3)
    title = "Compute/communication overlap" + (f" ({runs[0]})" if len(runs) == 1 else "")
    return _finish(fig, title, _is_fallback(df), out_dir / OVERLAP, series, note)


# ---- DDP --------------------------------------------------------------------------------------

_DDP_KEYS = ["mode", "bucket_cap_mb", "width", "layers", "batch", "world_size"]
_MODE_ORDER = {"no_comm": 0, "post_backward": 1, "ddp": 2}


def ddp_label(agg: pd.DataFrame) -> pd.Series:
    """'no_comm', 'post_backward', 'ddp 25 MB' (+ width/layers/... when those vary)."""
    mode = agg["mode"].astype(str)
    buckets = agg["bucket_cap_mb"].drop_duplicates()
    mb = agg["bucket_cap_mb"].map({b: ("" if pd.isna(b) else f" {b:g} MB") for b in buckets}).astype(str)
    label = mode + mb.where(mode == "ddp", "")
    extra = _group_labels(agg, [k for k in _DDP_KEYS[2:] if k in agg.columns])
    return label if (extra == "all").all() else label + " " + extra


def ddp_steps(df: pd.DataFrame, out_dir: Path) -> Plot:
    """Step time per mode and bucket size, a bar per run; the exposed-communication part hatched."""
    df = _numeric(df, ["bucket_cap_mb", "step_us", "exposed_comm_us"])
    if "bucket_cap_mb" not in df.columns:
        df["bucket_cap_mb"] = np.nan
    keys = [k for k in _DDP_KEYS if k in df.columns]
    cols = [c for c in ("step_us", "exposed_comm_us") if c in df.columns]
    agg = df.groupby(["run", *keys], sort=False, dropna=False)[cols].median().reset_index()
    agg["_order"] = agg["mode"].map(_MODE_ORDER).fillna(len(_MODE_ORDER))
    agg = agg.sort_values(["_order", "bucket_cap_mb"], kind="stable", na_position="first")
    agg["group"] = ddp_label(agg)
    groups, note = _bar_groups(agg, agg["group"].tolist())
    runs = _runs(agg)
    fig = Figure(figsize=(max(8, 0.9 * len(groups) * len(runs) + 3), 5.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(runs)
    x = np.arange(len(groups))
    series = []
    for ri, run in enumerate(runs):
        g = agg[agg["run"] == run].drop_duplicates("group").set_index("group").reindex(groups)
        pos = x - 0.4 + width * (ri + 0.5)
        ax.bar(pos, g["step_us"], width, color=_color(ri), label=run)
        if "exposed_comm_us" in g.columns:
            # the top part of each bar that communication added over the no-communication floor
            exposed = g["exposed_comm_us"].clip(lower=0).where(g["exposed_comm_us"] > 0)
            ax.bar(pos, exposed, width, bottom=g["step_us"] - exposed, color="none", edgecolor="black",
                   hatch="//", linewidth=0.5, label="exposed comm" if ri == 0 else None)
        series.append(run)
    ax.legend(fontsize=8)
    _category_ticks(ax, groups, rotation=0 if len(groups) <= 6 else 45)
    ax.set_xlabel("gradient synchronisation")
    ax.set_ylabel("step time (µs, median)")
    ax.grid(True, axis="y", alpha=0.3)
    title = "DDP step time: communication overlapped with backward"
    return _finish(fig, title, _is_fallback(df), out_dir / DDP, series, note)


# ---- pipeline ---------------------------------------------------------------------------------

_PIPE_KEYS = ["schedule", "microbatches", "world_size", "model", "synthetic", "overlap"]


def pipeline_bubble(df: pd.DataFrame, out_dir: Path) -> Plot:
    """Two panels per schedule: bubble ratio measured vs simulator; idle ms measured vs closed form."""
    nums = ["bubble_ratio", "predicted_bubble_ratio", "measured_idle_ms", "closed_form_bubble_ms"]
    df = _numeric(df, nums)
    for c in nums:
        if c not in df.columns:
            df[c] = np.nan
    keys = [k for k in _PIPE_KEYS if k in df.columns]
    agg = df.groupby(["run", *keys], sort=False, dropna=False)[nums].median().reset_index()
    extra = _group_labels(agg, keys[1:])
    agg["group"] = agg["schedule"].astype(str) + ("" if (extra == "all").all() else "\n" + extra)
    groups, note = _bar_groups(agg, agg["group"].tolist())
    runs = _runs(agg)
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
            ax.bar(pos, g[a] * scale, width, color=_color(ri), label=f"{run} · {a_name}")
            known = g[b].notna().to_numpy()  # no closed form for a schedule: no bar, not a zero bar
            ax.bar((pos + width)[known], (g[b] * scale)[known], width, color=_color(ri), alpha=0.45,
                   hatch="//", edgecolor="black", linewidth=0.4, label=f"{run} · {b_name}")
            series += [f"{run} · {a_name} {a}", f"{run} · {b_name} {b}"]
    for ax, ylabel, title in ((ax_ratio, "bubble ratio (%)", "bubble ratio: measured vs simulator"),
                              (ax_ms, "idle time per step (ms, worst rank)", "idle time: measured vs closed form")):
        _category_ticks(ax, groups, rotation=0 if len(groups) <= 7 else 45)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(fig, "Pipeline bubbles by schedule", _is_fallback(df), out_dir / PIPELINE, series, note)
