"""`hpcbench show` and `hpcbench export`: the commands that read one stored run."""

from __future__ import annotations

from pathlib import Path

from hpcbench.api.errors import CommandParser, UserError


def show_main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from hpcbench.results import load_run
    from hpcbench.results.reader import quietly
    from hpcbench.core.runner import print_tables

    parser = CommandParser(prog="hpcbench show", description="Print a stored run's environment and tables.")
    parser.add_argument("run", type=Path, help="a results directory, its rows.jsonl, or an exported .parquet")
    parser.add_argument("--benchmark", action="append", help="only this family (repeatable)")
    args = parser.parse_args(argv)
    df = quietly(load_run, args.run)
    meta = df.attrs["metadata"]
    suite = [n for n in meta.get("suite") or sorted(set(df.get("benchmark", [])))]
    if args.benchmark:
        unknown = sorted(set(args.benchmark) - set(suite))
        if unknown:
            raise UserError(f"{args.run}: no {', '.join(unknown)} in this run (it has: {', '.join(suite)})")
        suite = [n for n in suite if n in args.benchmark]
    env = Table(title=f"run {meta.get('run_id')}", title_justify="left", show_header=False)
    for key in ("status", "error", "started_at", "finished_at", "device_name", "gpu_name", "gpu_count", "driver_version",
                "cuda_runtime", "nccl_version", "torch_version", "triton_version", "world_size", "hostname",
                "slurm_job_id", "git_sha", "points"):
        if meta.get(key) not in (None, ""):
            env.add_row(key, str(meta[key]))
    Console(width=200).print(env)
    records = df.astype(object).where(df.notna(), None).to_dict("records") if len(df) else []
    rows = {name: [r for r in records if r.get("benchmark") == name] for name in suite}
    print_tables(rows, bool(meta.get("fallback")))
    _print_anchors(df[df["benchmark"].isin(suite)] if "benchmark" in df.columns else df, meta)
    return 0


def _print_anchors(df, meta: dict) -> None:
    """After the family tables: the points that match a published anchor (device and configuration),
    with the figure, its source and the point's % of it. Nothing when no point matches."""
    from rich.console import Console
    from rich.table import Table

    from hpcbench.models import anchors

    from hpcbench.api import registry
    from hpcbench.api.tables import fmt

    # a family whose rows carry their own anchor columns (the fingerprint) showed them in its table
    own = [c for c in ("anchor_config", "pct_of_anchor") if c in df.columns]
    if own and "benchmark" in df.columns:
        judged = df.loc[df[own].notna().any(axis=1), "benchmark"].unique()
        df = df[~df["benchmark"].isin(judged)]
    params = {name: tuple(meta.get("params", {}).get(name) or registry.params_of(name) or ())
              for name in (df["benchmark"].dropna().unique() if "benchmark" in df.columns else ())}
    hits = anchors.listing(df, meta.get("gpu_name") or meta.get("device_name"), params)
    if not hits:
        return
    t = Table(title="published anchors (matched by device and configuration)", title_justify="left")
    for col in ("benchmark", "point", "metric", "measured", "anchor", "unit", "% of anchor", "source"):
        t.add_column(col, justify="right" if col in ("measured", "anchor", "% of anchor") else "left")
    for h in hits:
        t.add_row(h["benchmark"], h["point"], h["metric"], fmt(h["measured"], ".4g"), fmt(h["anchor"], ".4g"), h["unit"],
                  fmt(h["pct"], ".1f"), h["source"] + (f" ({h['note']})" if h["note"] else ""))
    Console(width=200).print(t)


def export_main(argv: list[str]) -> int:
    from hpcbench.results import columnar, load_run
    from hpcbench.results.reader import quietly
    from hpcbench.results.schema import SCHEMA_VERSION

    parser = CommandParser(prog="hpcbench export",
                                     description="Write a run (rows and metadata) as one .parquet file that "
                                                 "compare, report and show read like the run itself.")
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path, help="the file to write (.parquet)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".parquet" or args.out.is_dir():
        raise UserError(f"{args.out}: name a .parquet file to write (exports are single .parquet files)")
    if not args.out.parent.is_dir():
        raise UserError(f"{args.out}: its folder {args.out.parent} does not exist (create it, or name a file in "
                        "an existing folder)")
    df = quietly(load_run, args.run)
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    # the rows were upgraded on load: the file holds the current schema
    metadata = {**df.attrs["metadata"], "schema_version": SCHEMA_VERSION}
    columnar.write_table(columnar.rows_table(rows, metadata=metadata), args.out)
    print(f"{args.out}: {len(rows)} rows of run {df.attrs['metadata'].get('run_id')}")
    return 0
