"""`hpcbench report RUN [RUN...] --out DIR`: a self-contained report directory for stored runs.

The directory holds report.md, report.html (same content, standalone, no external resources) and
one PNG per benchmark family present (see hpcbench.analysis.plots). Several runs are overlaid in
every plot and get one column each in the environment table. Only ok rows are plotted; rows of a
CPU-fallback run are flagged as not performance numbers wherever they appear.

The content is built once as a list of blocks (heading, paragraph, image, table) and rendered to
both Markdown and HTML, so the two files cannot drift apart.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import hpcbench
from hpcbench.analysis import plots
from hpcbench.errors import UserError
from hpcbench.sizes import format_bytes

MAX_TABLE_ROWS = 40  # per family and run: the plots carry the full sweep, tables the key numbers
MAX_FAILURE_ROWS = 10
STATUSES = ("ok", "failed", "skipped")


# ---- blocks and their two renderings ----------------------------------------------------------

@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    warning: bool = False


@dataclass
class Image:
    file: str
    alt: str


@dataclass
class Table:
    df: pd.DataFrame  # cells already formatted as strings
    note: str | None = None


def _cell(value) -> str:
    """Table cell text: 4 significant digits for floats, an em dash for missing values."""
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        value = float(value) + 0.0  # no "-0"
        if 1e4 <= abs(value) < 1e12:
            return f"{value:.0f}"  # 67570 reads better than 6.757e+04
        return f"{value:.4g}"
    if value is pd.NA or value is pd.NaT:
        return "—"
    return str(value)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text. Only ever called on capped tables, so the per-cell map stays small."""
    return df.map(_cell).astype(object)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numeric columns right-aligned), no dependency needed."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    text = format_table(df)

    def esc(s) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


def _to_markdown(blocks: list) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(f"> **Warning:** {b.text}" if b.warning else b.text)
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.file})")
        elif isinstance(b, Table):
            out.append(markdown_table(b.df) + (f"\n\n_{b.note}_" if b.note else ""))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1, h2, h3 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
.warning { background: #fff3cd; border-left: 4px solid #e0a800; padding: .5em 1em; }
.note { color: #666; font-style: italic; }
"""


def _to_html(blocks: list, title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = ' class="warning"' if b.warning else ""
            prefix = "<strong>Warning:</strong> " if b.warning else ""
            out.append(f"<p{cls}>{prefix}{html.escape(b.text)}</p>")
        elif isinstance(b, Image):
            out.append(f'<p><img src="{html.escape(b.file)}" alt="{html.escape(b.alt)}"></p>')
        elif isinstance(b, Table):
            out.append(format_table(b.df).to_html(index=False, border=0, escape=True))
            if b.note:
                out.append(f'<p class="note">{html.escape(b.note)}</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---- runs -------------------------------------------------------------------------------------

@dataclass
class _Run:
    label: str
    df: pd.DataFrame
    meta: dict


def _label_runs(frames: list[pd.DataFrame]) -> list[_Run]:
    runs, seen = [], {}
    for i, df in enumerate(frames):
        meta = dict(df.attrs.get("metadata") or {})
        label = meta.get("run_id")
        if not label and "run_id" in df.columns and len(df):
            label = df["run_id"].iloc[0]
        label = str(label or f"run {i + 1}")
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:  # the same run given twice must still be two series
            label = f"{label} ({seen[label]})"
        runs.append(_Run(label, df, meta))
    return runs


def _na(value) -> str:
    return "—" if value is None or value == "" else str(value)


def _status_counts(df: pd.DataFrame) -> dict:
    if "status" not in df.columns:
        return dict.fromkeys(STATUSES, 0)
    counts = df["status"].value_counts()
    return {s: int(counts.get(s, 0)) for s in STATUSES}


def _is_fallback_run(run: _Run) -> bool:
    return bool(run.meta.get("fallback")) or ("fallback" in run.df.columns and bool(run.df["fallback"].eq(True).any()))


def _environment(runs: list[_Run]) -> list:
    rows = {}
    for r in runs:
        m = r.meta
        points = m.get("points") if isinstance(m.get("points"), dict) else _status_counts(r.df)
        gpu = m.get("gpu_name")
        benchmarks = m.get("suite") or (list(dict.fromkeys(r.df["benchmark"])) if "benchmark" in r.df else [])
        rows[r.label] = {
            "run id": _na(m.get("run_id") or r.label),
            "started": _na(m.get("started_at")),
            "benchmarks": ", ".join(map(str, benchmarks)) or "—",
            "device": _na(m.get("device_name")),
            "GPU": f"{gpu} × {m.get('gpu_count') or 1}" if gpu else f"none ({m.get('gpu_count') or 0})",
            "driver": _na(m.get("driver_version")),
            "CUDA": _na(m.get("cuda_runtime") or m.get("cuda_version")),
            "torch": _na(m.get("torch_version")),
            "NCCL": _na(m.get("nccl_version")),
            "world size": _na(m.get("world_size") or (m.get("distributed") or {}).get("world_size")),
            "host": _na(m.get("hostname")),
            "git": _na(m.get("git_sha"))[:12] + (" (dirty)" if m.get("git_dirty") else ""),
            "status": _na(m.get("status")),
            "points ok/failed/skipped": "/".join(str(points.get(s, 0)) for s in STATUSES),
            "fallback": f"yes: {plots.FALLBACK_NOTE}" if _is_fallback_run(r) else "no",
        }
    table = pd.DataFrame(rows)
    table.insert(0, "field", table.index)
    blocks: list = [Heading(2, "Environment"), Table(table)]
    fallback = [r.label for r in runs if _is_fallback_run(r)]
    if fallback:
        which = "every run" if len(fallback) == len(runs) else "run(s) " + ", ".join(fallback)
        blocks.append(Para(f"{plots.FALLBACK_NOTE}: {which} measured on the CPU fallback path; useful for "
                           "checking the harness, never for comparing hardware.", warning=True))
    for r in runs:
        if r.meta.get("status") not in (None, "complete"):
            blocks.append(Para(f"run {r.label} did not complete (status {r.meta.get('status')}"
                               + (f": {r.meta['error']}" if r.meta.get("error") else "") + "); partial results.",
                               warning=True))
    return blocks


# ---- families ---------------------------------------------------------------------------------

def _cap(df: pd.DataFrame, what: str) -> Table:
    omitted = len(df) - MAX_TABLE_ROWS
    note = f"{omitted} more {what} omitted (all of them are in the plot)." if omitted > 0 else None
    return Table(df.head(MAX_TABLE_ROWS), note)


def _num(df: pd.DataFrame, *cols) -> pd.DataFrame:
    return df.assign(**{c: pd.to_numeric(df[c], errors="coerce") for c in cols if c in df.columns})


def _gemm_tables(d: pd.DataFrame) -> list[Table]:
    d = _num(d, "M", "N", "K", "tflops", "peak_tflops", "median_s", "pct_peak").dropna(subset=["M", "N", "K"])
    d = d.astype({"M": "int64", "N": "int64", "K": "int64"})
    if "pct_peak" not in d.columns:
        d["pct_peak"] = np.nan
    speed = plots.fp8_speedup(d)
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
    shapes = plots.shape_axis(detail)
    detail = detail.merge(shapes, on=["M", "N", "K"]).merge(
        speed[["M", "N", "K", "kernel", "speedup"]], on=["M", "N", "K", "kernel"], how="left")
    order = {k: i for i, k in enumerate(dict.fromkeys(d["kernel"]))}
    detail = detail.assign(_k=detail["kernel"].map(order)).sort_values(["x", "_k"], kind="stable")
    detail = pd.DataFrame({"shape": detail["shape"], "kernel": detail["kernel"], "dtype": detail["dtype"],
                           "median µs": detail["median_s"] * 1e6, "TFLOP/s": detail["tflops"],
                           "% of peak": detail["pct"], "speedup vs BF16": detail["speedup"]})
    return [Table(summary), _cap(detail, "shape × kernel rows")]


def _collectives_tables(d: pd.DataFrame) -> list[Table]:
    d = _num(d, "size_bytes", "busbw_GBps", "algbw_GBps", "time_us").dropna(subset=["size_bytes", "busbw_GBps"])
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
    return [_cap(out.reset_index(), "collective × placement rows")]


def _overlap_tables(d: pd.DataFrame) -> list[Table]:
    cols = {"t_comp_us": "T_comp µs", "t_comm_us": "T_comm µs", "t_seq_us": "T_seq µs", "t_ovl_us": "T_ovl µs",
            "hidden_fraction": "hidden fraction", "speedup_vs_seq": "speedup vs seq",
            "exposed_comm_us": "exposed comm µs"}
    d = _num(d, "comm_bytes", *cols)
    keys = [k for k in ("collective", "comm_bytes", "compute_shape", "comm_priority") if k in d.columns]
    present = [c for c in cols if c in d.columns]
    agg = d.groupby(keys, sort=False, dropna=False)[present].median().reset_index().sort_values(keys[:2])
    table = _cap(agg, "configurations")
    table.df["comm_bytes"] = table.df["comm_bytes"].map(lambda v: "—" if pd.isna(v) else format_bytes(int(v)))
    table.df = table.df.rename(columns={**cols, "comm_bytes": "comm size", "compute_shape": "compute",
                                        "comm_priority": "priority"})
    return [table]


def _ddp_tables(d: pd.DataFrame) -> list[Table]:
    d = _num(d, "bucket_cap_mb", "step_us", "exposed_comm_us")
    if "bucket_cap_mb" not in d.columns:
        d["bucket_cap_mb"] = np.nan
    keys = [k for k in ("mode", "bucket_cap_mb", "width", "layers", "batch") if k in d.columns]
    cols = [c for c in ("step_us", "exposed_comm_us") if c in d.columns]
    agg = d.groupby(keys, sort=False, dropna=False)[cols].median().reset_index()
    label = plots.ddp_label(agg)
    out = pd.DataFrame({"synchronisation": label, "step µs": agg["step_us"]})
    if "exposed_comm_us" in agg.columns:
        out["exposed comm µs"] = agg["exposed_comm_us"]
    floor = agg.loc[agg["mode"] == "no_comm", "step_us"].min()
    out["vs no_comm"] = agg["step_us"] / floor if pd.notna(floor) else np.nan
    best = out.loc[agg["mode"] == "ddp", "step µs"]
    out["best bucket"] = (out["step µs"] == best.min()) & (agg["mode"] == "ddp") if len(best) else False
    return [_cap(out, "configurations")]


def _pipeline_tables(d: pd.DataFrame) -> list[Table]:
    cols = ["step_ms", "bubble_ratio", "predicted_bubble_ratio", "measured_idle_ms", "closed_form_bubble_ms"]
    d = _num(d, *cols)
    for c in cols:
        if c not in d.columns:
            d[c] = np.nan
    keys = [k for k in ("schedule", "microbatches", "world_size") if k in d.columns]
    agg = d.groupby(keys, sort=False, dropna=False)[cols].median().reset_index()
    out = agg[keys].copy()
    out["step ms"] = agg["step_ms"]
    out["bubble % (measured)"] = agg["bubble_ratio"] * 100
    out["bubble % (simulator)"] = agg["predicted_bubble_ratio"] * 100
    out["residual pp"] = (agg["bubble_ratio"] - agg["predicted_bubble_ratio"]) * 100
    out["idle ms (measured)"] = agg["measured_idle_ms"]
    out["idle ms (closed form)"] = agg["closed_form_bubble_ms"]
    return [_cap(out, "configurations")]


def _is_measurement(df: pd.DataFrame) -> pd.Series:
    """Collectives rows also hold fitted models and projections: only measurements are plotted."""
    if "record" not in df.columns:
        return pd.Series(True, index=df.index)
    return df["record"].isna() | (df["record"] == "measurement")


@dataclass
class Family:
    name: str  # value of the `benchmark` column
    title: str
    required: list[str]  # without these columns nothing can be plotted
    plots: list[Callable]
    tables: Callable
    about: str
    rows: Callable = field(default=lambda df: pd.Series(True, index=df.index))


FAMILIES = [
    Family("gemm", "GEMM: FP8 vs BF16", ["M", "N", "K", "kernel", "dtype", "tflops", "median_s"],
           [plots.gemm_tflops, plots.gemm_fp8_speedup], _gemm_tables,
           "Throughput per shape and kernel (dashed horizontal lines: the device's dense peak per dtype), and "
           "the FP8 speedup over the same backend's BF16 kernel (median time ratio; above 1.0 FP8 is faster)."),
    Family("collectives", "Collectives", ["collective", "size_bytes", "busbw_GBps"],
           [plots.collectives_busbw], _collectives_tables,
           "Bus bandwidth against message size (nccl-tests convention: decimal GB/s, binary sizes), "
           "one panel per collective.", rows=_is_measurement),
    Family("overlap", "Compute/communication overlap", ["comm_bytes", *plots.OVERLAP_TIMES],
           [plots.overlap_times], _overlap_tables,
           "T_comp and T_comm alone, T_seq back to back, T_ovl overlapped (medians of the slowest rank). "
           "Hidden fraction = (T_comp + T_comm - T_ovl) / T_comm."),
    Family("ddp_overlap", "DDP: gradient all-reduce overlapped with backward", ["mode", "step_us"],
           [plots.ddp_steps], _ddp_tables,
           "Training step time without communication, with one all-reduce after backward, and with DDP's "
           "bucketed all-reduce per bucket size; the hatched top of a bar is the communication left exposed."),
    Family("pipeline", "Pipeline schedules", ["schedule", "bubble_ratio"],
           [plots.pipeline_bubble], _pipeline_tables,
           "Bubble ratio measured vs predicted by the simulator from measured costs, and the worst rank's idle "
           "time vs the paper's closed form (absent where a schedule has none)."),
]


def _family_frames(runs: list[_Run], fam: Family) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all rows of the family from every run, its plottable ok rows), both with a `run` column."""
    parts = []
    for r in runs:
        df = r.df
        if "benchmark" not in df.columns or not len(df):
            continue
        rows = df[df["benchmark"] == fam.name]
        rows = rows[fam.rows(rows)]
        if len(rows):
            parts.append(rows.assign(run=r.label))
    if not parts:
        return pd.DataFrame(), pd.DataFrame()
    every = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
    ok = every["status"] == "ok" if "status" in every.columns else pd.Series(True, index=every.index)
    return every, every[ok]


def _failures(every: pd.DataFrame) -> list:
    if "status" not in every.columns:
        return []
    bad = every[every["status"] != "ok"]
    if bad.empty:
        return []
    reason = bad["reason"].fillna("(no reason given)") if "reason" in bad.columns else "(no reason given)"
    counts = (bad.assign(reason=reason).groupby(["run", "status", "reason"], sort=False).size()
              .rename("points").reset_index().sort_values("points", ascending=False, kind="stable"))
    note = (f"{len(counts) - MAX_FAILURE_ROWS} more distinct reasons omitted."
            if len(counts) > MAX_FAILURE_ROWS else None)
    return [Heading(3, "Failed and skipped points"), Table(counts.head(MAX_FAILURE_ROWS), note)]


def _family_section(fam: Family, every: pd.DataFrame, ok: pd.DataFrame, out_dir: Path) -> tuple[list, list]:
    blocks: list = [Heading(2, fam.title)]
    counts = every.groupby("run", sort=False)["status"].value_counts() if "status" in every.columns else None
    summary = []
    for run in dict.fromkeys(every["run"]):
        c = counts[run] if counts is not None else {"ok": int((every["run"] == run).sum())}
        summary.append(f"{run}: " + ", ".join(f"{int(c.get(s, 0))} {s}" for s in STATUSES))
    blocks.append(Para("Points per run: " + "; ".join(summary) + "."))
    if "fallback" in ok.columns and ok["fallback"].eq(True).any():
        blocks.append(Para(plots.FALLBACK_NOTE + ".", warning=True))
    missing = [c for c in fam.required if c not in ok.columns]
    if ok.empty or missing:
        why = "no ok rows" if ok.empty else "the rows lack column(s) " + ", ".join(missing)
        return blocks + [Para(f"Nothing to plot: {why}.")] + _failures(every), []
    blocks.append(Para(fam.about))
    made = []
    for plot in fam.plots:
        p = plot(ok, out_dir)
        if p is None:
            continue
        made.append(p)
        blocks.append(Image(p.path.name, p.title))
        if p.note:
            blocks.append(Para(f"{p.title}: {p.note}."))
    for run, d in ok.groupby("run", sort=False):
        blocks.append(Heading(3, f"Run {run}"))
        blocks += fam.tables(d)
    return blocks + _failures(every), made


# ---- entry points -----------------------------------------------------------------------------

def build_report(frames: list[pd.DataFrame], out_dir: Path) -> Path:
    """Write report.md, report.html and the family PNGs into `out_dir`; returns report.md's path.

    Raises UserError when no run has a plottable row or `out_dir` is not usable as a directory.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    if not frames:
        raise UserError("no runs given to report on")
    runs = _label_runs(frames)
    sections = [(fam, *_family_frames(runs, fam)) for fam in FAMILIES]
    sections = [(fam, every, ok) for fam, every, ok in sections if len(every)]
    if not any(len(ok) and all(c in ok.columns for c in fam.required) for fam, _, ok in sections):
        known = ", ".join(f.name for f in FAMILIES)
        raise UserError(f"nothing to report: no run has an ok row of a known benchmark ({known}) "
                        f"in {', '.join(r.label for r in runs)}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the report directory ({exc.strerror})") from None

    title = "hpcbench report: " + ", ".join(r.label for r in runs)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list = [Heading(1, title),
                    Para(f"Generated {now} by hpcbench {hpcbench.__version__} from {len(runs)} run(s). "
                         "Plots overlay the runs (series labelled by run id); tables list each run's key numbers.")]
    blocks += _environment(runs)
    made: list[plots.Plot] = []
    for fam, every, ok in sections:
        fam_blocks, fam_plots = _family_section(fam, every, ok, out_dir)
        blocks += fam_blocks
        made += fam_plots
    other = sorted({b for r in runs if "benchmark" in r.df.columns for b in r.df["benchmark"].dropna().unique()}
                   - {f.name for f in FAMILIES})
    if other:
        blocks.append(Para("Not covered by this report: " + ", ".join(map(str, other)) + "."))
    # PNGs of an earlier report into the same directory would be stale: drop those not redrawn
    written = {p.path.name for p in made}
    for name in plots.ALL_FILES:
        if name not in written:
            (out_dir / name).unlink(missing_ok=True)
    md = out_dir / "report.md"
    md.write_text(_to_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(_to_html(blocks, title), encoding="utf-8")
    return md


def _load(path: Path) -> pd.DataFrame:
    from hpcbench.results import load_run
    from hpcbench.results.reader import quietly

    if not path.exists() and (Path("results") / path).exists():
        path = Path("results") / path  # a bare run id, as printed at the end of a run
    return quietly(load_run, path, as_lists=False)  # the raw samples are not plotted: arrays load faster


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="hpcbench report",
        description="Write a report directory (report.md, report.html and PNG plots) for one or more runs; "
                    "several runs are overlaid in every plot.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="run directory (or run id under ./results, rows.jsonl, exported .parquet)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: report-<first run id>)")
    args = parser.parse_args(argv)
    frames = [_load(p) for p in args.runs]
    first = frames[0].attrs.get("metadata", {}).get("run_id") or args.runs[0].resolve().name
    out = args.out or Path(f"report-{first}")
    md = build_report(frames, out)
    print(f"report: {md} and {md.with_name('report.html')}")
    return 0
