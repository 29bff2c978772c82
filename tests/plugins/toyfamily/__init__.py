"""A family that lives outside hpcbench: one module and one YAML file, found through
HPCBENCH_FAMILIES=toyfamily. It times a small exact sum and checks the answer first."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from hpcbench.analysis.blocks import Table
from hpcbench.analysis.plotting import Plot, finish
from hpcbench.family import Choice, Family, ReportSpec
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK
from hpcbench.tables import fmt, new_table, status_cell
from hpcbench.timing import time_fn


class Order(Choice):
    forward = "forward"
    backward = "backward"


@dataclass
class Config:
    sizes: list[int] = MISSING
    order: Order = MISSING
    pause_s: float = MISSING  # between points: lets a test stop a run at chosen moments


def validate(cfg: Config) -> None:
    if not cfg.sizes or min(cfg.sizes) < 1:
        from hpcbench.errors import UserError

        raise UserError("toy.sizes must list positive integers")


def run(cfg: Config, ctx):
    sizes = cfg.sizes if cfg.order == Order.forward else cfg.sizes[::-1]
    ctx.set_total(len(sizes))
    for n in sizes:
        row = {"n": n, "order": str(cfg.order)}
        if ctx.already_measured(row):
            continue
        values = list(range(1, n + 1))
        if sum(values) != n * (n + 1) // 2:
            yield {**row, "status": STATUS_FAILED, "reason": "wrong sum"}
            continue
        timing = time_fn(lambda: sum(values), ctx.device.torch_device, ctx.timing)
        yield {**row, "status": STATUS_OK, "total": sum(values), "timing_method": timing.method,
               "median_s": timing.stats.median_s, "samples_s": timing.samples_s}
        time.sleep(cfg.pause_s)


def table(rows: list[dict], fallback: bool):
    t = new_table("toy sums", fallback, "host clock", ["n", "status", "median us"], left=("status",))
    for r in rows:
        t.add_row(fmt(r["n"]), status_cell(r), fmt(r.get("median_s") and r["median_s"] * 1e6, ".2f"))
    return t


def plot_times(df, out_dir: Path) -> Plot:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    series = []
    for run, d in df.groupby("run", sort=False):
        ax.plot(d["n"], d["median_s"], marker="o", label=str(run))
        series.append(str(run))
    return finish(fig, "toy sums", False, out_dir / "toy.png", series)


REPORT = ReportSpec(title="Toy sums", about="Time to sum 1..n.", required=("n", "median_s"), plots=(plot_times,),
                    tables=lambda d: [Table(d[["n", "median_s"]].reset_index(drop=True))], plot_files=("toy.png",))

FAMILY = Family(name="toy", summary="sums a list (test family)", config=Config, run=run, params=("n", "order"),
                validate=validate, table=table, report=REPORT, smoke=("toy.sizes=[10,20]",),
                planned=lambda cfg, kind: [{"n": n, "order": str(cfg.order)} for n in cfg.sizes])
