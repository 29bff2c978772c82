"""`hpcbench project RUN_DIR --world-size N`: the alpha-beta model of a stored collectives run,
projected to other world sizes without running anything."""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcbench.benchmarks.collectives.model import model_rows
from hpcbench.benchmarks.collectives.table import table
from hpcbench.api.errors import CommandParser, UserError
from hpcbench.api.tables import console


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="hpcbench project",
        description="Fit the alpha-beta model to a stored collectives run and project it to other world sizes "
                    "(assumes ring algorithms and the same links: a projection, not a measurement).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--world-size", type=int, action="append", required=True, dest="world_sizes",
                        help="world size to project to (repeatable)")
    parser.add_argument("--collective", action="append", dest="names", help="only these collectives (repeatable)")
    return parser


def project_main(argv: list[str]) -> int:
    """RUN --world-size N ...: fit the alpha-beta model to a collectives run and project it to other worlds"""
    from hpcbench.results import load_run

    args = _parser().parse_args(argv)
    if min(args.world_sizes) < 1:
        raise UserError("--world-size must be positive")
    df = load_run(args.run_dir)
    if "record" not in df.columns or not (df["record"] == "measurement").any():
        raise UserError(f"{args.run_dir}: no collectives measurements in this run")
    rows = df[df["record"] == "measurement"].astype(object).where(df.notna(), None).to_dict("records")
    names = list(dict.fromkeys(r["collective"] for r in rows))
    unknown = sorted(set(args.names or []) - set(names))
    if unknown:
        raise UserError(f"collective(s) {', '.join(unknown)} not in this run (it has: {', '.join(names)})")
    console().print(table(list(model_rows(rows, args.names or names, args.world_sizes)), fallback=False))
    return 0
