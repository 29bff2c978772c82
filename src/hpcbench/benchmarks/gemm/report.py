"""The gemm family's section of `hpcbench report`: its plots and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap, num
from hpcbench.analysis.plotting import (
    RUN_HATCHES,
    RUN_LINESTYLES,
    RUN_MARKERS,
    Plot,
    auto_log_y,
    category_ticks,
    color,
    finish,
    is_fallback,
    numeric,
    runs_of,
)
from hpcbench.api.family import ReportSpec

GEMM_TFLOPS = "gemm_tflops.png"
GEMM_SPEEDUP = "gemm_fp8_speedup.png"
GEMM_FP8_VS_M = "gemm_fp8_vs_m.png"
RUN_MARKERS_FILLED = ["o", "s", "^", "D"]  # a run's measured points on a line
GEMM_FP8_PRESETS = "gemm_fp8_presets.png"
PASS_ORDER = ["fprop", "dgrad", "wgrad"]
# layer shapes whose predicted FP8 speedup over M the presets plot draws (conf/shapes/gemm/)
PRESETS = ("llama3_8b", "llama3_70b", "llama3_405b", "deepseek_v3")
M_SWEEP = [2 ** i for i in range(18)]

# fixed colours for the known kernels, so a kernel looks the same in every plot and report
KERNELS = ["torch_bf16", "triton_bf16", "torch_fp8_tensor", "triton_fp8_tensor", "torch_fp8_row", "triton_fp8_row",
           "triton_fp8_block"]


def kernel_color(kernel: str, present: list[str]):
    extra = [k for k in present if k not in KERNELS]
    return color(KERNELS.index(kernel) if kernel in KERNELS else len(KERNELS) + extra.index(kernel))


# ---- plots ------------------------------------------------------------------------------------

def with_pass(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a `pass` column: runs from before gemm.passes measured the forward pass only."""
    if "pass" not in df.columns:
        return df.assign(**{"pass": "fprop"})
    return df.assign(**{"pass": df["pass"].fillna("fprop")})


def label_passes(df: pd.DataFrame) -> pd.DataFrame:
    """Kernels named with their pass ("triton_fp8_block · wgrad") when a run measured backward passes,
    so that one kernel's three GEMMs are three series; forward-only runs keep the plain names."""
    df = with_pass(df)
    if (df["pass"] == "fprop").all():
        return df
    return df.assign(kernel=df["kernel"].where(df["pass"] == "fprop", df["kernel"] + " · " + df["pass"]))


def _backend(df: pd.DataFrame) -> pd.Series:
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
    df = label_passes(numeric(df, ["M", "N", "K", "tflops", "peak_tflops"]).dropna(subset=["M", "N", "K", "tflops"]))
    agg = (df.groupby(["run", "kernel", "M", "N", "K"], sort=False)["tflops"].median().reset_index())
    shapes = shape_axis(agg)
    agg = agg.astype({"M": "int64", "N": "int64", "K": "int64"}).merge(shapes, on=["M", "N", "K"])
    runs, kernels = runs_of(agg), list(dict.fromkeys(agg["kernel"]))
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
        ax.plot(g["x"], g["tflops"], color=kernel_color(kernel, kernels), linestyle=style,
                marker="o" if lines else RUN_MARKERS[runs.index(run) % len(RUN_MARKERS)],
                markersize=3, linewidth=1.2, label=label)
        series.append(label)
    peaks = df.dropna(subset=["peak_tflops"]).drop_duplicates(["dtype", "peak_tflops"])
    peak_values = []
    for dtype, peak in zip(peaks["dtype"], peaks["peak_tflops"]):
        ax.axhline(peak, color="black" if dtype == "bf16" else "firebrick", linestyle=(0, (6, 3)),
                   linewidth=1, label=f"{dtype} peak {peak:g} TFLOP/s")
        peak_values.append(peak)
    auto_log_y(ax, np.concatenate([agg["tflops"].to_numpy(), peak_values]))
    category_ticks(ax, shapes["shape"].tolist())
    ax.set_xlabel("shape M×N×K (ordered by FLOPs)")
    ax.set_ylabel("TFLOP/s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2 if len(series) > 8 else 1, loc="best")
    return finish(fig, "GEMM throughput", is_fallback(df), out_dir / GEMM_TFLOPS, series)


def fp8_speedup(df: pd.DataFrame) -> pd.DataFrame:
    """Per run, shape and FP8 kernel: median_s of the same backend's BF16 kernel / the FP8 kernel's.

    Columns run, M, N, K, kernel, bf16_kernel, bf16_s, fp8_s, speedup. Empty when no pair exists.
    """
    df = with_pass(numeric(df, ["M", "N", "K", "median_s"]).dropna(subset=["M", "N", "K", "median_s"]))
    df = df.assign(backend=_backend(df))
    keys = ["run", "backend", "pass", "M", "N", "K"]
    med = df.groupby([*keys, "dtype", "kernel"], sort=False)["median_s"].median().reset_index()
    base = med[(med["dtype"] == "bf16") & (med["kernel"] == med["backend"] + "_bf16")]
    base = base.rename(columns={"kernel": "bf16_kernel", "median_s": "bf16_s"}).drop(columns="dtype")
    fp8 = med[med["dtype"] == "fp8"].rename(columns={"median_s": "fp8_s"}).drop(columns="dtype")
    out = fp8.merge(base, on=keys)
    out["speedup"] = out["bf16_s"] / out["fp8_s"]
    return out.astype({"M": "int64", "N": "int64", "K": "int64"})[
        ["run", "pass", "M", "N", "K", "kernel", "bf16_kernel", "bf16_s", "fp8_s", "speedup"]]


def gemm_fp8_speedup(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """FP8 speedup over BF16 per shape: bars per (run, FP8 kernel), a line at 1.0; None without pairs."""
    sp = fp8_speedup(df)
    if sp.empty:
        return None
    sp = label_passes(sp)
    shapes = shape_axis(sp)
    sp = sp.merge(shapes, on=["M", "N", "K"])
    combos = sp[["run", "kernel"]].drop_duplicates()
    runs, kernels = runs_of(sp), list(dict.fromkeys(sp["kernel"]))
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.subplots()
    bars = len(shapes) * len(combos) <= 400  # past that, bars are slivers: markers read better
    width = 0.8 / len(combos)
    series = []
    for i, (run, kernel) in enumerate(zip(combos["run"], combos["kernel"])):
        g = sp[(sp["run"] == run) & (sp["kernel"] == kernel)]
        label = f"{run} · {kernel}"
        color = kernel_color(kernel, kernels)
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
    auto_log_y(ax, sp["speedup"])
    category_ticks(ax, shapes["shape"].tolist())
    ax.set_xlabel("shape M×N×K (ordered by FLOPs)")
    ax.set_ylabel("speedup over BF16 (same backend)  [×]")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2 if len(series) > 8 else 1, loc="best")
    return finish(fig, "FP8 speedup over BF16", is_fallback(df), out_dir / GEMM_SPEEDUP, series)


# ---- where FP8 starts to win: measured and predicted over M ----------------------------------

def _fp8_rows(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["M", "N", "K", "speedup_vs_bf16_with_quant", "speedup_vs_bf16", "predicted_speedup"]
    d = with_pass(numeric(df, cols)) if "dtype" in df.columns else df.iloc[0:0]
    d = d[d["dtype"] == "fp8"] if "dtype" in d.columns else d
    for c in cols:
        if c not in d.columns:
            d = d.assign(**{c: np.nan})
    # "including casts" when it was timed, else the GEMM alone (gemm.time_quantization=false)
    return d.assign(measured=d["speedup_vs_bf16_with_quant"].fillna(d["speedup_vs_bf16"]))


def gemm_fp8_vs_m(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """FP8/BF16 speedup (casts included) against M, one panel per pass: measured points per FP8
    kernel, the roofline prediction as dashed lines; None without FP8 speedups."""
    d = _fp8_rows(df).dropna(subset=["M"])
    d = d[d["measured"].notna() | d["predicted_speedup"].notna()]
    if d.empty:
        return None
    present = [p for p in PASS_ORDER if p in set(d["pass"])]
    kernels, runs = list(dict.fromkeys(d["kernel"])), runs_of(d)
    fig = Figure(figsize=(5 * len(present) + 1, 5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(present), sharey=True))
    series: list[str] = []
    for ax, pass_name in zip(axes, present):
        g = d[d["pass"] == pass_name]
        # colour: the kernel; marker: the run (line style already tells measured from predicted)
        for (run, kernel), k in g.groupby(["run", "kernel"], sort=False):
            c, name = kernel_color(kernel, kernels), f"{run} · {kernel}" if len(runs) > 1 else kernel
            marker = RUN_MARKERS_FILLED[runs.index(run) % len(RUN_MARKERS_FILLED)]
            for (n, kk), line in k.groupby(["N", "K"], sort=False):
                line = line.groupby("M")[["measured", "predicted_speedup"]].median().sort_index()
                first = name not in series
                ax.plot(line.index, line["measured"], marker=marker, markersize=4, linestyle="-", linewidth=0.8,
                        color=c, label=name if first else None)
                if line["predicted_speedup"].notna().any():
                    ax.plot(line.index, line["predicted_speedup"], linestyle="--", linewidth=1, color=c,
                            label=f"{name} (predicted)" if first else None)
                if first:
                    series.append(name)
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_title(pass_name)
        ax.set_xlabel("M (tokens)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("FP8 speedup over BF16, casts included  [×]")
    axes[0].legend(loc="best")
    return finish(fig, "Where FP8 starts to win (measured: solid; roofline: dashed; above 1.0 FP8 is faster)",
                  is_fallback(df), out_dir / GEMM_FP8_VS_M, series)


def _roofline_factors() -> tuple[float, float, float]:
    """pct_gemm, pct_mem and the kernel floor as gemm.yaml ships them."""
    from importlib import resources

    import yaml

    text = (resources.files("hpcbench.conf") / "benchmark" / "gemm.yaml").read_text()
    g = yaml.safe_load(text)["gemm"]
    return g["roofline_pct_gemm"], g["roofline_pct_mem"], g["roofline_min_kernel_s"]


def gemm_fp8_presets(df: pd.DataFrame, out_dir: Path) -> Plot | None:
    """Predicted FP8/BF16 speedup of a whole training step (fprop + dgrad + wgrad, casts and the
    weight's quantization included) over M for the Llama and DeepSeek layer shapes, on the device of
    the rows; None where the device has no known peaks (the CPU fallback): never a guess."""
    from hpcbench.models import roofline
    from hpcbench.api.shapes import load_preset

    if "device" not in df.columns or is_fallback(df):
        return None
    pct_gemm, pct_mem, floor = _roofline_factors()
    machines = {name: roofline.machine_for(name, pct_gemm, pct_mem, floor) for name in dict.fromkeys(df["device"].dropna())}
    machines = {k: m for k, m in machines.items() if m is not None}
    if not machines:
        return None
    device, machine = next(iter(machines.items()))
    fig = Figure(figsize=(16, 5.5), layout="constrained")
    axes = fig.subplots(1, len(roofline.RECIPES), sharey=True)
    series: list[str] = []
    for ax, recipe in zip(axes, roofline.RECIPES):
        for preset in PRESETS:
            nks = list(dict.fromkeys((n, k) for _, n, k in load_preset("gemm", preset)))
            for j, (n, k) in enumerate(nks):
                sp = [roofline.predict_step(machine, recipe, m, n, k).speedup for m in M_SWEEP]
                label = f"{preset} {n}×{k}"
                ax.plot(M_SWEEP, sp, color=color(PRESETS.index(preset)), linestyle=RUN_LINESTYLES[j % len(RUN_LINESTYLES)],
                        linewidth=1, label=label if recipe == roofline.RECIPES[0] else None)
                if recipe == roofline.RECIPES[0]:
                    series.append(label)
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{recipe}-wise" if recipe != "block" else "block (1x128 / 128x128 / 1D1D)")
        ax.set_xlabel("M (tokens)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("predicted step speedup over BF16  [×]")
    fig.legend(fontsize=8, loc="outside right upper")
    return finish(fig, f"Roofline: FP8 training-step speedup per layer shape on {device} "
                       f"(pct_gemm {pct_gemm:g}, pct_mem {pct_mem:g})", False, out_dir / GEMM_FP8_PRESETS, series)


# ---- tables -----------------------------------------------------------------------------------

def _tables(d: pd.DataFrame) -> list[Table]:
    d = num(d, "M", "N", "K", "tflops", "peak_tflops", "median_s", "pct_peak").dropna(subset=["M", "N", "K"])
    d = d.astype({"M": "int64", "N": "int64", "K": "int64"})
    if "pct_peak" not in d.columns:
        d["pct_peak"] = np.nan
    speed = label_passes(fp8_speedup(d))
    d = label_passes(d)
    summary = d.groupby("kernel", sort=False).agg(
        dtype=("dtype", "first"), shapes=("M", "size"), median_tflops=("tflops", "median"),
        best_tflops=("tflops", "max"), best_pct_peak=("pct_peak", "max"))
    geo = np.exp(np.log(speed["speedup"]).groupby(speed["kernel"]).mean()).rename("geomean_fp8_speedup")
    summary = summary.join(geo).reset_index()
    summary.columns = ["kernel", "dtype", "points", "median TFLOP/s", "best TFLOP/s", "best % of peak",
                       "geomean speedup vs BF16"]
    detail = (d.groupby(["M", "N", "K", "kernel", "dtype"], sort=False)
              .agg(median_s=("median_s", "median"), tflops=("tflops", "median"), pct=("pct_peak", "median"))
              .reset_index())
    shapes = shape_axis(detail)
    detail = detail.merge(shapes, on=["M", "N", "K"]).merge(
        speed[["M", "N", "K", "kernel", "speedup"]], on=["M", "N", "K", "kernel"], how="left")
    order = {k: i for i, k in enumerate(dict.fromkeys(d["kernel"]))}
    detail = detail.assign(_k=detail["kernel"].map(order)).sort_values(["x", "_k"], kind="stable")
    detail = pd.DataFrame({"shape": detail["shape"], "kernel": detail["kernel"], "dtype": detail["dtype"],
                           "median µs": detail["median_s"] * 1e6, "TFLOP/s": detail["tflops"],
                           "% of peak": detail["pct"], "speedup vs BF16": detail["speedup"]})
    return [Table(summary), cap(detail, "shape × kernel rows")]


REPORT = ReportSpec(
    title="GEMM: FP8 vs BF16",
    about=("Throughput per shape and kernel (dashed horizontal lines: the device's dense peak per dtype), "
           "the FP8 speedup over the same backend's BF16 kernel (median time ratio; above 1.0 FP8 is faster), "
           "the FP8 speedup with casts against M per training pass, measured and as the roofline model predicts "
           "(hpcbench.models.roofline), and the predicted speedup of a whole training step for the Llama-3 and "
           "DeepSeek-V3 layer shapes on the run's device (not drawn without the device's peaks)."),
    required=("M", "N", "K", "kernel", "dtype", "tflops", "median_s"),
    plots=(gemm_tflops, gemm_fp8_speedup, gemm_fp8_vs_m, gemm_fp8_presets),
    tables=_tables,
    plot_files=(GEMM_TFLOPS, GEMM_SPEEDUP, GEMM_FP8_VS_M, GEMM_FP8_PRESETS),
)
