"""`hpcbench report RUN [RUN...] --out DIR`: a self-contained report directory for stored runs.

The directory holds report.md, report.html (same content, standalone, no external resources) and
one PNG per benchmark family present (each family's `ReportSpec`). Several runs are overlaid in
every plot and get one column each in the environment table. Only ok rows are plotted; rows of a
CPU-fallback run are flagged as not performance numbers wherever they appear.

The content is built once as a list of blocks (heading, paragraph, image, table) and rendered to
both Markdown and HTML, so the two files cannot drift apart.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import hpcbench
from hpcbench.api import registry
from hpcbench.analysis.blocks import Heading, Image, Para, Table, to_html, to_markdown
from hpcbench.analysis.plotting import FALLBACK_NOTE, Plot
from hpcbench.api.errors import CommandParser, UserError
from hpcbench.api.family import ReportSpec

MAX_FAILURE_ROWS = 10
STATUSES = ("ok", "failed", "skipped")


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
            "fallback": f"yes: {FALLBACK_NOTE}" if _is_fallback_run(r) else "no",
        }
    table = pd.DataFrame(rows)
    table.insert(0, "field", table.index)
    blocks: list = [Heading(2, "Environment"), Table(table)]
    fallback = [r.label for r in runs if _is_fallback_run(r)]
    if fallback:
        which = "every run" if len(fallback) == len(runs) else "run(s) " + ", ".join(fallback)
        blocks.append(Para(f"{FALLBACK_NOTE}: {which} measured on the CPU fallback path; useful for "
                           "checking the harness, never for comparing hardware.", warning=True))
    for r in runs:
        if r.meta.get("status") not in (None, "complete"):
            blocks.append(Para(f"run {r.label} did not complete (status {r.meta.get('status')}"
                               + (f": {r.meta['error']}" if r.meta.get("error") else "") + "); partial results.",
                               warning=True))
    return blocks


# ---- families ---------------------------------------------------------------------------------

def _sections() -> list[tuple[str, ReportSpec]]:
    sections = [(name, fam.report) for name, fam in registry.families().items() if fam.report is not None]
    return sorted(sections, key=lambda section: not section[1].first)  # the headline first, else as registered


def _family_frames(runs: list[_Run], name: str, fam: ReportSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(all rows of the family from every run, its plottable ok rows), both with a `run` column."""
    parts = []
    for r in runs:
        df = r.df
        if "benchmark" not in df.columns or not len(df):
            continue
        rows = df[df["benchmark"] == name]
        rows = rows[registry.get(name).point_mask(rows)]
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


def _family_section(fam: ReportSpec, every: pd.DataFrame, ok: pd.DataFrame, out_dir: Path) -> tuple[list, list]:
    blocks: list = [Heading(2, fam.title)]
    counts = every.groupby("run", sort=False)["status"].value_counts() if "status" in every.columns else None
    summary = []
    for run in dict.fromkeys(every["run"]):
        c = counts[run] if counts is not None else {"ok": int((every["run"] == run).sum())}
        summary.append(f"{run}: " + ", ".join(f"{int(c.get(s, 0))} {s}" for s in STATUSES))
    blocks.append(Para("Points per run: " + "; ".join(summary) + "."))
    if "fallback" in ok.columns and ok["fallback"].eq(True).any():
        blocks.append(Para(FALLBACK_NOTE + ".", warning=True))
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
    for run, d in ok.groupby("run", sort=False) if fam.tables else ():
        blocks.append(Heading(3, f"Run {run}"))
        blocks += fam.tables(d)
    return blocks + _failures(every), made


def _anchors(runs: list[_Run]) -> list:
    """The points that match a published figure (device and configuration: hpcbench.models.anchors), per
    run, with the figure's source. No section when none matches: an unmatched point shows nothing."""
    from hpcbench.models import anchors
    from hpcbench.analysis.blocks import MAX_TABLE_ROWS

    blocks: list = []
    for r in runs:
        if "benchmark" not in r.df.columns:
            continue
        names = r.df["benchmark"].dropna().unique()
        params = {n: tuple((r.meta.get("params") or {}).get(n) or registry.params_of(n) or ()) for n in names}
        hits = anchors.listing(r.df, r.meta.get("gpu_name") or r.meta.get("device_name"), params)
        if not hits:
            continue
        table = pd.DataFrame({
            "benchmark": [h["benchmark"] for h in hits], "point": [h["point"] for h in hits],
            "metric": [h["metric"] for h in hits], "measured": [h["measured"] for h in hits],
            "anchor": [h["anchor"] for h in hits], "unit": [h["unit"] for h in hits],
            "% of anchor": [h["pct"] for h in hits],
            "source": [h["source"] + (f" ({h['note']})" if h["note"] else "") for h in hits]})
        omitted = len(table) - MAX_TABLE_ROWS
        note = f"{omitted} more matched points omitted." if omitted > 0 else None
        blocks += [Heading(3, f"Run {r.label}"), Table(table.head(MAX_TABLE_ROWS), note)]
    if not blocks:
        return []
    return [Heading(2, "Published anchors"),
            Para("Points whose device and configuration match a published figure (conf/anchors.yaml), as a "
                 "percentage of it (100 = as fast as published). Points that match none are not listed.")] + blocks


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
    known = _sections()
    sections = [(fam, *_family_frames(runs, name, fam)) for name, fam in known]
    sections = [(fam, every, ok) for fam, every, ok in sections if len(every)]
    if not any(len(ok) and all(c in ok.columns for c in fam.required) for fam, _, ok in sections):
        known = ", ".join(name for name, _ in known)
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
    made: list[Plot] = []
    for fam, every, ok in sections:
        fam_blocks, fam_plots = _family_section(fam, every, ok, out_dir)
        blocks += fam_blocks
        made += fam_plots
    blocks += _anchors(runs)
    other = sorted({b for r in runs if "benchmark" in r.df.columns for b in r.df["benchmark"].dropna().unique()}
                   - {name for name, _ in known})
    if other:
        blocks.append(Para("Not covered by this report: " + ", ".join(map(str, other)) + "."))
    # PNGs of an earlier report into the same directory would be stale: drop those not redrawn
    written = {p.path.name for p in made}
    for name in {f for _, fam in known for f in fam.plot_files}:
        if name not in written:
            (out_dir / name).unlink(missing_ok=True)
    md = out_dir / "report.md"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(to_html(blocks, title), encoding="utf-8")
    return md


def _load(path: Path) -> pd.DataFrame:
    from hpcbench.results import load_run
    from hpcbench.results.reader import quietly

    if not path.exists() and (Path("results") / path).exists():
        path = Path("results") / path  # a bare run id, as printed at the end of a run
    return quietly(load_run, path, as_lists=False)  # the raw samples are not plotted: arrays load faster


def main(argv: list[str]) -> int:
    parser = CommandParser(
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
