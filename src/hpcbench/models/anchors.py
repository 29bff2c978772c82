"""Published figures to hold measurements against, matched by device and configuration.

The registry is data: conf/anchors.yaml (shipped as hpcbench.conf/anchors.yaml). Each anchor names
a metric, the hardware it was measured on (a device-name pattern and an optional exclusion), the
configuration it was measured at, its value, unit and source. A point gets a "% of anchor" only
when an anchor matches both its device and every key of the anchor's configuration; an unmatched
point gets nothing, never a guess (VISION.md §4, rule 9).

The same file says, per benchmark family, how a stored row becomes (metric, value, configuration)
(its `rows:` rules), so that this module names no family: `annotate` applies those rules to a run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from hpcbench.api.errors import UserError

ANCHOR_COLUMNS = ("anchor_value", "anchor_unit", "anchor_source", "pct_of_anchor", "anchor_metric", "anchor_measured",
                  "anchor_note")
TIME_UNITS = {"s", "ms", "us", "µs", "ns"}  # lower is better: % of anchor is anchor / value
_ENV = "env:"


@dataclass(frozen=True)
class Anchor:
    metric: str
    hardware: str  # regular expression searched in the device name (case-insensitive, whole token)
    config: dict  # every key must equal the point's value
    value: float
    unit: str
    source: str  # URL, or repository + path
    note: str = ""
    exclude: str = ""  # regular expression that must not occur in the device name ("NVL|PCIe")
    best_shape: dict | None = None  # {M, N, K} where a search (MAMF) found its figure

    def fits_device(self, device_name: str | None) -> bool:
        if not device_name:
            return False
        if not re.search(rf"(?<![A-Za-z0-9])(?:{self.hardware})(?![A-Za-z0-9])", device_name, re.IGNORECASE):
            return False
        return not (self.exclude and re.search(self.exclude, device_name, re.IGNORECASE))

    def fits_config(self, config: dict) -> bool:
        return all(key in config and _same(want, config[key]) for key, want in self.config.items())


@dataclass(frozen=True)
class RowRule:
    """How rows of one family become (metric, value, configuration): see conf/anchors.yaml."""

    benchmark: str
    where: dict  # column -> regular expression its text must match
    metric: str  # a template naming columns in braces
    value: str  # the column holding the measured number
    config: dict  # configuration key -> column, or "env:VAR|fallback"
    config_from: str = ""  # a column whose value is already a {key: value} configuration


@dataclass(frozen=True)
class Registry:
    anchors: tuple[Anchor, ...]
    rules: tuple[RowRule, ...]
    units: dict  # metric -> unit

    def match(self, metric: str, device_name: str | None, **config) -> Anchor | None:
        """See `match`: the same, in this registry."""
        return _best([a for a in self.anchors if a.fits_device(device_name)], metric, config)


def _same(want, have) -> bool:
    """Numbers compare numerically (4096 == 4096.0), words case-insensitively; missing never matches."""
    if have is None or (isinstance(have, float) and math.isnan(have)):
        return False
    if isinstance(want, bool) or isinstance(have, (bool, np.bool_)):
        return str(want).lower() == str(have).lower()
    if isinstance(want, (int, float)):
        try:
            return float(have) == float(want)
        except (TypeError, ValueError):
            return False
    return str(want).casefold() == str(have).casefold()


# ---- loading ----------------------------------------------------------------------------------

def default_path() -> Path:
    import importlib.resources

    # hpcbench.core.config.CONFIG_MODULE; not imported from there, which would pull in Hydra's stack
    return Path(str(importlib.resources.files("hpcbench.conf") / "anchors.yaml"))


def _fail(path, where: str, message: str):
    raise UserError(f"{path}: {where}: {message}")


def _anchor(entry, i: int, units: dict, path) -> Anchor:
    where = f"anchor {i + 1}"
    if not isinstance(entry, dict):
        _fail(path, where, "not a mapping")
    known = {"metric", "hardware", "exclude", "config", "value", "unit", "source", "note", "best_shape"}
    unknown = sorted(set(entry) - known)
    if unknown:
        _fail(path, where, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(known))})")
    metric = entry.get("metric")
    where = f"anchor {i + 1} ({metric})"
    if not str(entry.get("source") or "").strip():
        _fail(path, where, "no source: every anchor needs a URL or repository + path")
    for key in ("metric", "hardware", "value", "unit"):
        if entry.get(key) in (None, ""):
            _fail(path, where, f"no {key}")
    if metric not in units:
        _fail(path, where, f"unknown metric (add it to `metrics:`; known: {', '.join(units)})")
    if str(entry["unit"]) != units[metric]:
        _fail(path, where, f"unit {entry['unit']} but {metric} is in {units[metric]}")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        _fail(path, where, f"value {value!r} is not a positive number")
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        _fail(path, where, "config must be a mapping (key: value)")
    for pattern in (entry["hardware"], entry.get("exclude") or ""):
        try:
            re.compile(str(pattern))
        except re.error as exc:
            _fail(path, where, f"bad pattern {pattern!r} ({exc})")
    return Anchor(metric=str(metric), hardware=str(entry["hardware"]), config=dict(config), value=float(value),
                  unit=str(entry["unit"]), source=str(entry["source"]).strip(), note=str(entry.get("note") or ""),
                  exclude=str(entry.get("exclude") or ""), best_shape=_best_shape(entry.get("best_shape"), path, where))


def _best_shape(shape, path, where: str) -> dict | None:
    """An anchor's best shape: {M, N, K}, each a positive integer (or no shape at all)."""
    if shape is None:
        return None
    if not isinstance(shape, dict) or set(shape) != {"M", "N", "K"} or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape.values()):
        _fail(path, where, f"best_shape must be {{M: int, N: int, K: int}}, not {shape!r}")
    return {k: int(shape[k]) for k in ("M", "N", "K")}


def _rule(entry, i: int, path) -> RowRule:
    where = f"rows rule {i + 1}"
    if not isinstance(entry, dict) or not all(entry.get(k) for k in ("benchmark", "metric", "value")):
        _fail(path, where, "needs benchmark, metric and value")
    for key in ("where", "config"):
        if not isinstance(entry.get(key) or {}, dict):
            _fail(path, where, f"{key} must be a mapping")
    unknown = sorted(set(entry) - {"benchmark", "where", "metric", "value", "config", "config_from"})
    if unknown:
        _fail(path, where, f"unknown key(s) {', '.join(unknown)}")
    return RowRule(benchmark=str(entry["benchmark"]), where=dict(entry.get("where") or {}), metric=str(entry["metric"]),
                   value=str(entry["value"]), config=dict(entry.get("config") or {}),
                   config_from=str(entry.get("config_from") or ""))


def read(path: str | Path) -> Registry:
    """Parse and check an anchors file (no cache): any defect is a one-line UserError."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read the anchors file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{at}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected the sections metrics, rows and anchors")
    metrics = doc.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: metrics must map each metric name to its unit")
    units = {}
    for name, spec in metrics.items():
        unit = spec.get("unit") if isinstance(spec, dict) else spec
        if not unit:
            raise UserError(f"{path}: metric {name}: no unit")
        units[str(name)] = str(unit)
    anchors = tuple(_anchor(e, i, units, path) for i, e in enumerate(doc.get("anchors") or []))
    seen: dict = {}
    for i, a in enumerate(anchors):
        key = (a.metric, a.hardware.casefold(), a.exclude.casefold(),
               tuple(sorted((k, str(v).casefold()) for k, v in a.config.items())))
        if key in seen:
            raise UserError(f"{path}: anchors {seen[key] + 1} and {i + 1} ({a.metric}) have the same hardware "
                            "and configuration: keep one")
        seen[key] = i
    rules = tuple(_rule(e, i, path) for i, e in enumerate(doc.get("rows") or []))
    return Registry(anchors=anchors, rules=rules, units=units)


@cache
def _cached(path: str) -> Registry:
    return read(path)


def registry(path: str | Path | None = None) -> Registry:
    return _cached(str(Path(path) if path is not None else default_path()))


def load(path: str | Path | None = None) -> list[Anchor]:
    """Every anchor of `path` (default: the packaged conf/anchors.yaml), checked; cached per path."""
    return list(registry(path).anchors)


# ---- matching ---------------------------------------------------------------------------------

def match(metric: str, device_name: str | None, **config) -> Anchor | None:
    """The packaged registry's anchor for this metric on this device at this configuration, or None.

    Every key of an anchor's config must equal the given config's value (extra given keys are
    fine). Of several matches the most specific (most config keys) wins, the earlier on a tie."""
    return registry().match(metric, device_name, **config)


def pct_of_anchor(value, anchor: Anchor | None) -> float | None:
    """The measurement as a percentage of the anchor: 100 = as good as published. For a time
    (lower is better) it is anchor / value, for a throughput value / anchor."""
    if anchor is None or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    if anchor.unit in TIME_UNITS:
        return 100.0 * anchor.value / value
    return 100.0 * value / anchor.value


# ---- annotating stored rows -------------------------------------------------------------------

def _text(series: pd.Series) -> pd.Series:
    """Column values as text for the `where` patterns and the metric template (4096.0 -> '4096')."""
    from hpcbench.api.tables import fmt

    uniq = series.drop_duplicates()
    as_text = {v: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(fmt(v))) for v in uniq}
    return series.map(as_text)


def _rule_rows(df: pd.DataFrame, rule: RowRule, environment: dict) -> pd.DataFrame | None:
    """(metric, value, config columns) for the rows `rule` applies to, indexed like df."""
    if "benchmark" not in df.columns or rule.value not in df.columns:
        return None
    mask = df["benchmark"] == rule.benchmark
    if "status" in df.columns:
        mask &= df["status"] == "ok"
    if "fallback" in df.columns:  # a CPU-fallback number is never held against a GPU figure
        mask &= df["fallback"].ne(True)
    for column, pattern in rule.where.items():
        if column not in df.columns:
            return None
        search = re.compile(str(pattern)).search
        text = _text(df[column])
        hits = {t: bool(search(t)) for t in text.drop_duplicates()}
        mask &= text.map(hits).astype(bool)
    rows = df[mask]
    if rows.empty:
        return None
    names = re.findall(r"{(\w+)}", rule.metric)
    if any(n not in rows.columns for n in names):
        return None
    metric = [rule.metric] * len(rows)
    for n in names:
        metric = [m.replace("{" + n + "}", t) for m, t in zip(metric, _text(rows[n]))]
    out = pd.DataFrame({"metric": metric, "value": pd.to_numeric(rows[rule.value], errors="coerce")}, index=rows.index)
    if rule.config_from and rule.config_from in rows.columns:
        given = [_as_config(v) for v in rows[rule.config_from]]
        for key in dict.fromkeys(k for d in given for k in d):
            out[f"cfg:{key}"] = [d.get(key) for d in given]
    for key, source in rule.config.items():
        source = str(source)
        if source.startswith(_ENV):
            var, _, fallback = source[len(_ENV):].partition("|")
            out[f"cfg:{key}"] = environment.get(var) or (fallback or None)
        else:
            out[f"cfg:{key}"] = rows[source] if source in rows.columns else None
    return out


def _as_config(value) -> dict:
    """A stored configuration: a dict, or its JSON text (anything else: no configuration)."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def annotate(df: pd.DataFrame, device_name: str | None, path: str | Path | None = None) -> pd.DataFrame:
    """A copy of `df` with anchor_value, anchor_unit, anchor_source and pct_of_anchor (and, for
    tables, anchor_metric, anchor_measured, anchor_note): filled for the ok rows whose metric,
    device and configuration match an anchor, blank (NaN / None) elsewhere. The run's recorded
    environment (df.attrs["metadata"]["environment"]) feeds `env:` configuration keys."""
    reg = registry(path)
    n = len(df)
    cols = {"anchor_value": np.full(n, np.nan), "anchor_unit": np.full(n, None, dtype=object),
            "anchor_source": np.full(n, None, dtype=object), "pct_of_anchor": np.full(n, np.nan),
            "anchor_metric": np.full(n, None, dtype=object), "anchor_measured": np.full(n, np.nan),
            "anchor_note": np.full(n, None, dtype=object)}
    on_device = [a for a in reg.anchors if a.fits_device(device_name)]
    if n and on_device:
        environment = ((df.attrs.get("metadata") or {}).get("environment")) or {}
        work = df.reset_index(drop=True)  # positions, whatever the caller's index
        for rule in reg.rules:
            rows = _rule_rows(work, rule, environment)
            if rows is None:
                continue
            cfg_cols = [c for c in rows.columns if c.startswith("cfg:")]
            keys = rows[["metric", *cfg_cols]].astype(object)
            # one match per distinct (metric, configuration), not per row
            for combo, where in keys.groupby(list(keys.columns), dropna=False, sort=False).groups.items():
                combo = combo if isinstance(combo, tuple) else (combo,)
                config = {c[len("cfg:"):]: v for c, v in zip(cfg_cols, combo[1:])}
                anchor = _best(on_device, str(combo[0]), config)
                if anchor is None:
                    continue
                at = np.asarray(where, dtype=np.int64)
                values = rows.loc[where, "value"].to_numpy(dtype=float)
                cols["anchor_value"][at] = anchor.value
                cols["anchor_unit"][at] = anchor.unit
                cols["anchor_source"][at] = anchor.source
                cols["anchor_metric"][at] = anchor.metric
                cols["anchor_measured"][at] = values
                cols["anchor_note"][at] = anchor.note
                cols["pct_of_anchor"][at] = [np.nan if (p := pct_of_anchor(v, anchor)) is None else p for v in values]
    out = df.copy()
    for name, values in cols.items():
        out[name] = values
    return out


def _best(anchors: list[Anchor], metric: str, config: dict) -> Anchor | None:
    best = None
    for a in anchors:
        if a.metric == metric and a.fits_config(config) and (best is None or len(a.config) > len(best.config)):
            best = a
    return best


def matched(df: pd.DataFrame, device_name: str | None, path: str | Path | None = None) -> pd.DataFrame:
    """Only the rows of `df` that match an anchor, annotated (empty when none does)."""
    out = annotate(df, device_name, path)
    return out[out["anchor_value"].notna()]


def listing(df: pd.DataFrame, device_name: str | None, params: dict | None = None,
            path: str | Path | None = None) -> list[dict]:
    """The matched rows as display records (benchmark, point, metric, measured, anchor, unit,
    pct, source, note) for `show` and `report`; `params` names each family's point columns."""
    from hpcbench.api.tables import fmt

    hits = matched(df, device_name, path)
    out = []
    for row in hits.astype(object).where(hits.notna(), None).to_dict("records"):
        names = (params or {}).get(row.get("benchmark")) or ()
        point = " ".join(f"{k}={fmt(row.get(k))}" for k in names if fmt(row.get(k)) != "")
        out.append({"benchmark": row.get("benchmark"), "point": point,
                    "metric": row["anchor_metric"], "measured": row["anchor_measured"], "anchor": row["anchor_value"],
                    "unit": row["anchor_unit"], "pct": row["pct_of_anchor"], "source": row["anchor_source"],
                    "note": row["anchor_note"] or ""})
    return out
