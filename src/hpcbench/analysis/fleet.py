"""`hpcbench fleet RUN... [--out DIR] [--fail-on-outlier] [--threshold Z]`: rank the nodes of a fleet.

Each RUN is one node's run of the same benchmark family on the same kind of device (typically the
`fingerprint`, one job-array task per node: slurm/fleet.sbatch). Per metric the nodes are ranked
and each gets a robust z-score against the fleet:

  z = (x - median) / (1.4826 * MAD)       MAD = median |x - median| over the nodes

(1.4826 * MAD estimates the standard deviation of normal data, so z reads like a z-score that a few
bad nodes cannot inflate). When more than half the nodes report the same value, MAD is 0; the
scale falls back to 1.253314 * the mean absolute deviation from the median (the same consistency
for normal data), and when that is 0 too every node equals the median and z is 0.

A node is an outlier on a metric when |z| exceeds the threshold (default 3.5: Iglewicz and
Hoaglin's cut-off for the modified z-score, "How to Detect and Handle Outliers", 1993) in the bad
direction only: a longer time, a lower throughput. A metric whose direction is not known (neither a
time nor a rate, and no `higher_is_better` in its rows) is flagged both ways. A node whose point
failed its check is an outlier on that metric whatever its number. With two nodes no z can pass
3.5 (each sits 0.674 from the median): two nodes are ranked, never flagged.

Metrics: rows that name their metric (`metric` and `value` columns: the fingerprint's summary
lines) when the runs have any; otherwise every measured point's median time (the family's
parameters name it). Reading is columnar (rows.arrow when current) and every statistic is computed
over a nodes x metrics matrix, so a thousand nodes take about as long as reading them.

Exit status: 0, or 1 with --fail-on-outlier when any node is flagged; 2 for a user error (runs of
different families or devices, a single node, a path that is not a run).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hpcbench.api.errors import UserError

DEFAULT_THRESHOLD = 3.5  # Iglewicz & Hoaglin (1993)
MAD_SCALE = 1.4826  # 1 / Phi^-1(3/4): MAD -> standard deviation for normal data
MEAN_AD_SCALE = 1.253314  # sqrt(pi / 2): mean absolute deviation -> standard deviation for normal data
HIGHER, LOWER, BOTH = "higher", "lower", "both"  # which way is better
_RATE_UNITS = ("/s", "gbps", "tflops", "flops")
_TIME_UNITS = {"s", "ms", "us", "µs", "ns"}
# the columns metrics are read from; the families' parameters are added per run
_BASE_COLUMNS = ("benchmark", "status", "reason", "record", "metric", "value", "unit", "higher_is_better", "median_s")


@dataclass
class NodeRun:
    """One node's run: where it is, what it is, and its rows (columnar, only the columns used)."""

    path: Path
    metadata: dict
    table: pa.Table  # noqa: F821 - pyarrow, imported where used
    name: str = ""

    @property
    def suite(self) -> tuple[str, ...]:
        """The families the run was asked for (its metadata), else those its rows name."""
        if self.metadata.get("suite"):
            return tuple(self.metadata["suite"])
        if "benchmark" in self.table.column_names:
            return tuple(dict.fromkeys(v for v in self.table.column("benchmark").to_pylist() if v))
        return ()

    @property
    def device(self) -> str:
        return str(self.metadata.get("gpu_name") or self.metadata.get("device_name") or "unknown device")


@dataclass
class Metric:
    name: str
    unit: str
    better: str  # HIGHER, LOWER or BOTH


@dataclass
class Fleet:
    """Every node's value of every metric, as a matrix, with the statistics across nodes."""

    nodes: list[NodeRun]
    metrics: list[Metric]
    values: np.ndarray  # nodes x metrics, NaN where a node has no ok value
    failed: np.ndarray  # nodes x metrics, True where the node's point failed its check
    failure: dict = field(default_factory=dict)  # (node, metric) -> the failed row's reason
    threshold: float = DEFAULT_THRESHOLD
    median: np.ndarray | None = None  # per metric
    scale: np.ndarray | None = None  # per metric: 1.4826 MAD (or the fallback); inf when all equal
    z: np.ndarray | None = None  # nodes x metrics
    rank: np.ndarray | None = None  # nodes x metrics, 1 = best; 0 where the node has no value
    outlier: np.ndarray | None = None  # nodes x metrics
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def outliers(self) -> list[dict]:
        """One record per (node, metric) flagged, with its reason; worst first."""
        out = []
        for i, j in zip(*np.nonzero(self.outlier)):
            m = self.metrics[j]
            if self.failed[i, j]:
                reason = f"{m.name}: failed its check ({self.failure.get((i, j)) or 'no reason recorded'})"
                z = None
            else:
                z = float(self.z[i, j])
                reason = (f"{m.name} = {_num(self.values[i, j])} {m.unit} against a node median of "
                          f"{_num(self.median[j])} (z = {z:+.1f}, {'lower' if m.better == HIGHER else 'higher'} is worse)"
                          if m.better != BOTH else
                          f"{m.name} = {_num(self.values[i, j])} {m.unit} against a node median of "
                          f"{_num(self.median[j])} (z = {z:+.1f})")
            out.append({"node": self.nodes[i].name, "run": self.nodes[i].metadata.get("run_id"), "metric": m.name,
                        "unit": m.unit, "value": None if self.failed[i, j] else float(self.values[i, j]),
                        "median": float(self.median[j]), "z": z, "reason": reason})
        return sorted(out, key=lambda r: (r["z"] is not None, -abs(r["z"] or 0)))


def _num(x) -> str:
    return f"{x:.4g}"


# ---- reading ----------------------------------------------------------------------------------

def read_node(path: Path | str) -> NodeRun:
    """A run's metadata and its rows as an Arrow table (the columnar copy when it is current; the
    log otherwise), without building a Python object per row where the store is columnar."""
    import pyarrow as pa

    from hpcbench.results import columnar, reader
    from hpcbench.results.schema import SCHEMA_VERSION

    path = Path(path)
    source, metadata, damage = reader.open_run(path)  # the reader's own choice of log or columnar copy
    if metadata.get("schema_version") != SCHEMA_VERSION:  # an older run (or a newer one): the reader decides
        df = reader.quietly(reader.load_run, path, as_lists=False)
        keep = [c for c in df.columns if df[c].map(lambda v: not isinstance(v, (list, dict, np.ndarray))).all()]
        return NodeRun(path=path, metadata=metadata, table=pa.Table.from_pandas(df[keep], preserve_index=False))
    for message in damage:  # a cut last line, corrupt lines: said once, and the rest is used
        print(f"hpcbench: warning: {message}", file=sys.stderr)
    table = columnar.rows_table(source) if isinstance(source, list) else columnar.read_table(source)
    return NodeRun(path=path, metadata=metadata, table=table)


def read_fleet(paths: list[Path | str]) -> list[NodeRun]:
    """Every node's run, named (node name from the metadata, made unique), in the order given."""
    nodes = [read_node(p) for p in paths]
    _name_nodes(nodes)
    return nodes


def _name_nodes(nodes: list[NodeRun]) -> None:
    """SLURM's node name (else the hostname) recorded in each run; the run id is added where two
    runs share one (the same host measured twice, or every task of a single-host test cluster)."""
    base = [str(n.metadata.get("node_name") or n.metadata.get("hostname") or n.path.name) for n in nodes]
    counts = pd.Series(base).value_counts()
    seen: dict[str, int] = {}
    for n, b in zip(nodes, base):
        name = b if counts[b] == 1 else f"{b} ({n.metadata.get('run_id') or n.path.name})"
        seen[name] = seen.get(name, 0) + 1
        n.name = name if seen[name] == 1 else f"{name} #{seen[name]}"


# ---- checks -----------------------------------------------------------------------------------

def _few(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f", … {len(names) - limit} more" if len(names) > limit else "")


def check_fleet(nodes: list[NodeRun]) -> None:
    """One family, one kind of device, two nodes or more: else a one-line UserError saying which."""
    if len(nodes) < 2:
        where = nodes[0].name if nodes else "no run"
        raise UserError(f"fleet: one node ({where}): nothing to rank; give the runs of two or more nodes")
    for what, key in (("families", lambda n: " + ".join(n.suite) or "no benchmark"),
                      ("devices", lambda n: n.device)):
        groups: dict[str, list[str]] = {}
        for n in nodes:
            groups.setdefault(key(n), []).append(n.name)
        if len(groups) > 1:
            parts = [f"{k} ({len(v)} run{'s' if len(v) > 1 else ''}: {_few(v)})"
                     for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
            raise UserError(f"fleet: runs of different {what}: {'; '.join(parts)}; "
                            f"a fleet is one family on one kind of device")


# ---- metrics ----------------------------------------------------------------------------------

def _params(nodes: list[NodeRun]) -> dict[str, tuple[str, ...]]:
    from hpcbench.api import registry

    out: dict[str, tuple[str, ...]] = {}
    for name in nodes[0].suite:
        recorded = (nodes[0].metadata.get("params") or {}).get(name)
        out[name] = tuple(recorded or registry.params_of(name) or ())
    return out


def _combined(nodes: list[NodeRun], columns: set[str]) -> pd.DataFrame:
    """Every node's rows in one frame with a `_node` column: one concatenation, one conversion."""
    import pyarrow as pa

    tables = [n.table.select([c for c in n.table.column_names if c in columns]) for n in nodes]
    node = np.repeat(np.arange(len(nodes), dtype=np.int64), [t.num_rows for t in tables])
    try:
        try:  # the same types everywhere (the usual case) is the cheaper promotion
            df = pa.concat_tables(tables, promote_options="default").to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # an integer column in one run, a float one in another
            df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # a column of numbers in one run and of text in another: pandas takes both as objects
        df = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    df["_node"] = node
    return df


def _direction(unit: str, name: str) -> str:
    u, n = unit.strip().lower(), name.lower()
    if u in _TIME_UNITS or n.endswith(("_s", "_ms", "_us", "time")):
        return LOWER
    if any(k in u for k in _RATE_UNITS) or n.endswith(("_tflops", "_gbps", "_flops")):
        return HIGHER
    return BOTH


def _text(s: pd.Series) -> pd.Series:
    from hpcbench.api.tables import fmt

    uniq = s.drop_duplicates()
    return s.map({v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(fmt(v)) for v in uniq})


def _named_rows(df: pd.DataFrame) -> pd.DataFrame | None:
    """Rows that name their metric: (metric key, value, unit, direction, failed, reason)."""
    if "metric" not in df.columns or "value" not in df.columns:
        return None
    rows = df[df["metric"].notna()]
    if rows.empty:
        return None
    families = rows["benchmark"].dropna().unique() if "benchmark" in rows.columns else []
    key = rows["metric"].astype(str)
    if len(families) > 1:
        key = rows["benchmark"].astype(str) + " " + key
    unit = rows["unit"].astype(object).where(rows["unit"].notna(), "").astype(str) if "unit" in rows.columns \
        else pd.Series("", index=rows.index)
    out = pd.DataFrame({"key": key, "value": pd.to_numeric(rows["value"], errors="coerce"), "unit": unit,
                        "_node": rows["_node"]})
    first = out.drop_duplicates("key")  # one decision per metric, not per row
    out["better"] = out["key"].map({k: _direction(u, k) for u, k in zip(first["unit"], first["key"])})
    if "higher_is_better" in rows.columns:
        hib = rows["higher_is_better"]
        out.loc[hib.eq(True).to_numpy(), "better"] = HIGHER
        out.loc[hib.eq(False).to_numpy(), "better"] = LOWER
    return _with_status(out, rows)


def _with_status(out: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    status = rows["status"].astype(str) if "status" in rows.columns else pd.Series("ok", index=rows.index)
    out["failed"] = (status == "failed").to_numpy()
    out.loc[(status != "ok").to_numpy(), "value"] = np.nan  # a failed or skipped point has no speed
    out["reason"] = rows["reason"].to_numpy() if "reason" in rows.columns else None
    return out


def _point_rows(df: pd.DataFrame, params: dict[str, tuple[str, ...]], notes: list[str]) -> pd.DataFrame | None:
    """Every measured point's median time, named by its family and parameters."""
    from hpcbench.api import registry

    if "median_s" not in df.columns or "benchmark" not in df.columns:
        return None
    parts = []
    for family, rows in df.groupby("benchmark", sort=False):
        names = [p for p in params.get(str(family), ()) if p in rows.columns]
        if not params.get(str(family)):
            notes.append(f"{family}: unknown parameters (a family this hpcbench lacks): its points are not ranked")
            continue
        fam = registry.families().get(str(family))
        if fam is not None:
            rows = rows[fam.point_mask(rows).to_numpy()]
        elif "record" in rows.columns:
            rows = rows[rows["record"].isna() | rows["record"].isin(["measurement", "point"])]
        status = rows["status"].astype(str) if "status" in rows.columns else pd.Series("ok", index=rows.index)
        rows = rows[rows["median_s"].notna() | (status == "failed")]
        if rows.empty:
            continue
        texts = [_text(rows[p]) for p in names]
        labels = [" ".join(f"{p}={t}" for p, t in zip(names, values) if t)
                  for values in zip(*texts)] if texts else [""] * len(rows)
        out = pd.DataFrame({"key": [f"{family} {lab} median time".replace("  ", " ") for lab in labels],
                            "value": pd.to_numeric(rows["median_s"], errors="coerce").to_numpy(), "unit": "s",
                            "better": LOWER, "_node": rows["_node"].to_numpy()})
        parts.append(_with_status(out, rows))
    return pd.concat(parts, ignore_index=True) if parts else None


def metric_matrix(nodes: list[NodeRun], threshold: float = DEFAULT_THRESHOLD) -> Fleet:
    """The nodes x metrics matrix of the fleet (not yet ranked)."""
    params = _params(nodes)
    # `record` (in the base columns) is the column every family's `points_are` names
    columns = set(_BASE_COLUMNS) | {p for ps in params.values() for p in ps}
    df = _combined(nodes, columns)
    notes: list[str] = []
    long = _named_rows(df)
    cells = long if long is not None else _point_rows(df, params, notes)
    if cells is None or cells.empty:
        raise UserError(f"fleet: no metric to rank in {_few([n.name for n in nodes])} "
                        "(no summary rows with metric and value, and no timed points)")
    codes, keys = pd.factorize(cells["key"], sort=False)
    first = cells.drop_duplicates("key")
    metrics = [Metric(k, u, b) for k, u, b in zip(first["key"], first["unit"], first["better"])]
    node = cells["_node"].to_numpy(dtype=np.int64)
    values = np.full((len(nodes), len(keys)), np.nan)
    failed = np.zeros((len(nodes), len(keys)), dtype=bool)
    ok = ~np.isnan(cells["value"].to_numpy(dtype=float))
    # a point stored twice (a resumed run) keeps its last row: later assignments win
    values[node[ok], codes[ok]] = cells["value"].to_numpy(dtype=float)[ok]
    bad = cells["failed"].to_numpy(dtype=bool)
    failed[node[bad], codes[bad]] = True
    failed[~np.isnan(values)] = False  # failed, then measured again and passed: it passed
    failure = {(int(i), int(j)): r for i, j, r in zip(node[bad], codes[bad], cells["reason"].to_numpy()[bad])}
    return Fleet(nodes=nodes, metrics=metrics, values=values, failed=failed, failure=failure, threshold=threshold,
                 notes=notes)


# ---- statistics -------------------------------------------------------------------------------

def robust_z(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(median, scale, z) per column of a nodes x metrics matrix, NaN = no value.

    scale = 1.4826 MAD; where MAD is 0, 1.253314 x the mean absolute deviation from the median;
    where that is 0 too (every node equal), inf, so z is 0. Columns with no value give NaN."""
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (no node has the metric)
        median = np.nanmedian(values, axis=0)
        dev = np.abs(values - median)
        mad = np.nanmedian(dev, axis=0)
        mean_ad = np.nanmean(dev, axis=0)
        scale = np.where(mad > 0, MAD_SCALE * mad, np.where(mean_ad > 0, MEAN_AD_SCALE * mean_ad, np.inf))
        z = (values - median) / scale
    return median, scale, z


def rank_fleet(fleet: Fleet) -> Fleet:
    """Fill in the medians, scales, z-scores, ranks (1 = best) and outliers of `fleet`."""
    values = fleet.values
    fleet.median, fleet.scale, fleet.z = robust_z(values)
    better = np.array([m.better for m in fleet.metrics])
    present = ~np.isnan(values)
    counts = present.sum(axis=0)
    # rank: best first; "both" ranks by distance from the median; nodes without a value last (rank 0)
    key = np.where(better == HIGHER, -values, np.where(better == LOWER, values, np.abs(fleet.z)))
    key = np.where(present, key, np.inf)
    order = np.argsort(key, axis=0, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, len(values) + 1)[:, None].repeat(values.shape[1], axis=1), axis=0)
    fleet.rank = np.where(present, rank, 0)
    thr = fleet.threshold
    with np.errstate(invalid="ignore"):
        worse = np.where(better == HIGHER, fleet.z < -thr, np.where(better == LOWER, fleet.z > thr, np.abs(fleet.z) > thr))
    rankable = counts >= 2
    fleet.outlier = (worse & present & rankable) | fleet.failed
    unranked = [m.name for m, ok in zip(fleet.metrics, rankable) if not ok]
    if unranked:
        fleet.notes.append(f"{len(unranked)} metric(s) with a value on fewer than two nodes, not ranked: {_few(unranked)}")
    return fleet


def analyse(paths: list[Path | str], threshold: float = DEFAULT_THRESHOLD) -> Fleet:
    """Read the runs, check they form a fleet, and rank it."""
    nodes = read_fleet(paths)
    check_fleet(nodes)
    return rank_fleet(metric_matrix(nodes, threshold))
