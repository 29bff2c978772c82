"""`hpcbench fleet RUN... [--out DIR] [--fail-on-outlier] [--threshold Z]`: the command line of
`hpcbench.analysis.fleet` (the analysis) and `fleet_report` (its table and report directory)."""

from __future__ import annotations

import sys
from pathlib import Path

from hpcbench.analysis import fleet_report
from hpcbench.analysis.fleet import DEFAULT_THRESHOLD, analyse
from hpcbench.api.errors import CommandParser, UserError


def main(argv: list[str]) -> int:
    parser = CommandParser(
        prog="hpcbench fleet",
        description="Rank the nodes of a fleet, one run per node (the same family on the same kind of device), "
                    "and flag the outliers: a robust z-score per metric, in the bad direction only.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                        help="one run per node: a results directory, its rows.jsonl, or an exported .parquet")
    parser.add_argument("--out", type=Path, metavar="DIR", default=Path("fleet-report"),
                        help="report directory: fleet.md, fleet.html, fleet.csv, a strip plot per metric "
                             "(default: fleet-report)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, metavar="Z",
                        help=f"robust z beyond which a node is an outlier (default {DEFAULT_THRESHOLD}, Iglewicz-Hoaglin)")
    parser.add_argument("--fail-on-outlier", action="store_true", help="exit 1 when any node is flagged")
    parser.add_argument("--all", action="store_true", help="list every node in the terminal table")
    args = parser.parse_args(argv)
    try:
        if not args.threshold > 0:
            raise UserError("fleet: --threshold must be positive")
        fleet = analyse(args.runs, args.threshold)
        fleet_report.print_table(fleet, limit=None if args.all else fleet_report.TABLE_NODES)
        md = fleet_report.write(fleet, args.out)
    except UserError as exc:  # one line, status 2, whether called by the CLI or directly
        print(f"hpcbench: error: {exc}", file=sys.stderr)
        return 2
    print(f"fleet report: {md}")
    flagged = int(fleet.outlier.any(axis=1).sum())
    if args.fail_on_outlier and flagged:
        print(f"hpcbench: {flagged} node(s) flagged as outliers", file=sys.stderr)
        return 1
    return 0
