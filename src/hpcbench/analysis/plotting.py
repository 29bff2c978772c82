"""Plot helpers every family's report plots share: one PNG per plot, several runs overlaid (series
labelled by run id).

Plot functions take the ok rows of one family from all runs, with a `run` column naming the run,
and write one PNG. Figures are built on matplotlib.figure.Figure, never pyplot: no global state,
no display, nothing left open between plots. Data are aggregated with groupby first, so Python
loops run over series (runs x variants), never over rows; a 100,000-row run plots in seconds.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from hpcbench.api.sizes import format_bytes

DPI = 100
TITLE_PT = 12
CHAR_WIDTH_EM = 0.6  # a wide character of DejaVu Sans, in ems: lines wrapped at this fit
MIN_LEGEND_PT = 8
SHOWN_WIDTH_IN = 11.5  # the HTML report's column (analysis.blocks: 1200 px less padding) at DPI
FALLBACK_NOTE = "CPU fallback: not performance numbers"
MAX_LABELLED_TICKS = 40  # more category labels than this overlap: label an even subset
MAX_BAR_GROUPS = 40  # bar charts beyond this many groups are unreadable: plot the first ones
RUN_LINESTYLES = ["-", "--", ":", "-."]
RUN_HATCHES = ["", "//", "..", "xx", "\\\\", "++"]
RUN_MARKERS = [".", "x", "+", "1"]  # point-only series: the run is told apart by marker shape



@dataclass
class Plot:
    path: Path
    series: list[str]  # legend labels of the data series drawn (reference lines excluded)
    title: str
    note: str | None = None  # what was left out, if anything


# ---- shared helpers ---------------------------------------------------------------------------

def color(i: int):
    return f"C{i % 10}"




def runs_of(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["run"]))


def numeric(df: pd.DataFrame, columns) -> pd.DataFrame:
    """Rows loaded from JSON may hold None in numeric columns: make them float (NaN)."""
    df = df.copy()
    for c in columns:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def is_fallback(df: pd.DataFrame) -> bool:
    return "fallback" in df.columns and bool(df["fallback"].eq(True).any())


def finish(fig: Figure, title: str, fallback: bool, path: Path, series: list[str], note=None) -> Plot:
    # the warning sits in the image too, because PNGs get pasted around without the report
    heading = title + (f"\n{FALLBACK_NOTE}" if fallback else "") + (f"\n{note}" if note else "")
    fig.suptitle(_wrapped(heading, fig, TITLE_PT), fontsize=TITLE_PT)
    _legible_legends(fig)
    fig.savefig(path, dpi=DPI)
    return Plot(path=path, series=series, title=title, note=note)


def shown_scale(fig: Figure) -> float:
    """How much the HTML report shrinks the figure to fit its page (1 when it fits)."""
    return min(1.0, SHOWN_WIDTH_IN / fig.get_figwidth())


def _wrapped(heading: str, fig: Figure, points: float) -> str:
    """Each line of the heading broken to fit the figure's width (a suptitle is not wrapped, and
    constrained layout does not shrink it: a long one was cut off at both edges)."""
    chars = max(20, int(fig.get_figwidth() * 72 / (points * CHAR_WIDTH_EM)))
    return "\n".join(textwrap.fill(line, chars) for line in heading.splitlines())


def _legible_legends(fig: Figure) -> None:
    """Every legend's text at least MIN_LEGEND_PT as the report shows it (a wide figure is shrunk)."""
    least = MIN_LEGEND_PT / shown_scale(fig)
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        for text in legend.get_texts() if legend is not None else ():
            text.set_fontsize(max(text.get_fontsize(), least))


def auto_log_y(ax, values) -> None:
    """Log scale when the values span more than two decades (CPU and GPU numbers, tiny shapes)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size and v.max() / v.min() > 100:
        ax.set_yscale("log")


def category_ticks(ax, labels: list[str], rotation: int = 45) -> None:
    """Tick labels for categories 0..n-1; past MAX_LABELLED_TICKS only an even subset is labelled."""
    n = len(labels)
    step = max(1, math.ceil(n / MAX_LABELLED_TICKS))
    ticks = list(range(0, n, step))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([labels[i] for i in ticks], rotation=rotation, ha="right" if rotation else "center",
                       fontsize=8)


def binary_size_axis(ax, sizes) -> None:
    """log2 x axis with ticks on powers of two labelled 8 B, 1 KiB, 1 MiB (at most ~12 ticks)."""
    ax.set_xscale("log", base=2)
    lo = math.floor(math.log2(max(float(np.min(sizes)), 1)))
    hi = math.ceil(math.log2(max(float(np.max(sizes)), 1)))
    step = max(1, math.ceil((hi - lo + 1) / 12))
    ax.xaxis.set_major_locator(FixedLocator([2.0 ** k for k in range(lo, hi + 1, step)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_bytes(round(x))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)


def group_labels(df: pd.DataFrame, columns: list[str], fmt: dict | None = None) -> pd.Series:
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


def bar_groups(order: list[str]) -> tuple[list[str], str | None]:
    """The distinct groups of a bar chart in order, at most MAX_BAR_GROUPS, and a note if cut."""
    groups = list(dict.fromkeys(order))
    if len(groups) <= MAX_BAR_GROUPS:
        return groups, None
    return groups[:MAX_BAR_GROUPS], f"first {MAX_BAR_GROUPS} of {len(groups)} groups shown"


def time_bars(ax, agg: pd.DataFrame, groups: list[str], columns: dict[str, str]) -> list[str]:
    """Grouped bars on `ax`: per group (agg's `group` column), one bar per (run, column); colour
    tells the column (labelled by `columns`), hatching the run. Returns the series drawn."""
    from matplotlib.patches import Patch

    runs, times = runs_of(agg), list(columns)
    width = 0.8 / (len(runs) * len(times))
    x = np.arange(len(groups))
    series = []
    for ri, run in enumerate(runs):
        g = agg[agg["run"] == run].drop_duplicates("group").set_index("group").reindex(groups)
        for mi, col in enumerate(times):
            ax.bar(x - 0.4 + width * (ri * len(times) + mi + 0.5), g[col], width, color=color(mi),
                   hatch=RUN_HATCHES[ri % len(RUN_HATCHES)], edgecolor="white", linewidth=0.3)
            series.append(f"{run} · {columns[col]}")
    legend = [Patch(color=color(i), label=columns[c]) for i, c in enumerate(times)]
    if len(runs) > 1:
        legend += [Patch(facecolor="lightgray", hatch=RUN_HATCHES[i % len(RUN_HATCHES)], label=r)
                   for i, r in enumerate(runs)]
    ax.legend(handles=legend, fontsize=8)
    return series
