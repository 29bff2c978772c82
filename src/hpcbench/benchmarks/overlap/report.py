"""The overlap family's section of `hpcbench report`: its plots and tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from hpcbench.analysis.blocks import Table, cap, num
from hpcbench.analysis.plotting import time_bars, bar_groups, Plot, runs_of, numeric, is_fallback, finish, category_ticks, group_labels
from hpcbench.api.family import ReportSpec
from hpcbench.api.sizes import format_bytes

OVERLAP = "overlap.png"
OVERLAP_TIMES = {"t_comp_us": "T_comp", "t_comm_us": "T_comm", "t_seq_us": "T_seq", "t_ovl_us": "T_ovl"}

# ---- overlap ----------------------------------------------------------------------------------

_OVERLAP_KEYS = ["collective", "comm_bytes", "compute", "compute_shape", "comm_dtype", "comm_priority",
                 "cuda_device_max_connections", "nccl_min_ctas", "nccl_max_ctas", "world_size"]


def overlap_times(df: pd.DataFrame, out_dir: Path) -> Plot:
    """Grouped bars T_comp, T_comm, T_seq, T_ovl per communication size (and any other varying knob)."""
    times = list(OVERLAP_TIMES)
    df = numeric(df, ["comm_bytes", *times])
    keys = [k for k in _OVERLAP_KEYS if k in df.columns]
    agg = df.groupby(["run", *keys], sort=False, dropna=False)[times].median().reset_index()
    agg = agg.sort_values([k for k in ("comm_bytes", "collective") if k in agg.columns], kind="stable")
    agg["group"] = group_labels(agg, keys, {"comm_bytes": lambda v: format_bytes(int(v)),
                                             "collective": str})
    groups, note = bar_groups(agg["group"].tolist())
    runs = runs_of(agg)
    fig = Figure(figsize=(max(8, 1.2 * len(groups) * len(runs) + 3), 6), layout="constrained")
    ax = fig.subplots()
    series = time_bars(ax, agg, groups, OVERLAP_TIMES)
    category_ticks(ax, groups, rotation=0 if len(groups) <= 8 else 45)
    ax.set_xlabel("communication size")
    ax.set_ylabel("time (µs, median of the slowest rank)")
    ax.grid(True, axis="y", alpha=0.3)
    title = "Compute/communication overlap" + (f" ({runs[0]})" if len(runs) == 1 else "")
    return finish(fig, title, is_fallback(df), out_dir / OVERLAP, series, note)




# ---- tables ---------------------------------------------------------------------------------

def _overlap_tables(d: pd.DataFrame) -> list[Table]:
    cols = {"t_comp_us": "T_comp µs", "t_comm_us": "T_comm µs", "t_seq_us": "T_seq µs", "t_ovl_us": "T_ovl µs",
            "hidden_fraction": "hidden fraction", "speedup_vs_seq": "speedup vs seq",
            "exposed_comm_us": "exposed comm µs"}
    d = num(d, "comm_bytes", *cols)
    keys = [k for k in ("collective", "comm_bytes", "compute_shape", "comm_priority") if k in d.columns]
    present = [c for c in cols if c in d.columns]
    agg = d.groupby(keys, sort=False, dropna=False)[present].median().reset_index().sort_values(keys[:2])
    table = cap(agg, "configurations")
    table.df["comm_bytes"] = table.df["comm_bytes"].map(lambda v: "—" if pd.isna(v) else format_bytes(int(v)))
    table.df = table.df.rename(columns={**cols, "comm_bytes": "comm size", "compute_shape": "compute",
                                        "comm_priority": "priority"})
    return [table]


REPORT = ReportSpec(
    title="Compute/communication overlap",
    about=("T_comp and T_comm alone, T_seq back to back, T_ovl overlapped (medians of the slowest rank). "
           "Hidden fraction = (T_comp + T_comm - T_ovl) / T_comm."),
    required=("comm_bytes", *OVERLAP_TIMES,),
    plots=(overlap_times,),
    tables=_overlap_tables,
    plot_files=(OVERLAP,),
)
