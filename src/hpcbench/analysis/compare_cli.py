"""`hpcbench compare RUN_A RUN_B`: the comparison as a terminal table, Markdown, CSV or JSON."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hpcbench.analysis.compare import FASTER, SAME, SLOWER, Comparison, Settings, compare_frames, join_columns
from hpcbench.api.errors import CommandParser, UserError

ORDER = {SLOWER: 0, FASTER: 1, "not compared": 2, "damaged samples": 2, SAME: 3}
STYLE = {SLOWER: "bold red", FASTER: "bold green", "not compared": "yellow"}


def _time(seconds) -> str:
    if seconds is None or pd.isna(seconds):
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.4g} {unit}"
    return f"{seconds / 1e-9:.4g} ns"


def _num(value, spec: str) -> str:
    return "" if value is None or pd.isna(value) else format(value, spec)


def shown_rows(c: Comparison, limit: int | None) -> pd.DataFrame:
    """Changes first (largest first), then the rest; at most `limit` rows."""
    p = c.points
    # the order of each distinct verdict, spread to the rows (a dict lookup per row is slow at 1M)
    codes, verdicts = pd.factorize(p["verdict"])
    rank = np.array([ORDER.get(v, 2.5) for v in verdicts] + [2.5])[codes]  # code -1 (missing): the last entry
    size = np.abs(p["ratio"].fillna(1.0).to_numpy() - 1)
    if not limit or limit >= len(p):
        return p.iloc[np.lexsort((-size, rank))]
    # only `limit` rows are shown: take them level by level without sorting the million
    shown: list[np.ndarray] = []
    left = limit
    for level in np.unique(rank):
        rows = np.flatnonzero(rank == level)
        if len(rows) > left:  # the largest changes of this level, ties kept in row order as lexsort would
            cut = np.partition(-size[rows], left - 1)[left - 1]
            rows = rows[-size[rows] <= cut]
        rows = rows[np.lexsort((-size[rows],))][:left]
        shown.append(rows)
        left -= len(rows)
        if not left:
            break
    return p.iloc[np.concatenate(shown)]


def records(c: Comparison, rows: pd.DataFrame) -> list[dict]:
    labels = c.labels(rows)
    out = []
    for label, r in zip(labels, rows.to_dict("records")):
        r = {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}  # NaN -> null
        out.append({"benchmark": r["benchmark"], "point": label, "a_median_s": r["median_s_a"],
                    "b_median_s": r["median_s_b"], "ratio": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                    "p_value": r["p_value"], "n_a": int(r["n_a"]), "n_b": int(r["n_b"]), "verdict": r["verdict"],
                    "note": r["note"]})
    for side, frame in (("A", c.only_a), ("B", c.only_b)):
        for b, label in zip(frame["benchmark"], c.labels(frame)):
            out.append({"benchmark": b, "point": label, "verdict": f"only in {side}"})
    return out


def _summary(c: Comparison) -> str:
    """Each verdict with its count, most frequent first (ties in the order the points first have them)."""
    codes, verdicts = pd.factorize(c.points["verdict"])  # verdicts in order of appearance
    counts = np.bincount(codes[codes >= 0], minlength=len(verdicts))
    parts = [f"{counts[k]} {verdicts[k]}" for k in np.argsort(-counts, kind="stable")]
    fallback = " and ".join(side for side, f in zip("AB", c.fallback) if f)
    return (f"{len(c.points)} matched points: " + ", ".join(parts)
            + f"; {len(c.only_a)} only in A, {len(c.only_b)} only in B"
            + (f" (CPU fallback in {fallback}: not a GPU result)" if fallback else ""))


def _environment_lines(c: Comparison, a: str, b: str) -> list[tuple[str, str, str]]:
    return [(k, str(va), str(vb)) for k, va, vb in c.environment]


def render_table(c: Comparison, a: str, b: str, limit: int | None, settings: Settings) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(f"[bold]A[/] {a}\n[bold]B[/] {b}")
    if c.environment:
        env = Table(title="environment differences", title_justify="left")
        for col in ("", "A", "B"):
            env.add_column(col)
        for row in _environment_lines(c, a, b):
            env.add_row(*row)
        out.print(env)
    else:
        out.print("same environment (GPU, driver, CUDA, torch, NCCL, world size)")
    rows = shown_rows(c, limit)
    t = Table(title=f"B against A: median time, {settings.confidence:.0%} CI of the ratio, Mann-Whitney p "
                    f"(alpha {settings.alpha:g}, min effect {settings.min_effect:.1%})", title_justify="left")
    for col in ("benchmark", "point", "A", "B", "B/A", "CI", "p", "n", "verdict"):
        t.add_column(col, justify="left" if col in ("benchmark", "point", "verdict") else "right")
    for r in records(c, rows):
        if r["verdict"].startswith("only in"):
            continue
        verdict = r["verdict"] + (f" ({r['note']})" if r["note"] else "")
        style = STYLE.get(r["verdict"])
        t.add_row(r["benchmark"], r["point"], _time(r["a_median_s"]), _time(r["b_median_s"]), _num(r["ratio"], ".3f"),
                  f"{_num(r['ci_low'], '.3f')}–{_num(r['ci_high'], '.3f')}" if r["ci_low"] is not None else "",
                  _num(r["p_value"], ".2g"), f"{r['n_a']}/{r['n_b']}",
                  f"[{style}]{verdict}[/]" if style else verdict)
    out.print(t)
    if len(rows) < len(c.points):
        out.print(f"… {len(c.points) - len(rows)} more matched points not shown (--all shows every one)")
    for side, frame in (("A", c.only_a), ("B", c.only_b)):
        if len(frame):
            labels = [f"{b} {p}" for b, p in zip(frame["benchmark"][:20], c.labels(frame.head(20)))]
            more = f" … and {len(frame) - 20} more" if len(frame) > 20 else ""
            out.print(f"[bold]only in {side}[/] ({len(frame)}): " + "; ".join(labels) + more)
    for note in c.notes:
        out.print(f"[yellow]note:[/] {note}")
    out.print(_summary(c))


def render_markdown(c: Comparison, a: str, b: str, limit: int | None) -> str:
    lines = [f"**A** `{a}` · **B** `{b}`", ""]
    if c.environment:
        lines += ["| environment | A | B |", "|---|---|---|"]
        lines += [f"| {k} | {va} | {vb} |" for k, va, vb in _environment_lines(c, a, b)] + [""]
    lines += ["| benchmark | point | A | B | B/A | 95% CI | p | verdict |", "|---|---|--:|--:|--:|--:|--:|---|"]
    marks = {SLOWER: "🔴 slower", FASTER: "🟢 faster"}
    rows = shown_rows(c, limit)
    for r in records(c, rows):
        if r["verdict"].startswith("only in"):
            continue
        ci = f"{_num(r['ci_low'], '.3f')}–{_num(r['ci_high'], '.3f')}" if r["ci_low"] is not None else ""
        verdict = marks.get(r["verdict"], r["verdict"]) + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {r['benchmark']} | {r['point']} | {_time(r['a_median_s'])} | {_time(r['b_median_s'])} | "
                     f"{_num(r['ratio'], '.3f')} | {ci} | {_num(r['p_value'], '.2g')} | {verdict} |")
    if len(rows) < len(c.points):
        lines.append(f"\n{len(c.points) - len(rows)} more matched points not shown.")
    for side, frame in (("A", c.only_a), ("B", c.only_b)):
        if len(frame):
            lines.append(f"\nOnly in {side}: {len(frame)} point(s).")
    lines += [""] + [f"> {note}" for note in c.notes] + ["", _summary(c)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    # the interpreter's and the libraries' own objects (hundreds of thousands once pandas, scipy
    # and rich are loaded) are none of this command's garbage: a full collection that walks them
    # costs a tenth of a second, so they sit out the command's collections
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        return _main(argv)
    finally:
        if freeze:
            gc.unfreeze()


def _main(argv: list[str]) -> int:
    parser = CommandParser(
        prog="hpcbench compare",
        description="Compare two runs point by point (joined on each benchmark's parameters) with a "
                    "Mann-Whitney U test on the raw samples and a CI for the ratio of medians.")
    parser.add_argument("run_a", type=Path, help="baseline: a results directory, its rows.jsonl, or an exported .parquet")
    parser.add_argument("run_b", type=Path, help="the run compared with the baseline")
    parser.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    parser.add_argument("--benchmark", action="append", help="only this family (repeatable)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    parser.add_argument("--min-effect", type=float, default=2.0, metavar="PCT",
                        help="smallest change that counts, in percent (default 2)")
    parser.add_argument("--fail-on-regression", type=float, metavar="PCT",
                        help="exit 1 if a point is significantly slower by PCT percent or more, or passed in A and fails in B")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with --fail-on-regression: pass points of A that B lacks, skipped or left with too "
                             "few samples (by default they fail the gate: a kernel that crashed before its row "
                             "must not pass CI)")
    parser.add_argument("--all", action="store_true", help="show every matched point (table, markdown)")
    parser.add_argument("--limit", type=int, default=50, help="rows shown in table/markdown (default 50)")
    args = parser.parse_args(argv)
    for flag, value, ok, accepted in (
            ("--alpha", args.alpha, 0 < args.alpha < 1, "a significance level between 0 and 1, e.g. 0.05"),
            ("--min-effect", args.min_effect, args.min_effect >= 0, "a percentage >= 0"),
            ("--fail-on-regression", args.fail_on_regression, (args.fail_on_regression or 0) >= 0, "a percentage >= 0"),
            ("--limit", args.limit, args.limit >= 1, "a number of rows >= 1")):
        if not ok:
            raise UserError(f"{flag} {value:g}: use {accepted}")
    settings = Settings(alpha=args.alpha, min_effect=args.min_effect / 100)
    from hpcbench.results.reader import load_run_samples, quietly

    frames, samples = [], []
    for path in (args.run_a, args.run_b):
        df, flat = quietly(load_run_samples, path, only=needed_columns(path))
        if args.benchmark:
            df = _only(df, args.benchmark, path)
        frames.append(df)
        samples.append(flat)
    c = compare_frames(frames[0], frames[1], settings, *samples)
    a, b = (f.attrs["metadata"].get("run_id", str(p)) for f, p in zip(frames, (args.run_a, args.run_b)))
    limit = None if args.all else args.limit
    if args.format == "table":
        render_table(c, a, b, limit, settings)
    elif args.format == "markdown":
        print(render_markdown(c, a, b, limit))
    elif args.format == "csv":
        pd.DataFrame(records(c, shown_rows(c, None))).to_csv(sys.stdout, index=False)
    else:
        doc = {"a": a, "b": b, "environment_differences": [{"field": k, "a": va, "b": vb} for k, va, vb in c.environment],
               "notes": c.notes, "points": records(c, shown_rows(c, None))}
        json.dump(doc, sys.stdout, indent=1, default=str)
        print()
    return _gate(c, args, settings.alpha) if args.fail_on_regression is not None else 0


def _gate(c, args, alpha: float) -> int:
    """--fail-on-regression: 1 when a point regressed, or (unless --allow-missing) was not measured in B."""
    if c.untestable():
        print(f"hpcbench: warning: {c.untestable()} matched point(s) could not be tested (too few, no or "
              "damaged samples): the gate cannot see a regression there", file=sys.stderr)
    bad = c.regressions(args.fail_on_regression, alpha)
    if len(bad):
        print(f"hpcbench: {len(bad)} point(s) regressed by ≥ {args.fail_on_regression:g}% "
              f"(or now fail their check)", file=sys.stderr)
    gone = _not_measured_in_b(c)
    if gone and not args.allow_missing:
        print(f"hpcbench: {len(gone)} point(s) measured in A have no measurement in B (missing, skipped or "
              f"too few samples), e.g. {gone[0]}; --allow-missing lets the gate pass them", file=sys.stderr)
    return 1 if len(bad) or (gone and not args.allow_missing) else 0


def _not_measured_in_b(c) -> list[str]:
    """'benchmark point (why)' for each point of A the gate cannot see in B."""
    thin = c.not_measured_in_b()
    out = [f"{b} {label} (missing in B)" for b, label in zip(c.only_a["benchmark"], c.labels(c.only_a))]
    out += [f"{b} {label} ({v if s == 'ok' else s} in B)" for b, label, s, v in
            zip(thin["benchmark"], c.labels(thin), thin["status_b"], thin["verdict"])]
    return out


def needed_columns(path: Path) -> set[str] | None:
    """The columns the join needs, when the run recorded its families' PARAMS (else all)."""
    from hpcbench.results.reader import read_metadata

    try:
        recorded = read_metadata(path).get("params") if path.is_dir() else None
    except UserError:
        return None
    if not recorded:
        return None
    return join_columns(recorded)


def _only(df: pd.DataFrame, names: list[str], path: Path) -> pd.DataFrame:
    have = set(df["benchmark"]) if "benchmark" in df.columns else set()
    if not have & set(names):
        raise UserError(f"{path}: no rows of {', '.join(names)} (it has: {', '.join(sorted(have)) or 'none'})")
    # rows keep their positions (the samples are found by position): other families are blanked
    kept = df.copy()
    kept.loc[~kept["benchmark"].isin(names), "benchmark"] = None
    kept.attrs = df.attrs
    return kept
