"""What `hpcbench fleet` shows: the terminal table (node x metric, outliers in red) and the report
directory (fleet.md and fleet.html from the same blocks, fleet.csv with every cell, and one strip
plot per metric: the nodes' values, the fleet median and the threshold, outliers marked)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from hpcbench.analysis.blocks import Heading, Image, Para, Table, to_html, to_markdown
from hpcbench.analysis.fleet import BOTH, HIGHER, LOWER, MAD_SCALE, Fleet
from hpcbench.api.errors import UserError

TABLE_NODES = 40  # terminal rows before "--all"
TABLE_METRICS = 10  # terminal and report columns; fleet.csv has every metric
MAX_PLOTS = 24  # strip plots written (metrics with outliers first); the report says what was left out
MAX_LABELS = 20  # outlier names written into one plot
DPI = 100


# ---- shared ordering --------------------------------------------------------------------------

def metric_order(fleet: Fleet) -> list[int]:
    """Metrics with outliers first (most flagged first), then the others in their order."""
    flagged = fleet.outlier.sum(axis=0)
    return sorted(range(len(fleet.metrics)), key=lambda j: (-int(flagged[j]), j))


def node_order(fleet: Fleet) -> list[int]:
    """Flagged nodes first (most flags first), then by name."""
    flags = fleet.outlier.sum(axis=1)
    return sorted(range(len(fleet.nodes)), key=lambda i: (-int(flags[i]), fleet.nodes[i].name))


def _time_scale(values: np.ndarray) -> tuple[float, str]:
    finite = values[np.isfinite(values)]
    typical = float(np.median(finite)) if finite.size else 1.0
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if typical >= scale:
            return scale, unit
    return 1e-9, "ns"


def _cell(fleet: Fleet, i: int, j: int, scale: float) -> str:
    if fleet.failed[i, j]:
        return "failed"
    v = fleet.values[i, j]
    return "" if np.isnan(v) else f"{v / scale:.4g}"


def _unit(fleet: Fleet, j: int) -> tuple[float, str]:
    m = fleet.metrics[j]
    return _time_scale(fleet.values[:, j]) if m.unit == "s" else (1.0, m.unit)


def _header(fleet: Fleet, j: int) -> str:
    m = fleet.metrics[j]
    return f"{m.name} ({_unit(fleet, j)[1]})" if _unit(fleet, j)[1] else m.name


def summary(fleet: Fleet) -> str:
    flagged = int(fleet.outlier.any(axis=1).sum())
    return (f"{len(fleet.nodes)} nodes, {len(fleet.metrics)} metrics, {int(fleet.outlier.sum())} outlier value(s) "
            f"on {flagged} node(s) (robust z beyond {fleet.threshold:g} in the bad direction, or a failed check)")


# ---- terminal ---------------------------------------------------------------------------------

def print_table(fleet: Fleet, limit: int | None = TABLE_NODES) -> None:
    from rich.table import Table

    from hpcbench.api.tables import console

    out = console()
    nodes, cols = node_order(fleet), metric_order(fleet)[:TABLE_METRICS]
    first = fleet.nodes[0].metadata
    t = Table(title=f"fleet: {len(fleet.nodes)} nodes of {' + '.join(fleet.nodes[0].suite)} on {fleet.nodes[0].device}"
                    + (" [yellow](CPU fallback: not performance numbers)[/]" if first.get("fallback") else ""),
              title_justify="left")
    t.add_column("node")
    for j in cols:
        t.add_column(_header(fleet, j), justify="right")
    t.add_column("outliers", justify="right")
    units = {j: _unit(fleet, j)[0] for j in cols}
    shown = nodes if limit is None else nodes[:limit]
    for i in shown:
        cells = []
        for j in cols:
            text = _cell(fleet, i, j, units[j])
            cells.append(f"[bold red]{text}[/]" if fleet.outlier[i, j] else text)
        n = int(fleet.outlier[i].sum())
        t.add_row(fleet.nodes[i].name, *cells, f"[bold red]{n}[/]" if n else "0")
    out.print(t)
    if len(shown) < len(nodes):
        out.print(f"… {len(nodes) - len(shown)} more nodes, none flagged (--all lists every node)")
    if len(cols) < len(fleet.metrics):
        out.print(f"… {len(fleet.metrics) - len(cols)} more metrics in fleet.csv")
    for r in fleet.outliers()[:50]:
        out.print(f"[bold red]outlier[/] {r['node']}: {r['reason']}")
    for note in fleet.notes:
        out.print(f"[yellow]note:[/] {note}")
    out.print(summary(fleet))


# ---- report directory -------------------------------------------------------------------------

def cells_frame(fleet: Fleet) -> pd.DataFrame:
    """Every (node, metric): value, fleet median, robust z, rank, outlier and reason (fleet.csv)."""
    n, m = fleet.values.shape
    reasons = {(r["node"], r["metric"]): r["reason"] for r in fleet.outliers()}
    node_names = np.repeat([x.name for x in fleet.nodes], m)
    metric_names = np.tile([x.name for x in fleet.metrics], n)
    return pd.DataFrame({
        "node": node_names, "run_id": np.repeat([x.metadata.get("run_id") for x in fleet.nodes], m),
        "path": np.repeat([str(x.path) for x in fleet.nodes], m), "metric": metric_names,
        "unit": np.tile([x.unit for x in fleet.metrics], n), "better": np.tile([x.better for x in fleet.metrics], n),
        "value": fleet.values.ravel(), "failed": fleet.failed.ravel(), "fleet_median": np.tile(fleet.median, n),
        "robust_z": fleet.z.ravel(), "rank": fleet.rank.ravel(), "outlier": fleet.outlier.ravel(),
        "reason": [reasons.get(k, "") for k in zip(node_names, metric_names)],
    })


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "metric"


def strip_plot(fleet: Fleet, j: int, path: Path) -> Path:
    """The nodes' values of metric j on one axis (jittered vertically so none hides another), the
    fleet median, the threshold on the bad side, outliers in red with their names."""
    from matplotlib.figure import Figure

    m = fleet.metrics[j]
    scale, unit = _unit(fleet, j)
    x = fleet.values[:, j] / scale
    present = ~np.isnan(x)
    flagged = fleet.outlier[:, j] & present
    # deterministic jitter (golden-ratio sequence): the same fleet draws the same picture
    y = ((np.arange(len(x)) * 0.6180339887) % 1.0) - 0.5
    fig = Figure(figsize=(7, 2.8))
    ax = fig.add_subplot()
    ax.scatter(x[present & ~flagged], y[present & ~flagged], s=14, color="C0", alpha=0.7, label="node")
    if flagged.any():
        ax.scatter(x[flagged], y[flagged], s=30, color="red", marker="x", label="outlier")
        for i in np.flatnonzero(flagged)[:MAX_LABELS]:
            ax.annotate(fleet.nodes[i].name, (x[i], y[i]), fontsize=7, color="red", xytext=(3, 3),
                        textcoords="offset points")
    med = fleet.median[j] / scale
    ax.axvline(med, color="gray", linewidth=1, label="fleet median")
    limit = fleet.threshold * fleet.scale[j] / scale
    if np.isfinite(limit):
        sides = {HIGHER: [-1], LOWER: [1], BOTH: [-1, 1]}[m.better]
        for k, side in enumerate(sides):
            ax.axvline(med + side * limit, color="red", linestyle="--", linewidth=0.8,
                       label=f"|z| = {fleet.threshold:g}" if k == 0 else None)
    ax.set_yticks([])
    ax.set_ylim(-0.8, 0.8)
    ax.set_xlabel(f"{m.name}" + (f" ({unit})" if unit else "") + {HIGHER: ", higher is better",
                                                                  LOWER: ", lower is better", BOTH: ""}[m.better])
    ax.legend(fontsize=8, loc="best")
    failed = int(fleet.failed[:, j].sum())
    title = f"{m.name}: {int(present.sum())} nodes" + (f", {failed} failed its check" if failed else "")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def write(fleet: Fleet, out_dir: Path) -> Path:
    """fleet.md, fleet.html, fleet.csv and the strip plots into `out_dir`; returns fleet.md."""
    out_dir = _report_dir(out_dir)
    cells_frame(fleet).to_csv(out_dir / "fleet.csv", index=False)
    blocks = [*_intro(fleet), *_outlier_blocks(fleet), *_node_blocks(fleet), *_plot_blocks(fleet, out_dir)]
    for note in fleet.notes:
        blocks.append(Para(note))
    md = out_dir / "fleet.md"
    md.write_text(to_markdown(blocks), encoding="utf-8")
    (out_dir / "fleet.html").write_text(to_html(blocks, f"hpcbench fleet: {len(fleet.nodes)} nodes"), encoding="utf-8")
    return md


def _report_dir(out_dir: Path) -> Path:
    """The report directory, made if need be, without the strip plots of an earlier report."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the report directory ({exc.strerror})") from None
    for old in out_dir.glob("fleet-*.png"):  # a plot of an earlier report would be stale
        old.unlink()
    return out_dir


def _intro(fleet: Fleet) -> list:
    """The title, what was compared, and how a node is judged an outlier."""
    first = fleet.nodes[0]
    blocks: list = [
        Heading(1, f"hpcbench fleet: {len(fleet.nodes)} nodes"),
        Para(f"Family: {' + '.join(first.suite)}. Device: {first.device}. " + summary(fleet) + "."),
        Para(f"Per metric, each node's robust z = (value - fleet median) / ({MAD_SCALE} x MAD); where MAD is 0, "
             "1.253314 x the mean absolute deviation. A node is an outlier beyond the threshold "
             f"({fleet.threshold:g}; Iglewicz-Hoaglin's 3.5 by default) in the bad direction only (a longer time, "
             "a lower rate), or when its point failed its check. Rank 1 is the best node. Every cell is in fleet.csv."),
    ]
    if first.metadata.get("fallback"):
        blocks.append(Para("CPU fallback: these are not performance numbers; the ranking only exercises the "
                           "analysis.", warning=True))
    return blocks


def _outlier_blocks(fleet: Fleet) -> list:
    """The outliers, the first 100 of them in a table."""
    outliers = fleet.outliers()
    if not outliers:
        return [Heading(2, "Outliers"), Para("None: every node is within the threshold on every metric.")]
    table = pd.DataFrame([{"node": r["node"], "metric": r["metric"], "value": r["value"], "unit": r["unit"],
                           "fleet median": r["median"], "robust z": r["z"], "reason": r["reason"]}
                          for r in outliers[:100]])
    note = f"{len(outliers) - 100} more in fleet.csv." if len(outliers) > 100 else None
    return [Heading(2, "Outliers"), Table(table, note)]


def _node_blocks(fleet: Fleet) -> list:
    """The nodes in rank order against the first metrics, outlying cells marked."""
    nodes, cols = node_order(fleet), metric_order(fleet)[:TABLE_METRICS]
    grid = pd.DataFrame({"node": [fleet.nodes[i].name for i in nodes[:TABLE_NODES]]})
    for j in cols:
        scale = _unit(fleet, j)[0]
        grid[_header(fleet, j)] = [_cell(fleet, i, j, scale) + (" ⚠" if fleet.outlier[i, j] else "")
                                   for i in nodes[:TABLE_NODES]]
    grid["outliers"] = [int(fleet.outlier[i].sum()) for i in nodes[:TABLE_NODES]]
    left = []
    if len(nodes) > TABLE_NODES:
        left.append(f"{len(nodes) - TABLE_NODES} more nodes")
    if len(fleet.metrics) > len(cols):
        left.append(f"{len(fleet.metrics) - len(cols)} more metrics")
    return [Heading(2, "Nodes"), Table(grid, ("; ".join(left) + " in fleet.csv.") if left else None)]


def _plot_blocks(fleet: Fleet, out_dir: Path) -> list:
    """A strip plot per metric (metrics with outliers first, up to MAX_PLOTS), written to `out_dir`."""
    blocks: list = [Heading(2, "Strip plots")]
    plotted = metric_order(fleet)[:MAX_PLOTS]
    for j in plotted:
        name = f"fleet-{j + 1:03d}-{_slug(fleet.metrics[j].name)}.png"
        strip_plot(fleet, j, out_dir / name)
        blocks.append(Image(name, f"{fleet.metrics[j].name} across nodes"))
    if len(fleet.metrics) > len(plotted):
        left_out = [j for j in range(len(fleet.metrics)) if j not in set(plotted)]
        flagged = sum(bool(fleet.outlier[:, j].any()) for j in left_out)
        blocks.append(Para(f"{len(left_out)} more metrics not plotted ({flagged} of them with an outlier); "
                           "every value is in fleet.csv."))
    return blocks
