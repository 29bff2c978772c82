"""`hpcbench simulate`: predict schedules' timelines from per-action costs, with no processes.

    hpcbench simulate --schedule 1f1b,dualpipev,dualpipe --ranks 8 --microbatches 32 \
        --F 1 --B 2 --W 1 --FB 2.4 [--p2p-latency 0.01] [--costs-from RUN_DIR] [--out DIR]

Costs are in milliseconds. `--costs-from` takes the mean costs a `benchmark=pipeline` run measured
(for the same schedule when the run has it); explicit flags override them. Writes one
Chrome-trace JSON per schedule and a Gantt chart comparing them to --out.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import statistics
import time
from pathlib import Path

from hpcbench.api.errors import CommandParser, UserError
from hpcbench.pipeline.schedules import SCHEDULES, build, check_name
from hpcbench.pipeline.simulator import Costs, Deadlock, closed_form_bubble, simulate

_KINDS = ("F", "B", "I", "W")


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="hpcbench simulate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedule", action="append", required=True,
                   help=f"schedule(s), comma-separated or repeated: {', '.join(SCHEDULES)}")
    p.add_argument("--ranks", type=int, required=True, help="pipeline ranks (PP)")
    p.add_argument("--microbatches", type=int, required=True, help="microbatches per step (the whole batch)")
    for kind, help_ in (("F", "forward"), ("B", "full backward"), ("I", "backward-input (default B - W)"),
                        ("W", "backward-weight (default B / 2)"), ("FB", "overlapped F&B pair (default F + B)")):
        p.add_argument(f"--{kind}", type=float, help=f"{help_} ms")
    p.add_argument("--p2p-latency", type=float, help="ms per point-to-point hop")
    p.add_argument("--p2p-bandwidth", type=float, help="GB/s of a point-to-point link")
    p.add_argument("--activation-bytes", type=float, help="bytes sent per microbatch per stage boundary")
    p.add_argument("--costs-from", type=Path, help="a benchmark=pipeline run directory: use its measured mean costs")
    p.add_argument("--out", type=Path,
                   help="where traces and the Gantt chart go (default: RESULTS_ROOT/simulate-<time>)")
    p.add_argument("--results-root", type=Path, default=Path("results"),
                   help="the folder runs are written to (as results_root for a run; default: results)")
    return p


def costs_from_run(run_dir: Path, schedule: str) -> dict:
    """Mean measured costs (ms) of a pipeline run: the row for `schedule`, else all ok rows."""
    from hpcbench.results import load_run

    df = load_run(run_dir)
    if "schedule" not in df.columns:
        raise UserError(f"{run_dir}: not a pipeline run (no schedule rows)")
    ok = df[(df["schedule"].notna()) & (df["status"] == "ok")]
    if ok.empty:
        raise UserError(f"{run_dir}: the pipeline run has no completed schedule")
    rows = ok[ok["schedule"] == schedule] if (ok["schedule"] == schedule).any() else ok
    per_kind: dict[str, list[float]] = {}
    pairs, dispatch, hops = [], [], []
    for r in rows.to_dict("records"):
        for kinds in (r.get("measured_costs_ms") or {}).values():
            for k, v in kinds.items():
                per_kind.setdefault(k, []).append(v)
        if r.get("fb_pair_ms") is not None and not _nan(r["fb_pair_ms"]):
            pairs.append(r["fb_pair_ms"])
        dispatch.append(r.get("dispatch_ms") or 0.0)
        hop = r.get("p2p_latency_in_schedule_ms")
        hops.append(r["p2p_latency_ms"] if hop is None or _nan(hop) else hop)
    out = {k: statistics.fmean(v) for k, v in per_kind.items()}
    if pairs:
        out["FB"] = statistics.fmean(pairs)
    out["dispatch"] = statistics.fmean(dispatch)
    out["p2p_latency"] = statistics.fmean(hops)
    return out


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _costs(args, schedule: str) -> Costs:
    base = costs_from_run(args.costs_from, schedule) if args.costs_from else {}
    given = {k: getattr(args, k) for k in (*_KINDS, "FB")}
    for k, v in given.items():
        if v is not None:
            if not v > 0:
                raise UserError(f"--{k} must be positive (ms)")
            base[k] = v
    costs = Costs(F=base.get("F", 1.0), B=base.get("B", 2.0), I=base.get("I"), W=base.get("W"), FB=base.get("FB"),
                  dispatch=base.get("dispatch", 0.0),
                  p2p_latency=args.p2p_latency if args.p2p_latency is not None else base.get("p2p_latency", 0.0))
    if args.p2p_bandwidth is not None or args.activation_bytes is not None:
        if not (args.p2p_bandwidth or 0) > 0 or not (args.activation_bytes or 0) > 0:
            raise UserError("--p2p-bandwidth and --activation-bytes go together and must be positive")
        costs.p2p_bandwidth = args.p2p_bandwidth * 1e9 / 1e3  # bytes per ms
        costs.activation_bytes = args.activation_bytes
    if costs.p2p_latency < 0:
        raise UserError("--p2p-latency must be >= 0")
    if costs.of("W", 0) >= costs.of("B", 0) and args.I is None:
        raise UserError("--W must be smaller than --B (the input part of a split backward is B - W)")
    return costs


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from hpcbench.pipeline.trace import write_gantt, write_trace

    args = _parser().parse_args(argv)
    names = [n for item in args.schedule for n in item.split(",") if n]
    for name in names:
        try:
            check_name(name)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    # beside the runs, not in a folder of its own wherever the command was started
    out = args.out or args.results_root / _dt.datetime.now().strftime("simulate-%Y%m%d-%H%M%S-%f")
    table = Table(title=f"Simulated pipeline schedules: {args.ranks} ranks, {args.microbatches} microbatches "
                        f"(times in ms)", title_justify="left")
    for col in ("schedule", "stages", "step", "bubble (mean)", "bubble (worst rank)", "idle (worst)",
                "closed form", "peak activations", "params/rank", "simulated in"):
        table.add_column(col, justify="left" if col == "schedule" else "right")
    timelines = {}
    for name in names:
        try:
            schedule = build(name, args.ranks, args.microbatches)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        costs = _costs(args, name)
        t0 = time.perf_counter()
        try:
            tl = simulate(schedule, costs)
        except Deadlock as exc:
            raise UserError(str(exc)) from None
        took = time.perf_counter() - t0
        timelines[name] = tl
        closed = closed_form_bubble(name, schedule.num_stages if name == "dualpipev" else args.ranks, costs)
        worst = max(tl.bubble_ratio(r) for r in tl.busy)
        table.add_row(name, str(schedule.num_stages), f"{tl.makespan:.4g}", f"{tl.mean_bubble_ratio:.1%}",
                      f"{worst:.1%}", f"{tl.max_bubble:.4g}", "" if closed is None else f"{closed:.4g}",
                      str(max(tl.peak_activations.values())), f"{schedule.params_per_rank:g}x", f"{took:.2f} s")
        write_trace(tl, f"{name} simulated", out / f"{name}.json", unit_s=1e-3)
    gantt = write_gantt(timelines, out / "gantt.png", unit="ms", scale=1.0)
    console = Console(width=200)
    console.print(table)
    console.print(f"traces: {out}/<schedule>.json (open in ui.perfetto.dev or chrome://tracing); chart: {gantt}",
                  highlight=False)
    return 0
