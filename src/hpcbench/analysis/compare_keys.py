"""The join of two runs' points on their benchmark parameters, as integers.

Each family's params (as the run's metadata recorded them; else the registry's) identify a point,
never row order. Each param's values are numbered in sorted order on both sides, the numbers
combined in mixed radix into one integer per point, and the points of each run placed by that
integer in an array: the rows of an outer merge on the params, in the merge's order, without
hashing tuples (a million points in well under a second).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpcbench.api import registry
from hpcbench.api.tables import fmt


def _params(name: str, metadata: dict | None = None) -> tuple[str, ...] | None:
    """The family's PARAMS as the run recorded them, else as this hpcbench declares them."""
    recorded = ((metadata or {}).get("params") or {}).get(name)
    if recorded:
        return tuple(recorded)
    return registry.params_of(name) or None  # None: a family this hpcbench does not know


def _key_column(s: pd.Series) -> pd.Series:
    """One dtype per key column on both sides, so 4096 meets 4096.0 and None meets NaN."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype(str)
    if pd.api.types.is_numeric_dtype(s):
        return s.astype("float64")
    if pd.api.types.is_string_dtype(s) and not pd.api.types.is_object_dtype(s):
        return s.fillna("").astype(str)
    numeric = pd.to_numeric(s, errors="coerce")
    if numeric.notna().sum() == s.notna().sum() and not s.map(lambda v: isinstance(v, bool)).any():
        return numeric.astype("float64")
    return s.astype(object).where(s.notna(), "").astype(str)


def _as_text(s: pd.Series) -> pd.Series:
    """Key values as text: 4096.0 -> '4096', missing -> ''."""
    if pd.api.types.is_numeric_dtype(s):
        return s.map(fmt)
    return s.astype(object).where(s.notna(), "").astype(str)


def _harmonise(a: dict[str, pd.Series], b: dict[str, pd.Series], params: list[str]) -> None:
    """Give each key column one dtype on both sides (a column that is numbers in one run and text,
    or absent, in the other is compared as text)."""
    for p in params:
        numeric_a, numeric_b = (pd.api.types.is_numeric_dtype(x[p]) for x in (a, b))
        if numeric_a != numeric_b:
            a[p], b[p] = _as_text(a[p]), _as_text(b[p])


def family_params(df_a: pd.DataFrame, df_b: pd.DataFrame, notes: list[str]) -> dict[str, tuple[str, ...]]:
    """Each family's join columns: the union of what the two runs recorded (a family whose PARAMS
    grew between versions still joins; the column missing on one side is blank there)."""
    names = [n for df in (df_a, df_b) if "benchmark" in df.columns for n in df["benchmark"].dropna().unique()]
    out = {}
    for name in dict.fromkeys(map(str, names)):
        lists = [_params(name, df.attrs.get("metadata")) for df in (df_a, df_b)]
        known = [ps for ps in lists if ps]
        if not known:
            notes.append(f"{name}: no PARAMS declared (or unknown family): not comparable")
            continue
        out[name] = tuple(dict.fromkeys(p for ps in known for p in ps))
        if len(known) == 2 and set(known[0]) != set(known[1]):
            notes.append(f"{name}: the runs identify points by different columns ({', '.join(known[0])} / "
                         f"{', '.join(known[1])}): joined on all of them")
    return out


@dataclass
class Part:
    """One family's measured points in one run, column by column (aligned by position): the
    harmonised key of each param, status, reason, median_s, and `row`, the point's position in
    the run (where its samples are)."""
    keys: dict[str, pd.Series]
    status: pd.Series
    reason: pd.Series
    median_s: pd.Series
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.row)


def _family_rows(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each family's row positions, families in the order the run first has them (rows without a
    benchmark belong to none)."""
    first = df["benchmark"].iloc[0]
    if isinstance(first, str) and (df["benchmark"] == first).all():
        return {first: np.arange(len(df))}  # one family, every row (the usual run): nothing to split
    codes, names = pd.factorize(df["benchmark"])
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return {names[k]: order[bounds[k]:bounds[k + 1]] for k in range(len(names))}


def _of_rows(df: pd.DataFrame, column: str, rows: np.ndarray) -> pd.Series:
    """A column at row positions `rows`, numbered from 0 (not copied when `rows` is every row)."""
    return (df[column] if len(rows) == len(df) else df[column].iloc[rows]).reset_index(drop=True)


def measured_points(df: pd.DataFrame, params_of: dict[str, tuple[str, ...]]) -> dict[str, Part]:
    """Per family: the rows that are measured points (timed, or failed/skipped with a reason)."""
    out = {}
    if df.empty or "benchmark" not in df.columns:
        return out
    for name, family_rows in _family_rows(df).items():
        params = params_of.get(str(name))
        if params is None:
            continue
        rows = family_rows
        absent = pd.RangeIndex(len(rows))  # the index of a column the run did not record
        median = _of_rows(df, "median_s", rows) if "median_s" in df.columns else pd.Series(np.nan, index=absent)
        status = _of_rows(df, "status", rows) if "status" in df.columns else pd.Series("ok", index=absent)
        measured = median.notna() | (status != "ok")
        if "record" in df.columns:  # fits and projections are derived from the points, not points
            record = _of_rows(df, "record", rows)
            measured &= record.isna() | (record == "measurement")
        measured = measured.to_numpy(dtype=bool)
        if not measured.all():
            rows = rows[measured]
            median, status = median[measured].reset_index(drop=True), status[measured].reset_index(drop=True)
        index = pd.RangeIndex(len(rows))
        defaults = registry.param_defaults(str(name))
        keys = {}
        for p in params:
            if p not in df.columns:  # not recorded by the run: the family's default for it
                keys[p] = _key_column(pd.Series(defaults.get(p, ""), index=index))
            else:
                column = _of_rows(df, p, rows)
                keys[p] = _key_column(column.fillna(defaults[p]) if p in defaults else column)
        reason = _of_rows(df, "reason", rows) if "reason" in df.columns else pd.Series(None, index=index, dtype=object)
        out[str(name)] = Part(keys=keys, status=status.astype(str), reason=reason,
                               median_s=pd.to_numeric(median, errors="coerce"), row=rows.astype(np.int64))
    return out


def _shared_codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of one key column of both runs, numbered in the values' sorted order with a
    missing value last (the order and the matching of a pandas outer merge), and how many codes."""
    if a.dtype == np.float64 and b.dtype == np.float64:
        whole = _whole_number_codes(a.to_numpy(), b.to_numpy())
        if whole is not None:
            return whole
    codes_a, uniques_a = pd.factorize(a)
    codes_b, uniques_b = pd.factorize(b)
    rank, joint = pd.factorize(pd.Index(uniques_a).append(pd.Index(uniques_b)), sort=True)
    missing = len(joint)  # code -1 (missing) takes the last entry of each map below
    map_a = np.append(rank[:len(uniques_a)], missing)
    map_b = np.append(rank[len(uniques_a):], missing)
    return map_a[codes_a], map_b[codes_b], missing + 1


def _whole_number_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """`_shared_codes` of two columns of whole numbers in a range not much wider than their count
    (sizes, counts, ids: the usual params) without hashing: each value less the smallest. None
    for any other column (a missing value, a fraction, a sparse range)."""
    present = [x for x in (a, b) if len(x)]
    if not present:
        return None
    low = min(x.min() for x in present)  # NaN anywhere: NaN, and the test below fails
    high = max(x.max() for x in present)
    if not (high - low < 4 * (len(a) + len(b)) + 1024):
        return None
    if not ((a == np.rint(a)).all() and (b == np.rint(b)).all()):
        return None
    return (a - low).astype(np.int64), (b - low).astype(np.int64), int(high - low) + 1


def _compress(key_a: np.ndarray, key_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Renumber two key arrays 0..distinct-1 in the same (sorted) order."""
    codes, uniques = pd.factorize(np.concatenate([key_a, key_b]), sort=True)
    return codes[:len(key_a)], codes[len(key_a):], len(uniques)


def _joint_keys(keys_a: list[pd.Series], keys_b: list[pd.Series]) -> tuple[np.ndarray, np.ndarray, int]:
    """One int64 per point for its whole key, in both runs: each column's shared codes combined
    in mixed radix, so the integers sort as the keys do column by column; and their range
    (renumbered densely when it would be much larger than the points, so it can index an array)."""
    n_a, n_b = len(keys_a[0]) if keys_a else 0, len(keys_b[0]) if keys_b else 0
    key_a, key_b, span = np.zeros(n_a, np.int64), np.zeros(n_b, np.int64), 1
    for a, b in zip(keys_a, keys_b):
        codes_a, codes_b, cardinality = _shared_codes(a, b)
        if span * cardinality >= 1 << 62:
            key_a, key_b, span = _compress(key_a, key_b)
        key_a, key_b, span = key_a * cardinality + codes_a, key_b * cardinality + codes_b, span * cardinality
    if span > 4 * (n_a + n_b) + 1024:
        key_a, key_b, span = _compress(key_a, key_b)
    return key_a, key_b, span


def _where(key: np.ndarray, span: int) -> tuple[np.ndarray, int]:
    """For each key value, the position of the last point holding it (-1: none), and how many
    points an earlier one with the same key left out (a repeated point: the last is compared)."""
    at = np.full(span, -1, dtype=np.int64)
    if not len(key):
        return at, 0
    counts = np.bincount(key, minlength=span)
    if counts.max() <= 1:
        at[key] = np.arange(len(key))
        return at, 0
    order = np.argsort(key, kind="stable")  # equal keys keep their run order: the last is the last
    ordered = key[order]
    last = np.ones(len(key), dtype=bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    at[ordered[last]] = order[last]
    return at, int(len(key) - last.sum())


def _take(s: pd.Series, rows: np.ndarray | None):
    """A column's values at `rows` (all of them, in order, for None), ready for a new frame."""
    return s.array if rows is None else s.array.take(rows)


def _frame(part: Part, params: list[str], rows: np.ndarray | None, name: str) -> pd.DataFrame:
    """Key columns of `rows` of a part, and the family's name: a lone point's identity."""
    return pd.DataFrame({**{p: _take(part.keys[p], rows) for p in params}, "benchmark": name})


def join_points(points_a: dict[str, Part], points_b: dict[str, Part], params_of: dict[str, tuple[str, ...]]
                ) -> tuple[list[pd.DataFrame], pd.DataFrame, pd.DataFrame, dict[tuple[str, str], int]]:
    """The matched points of each family (keys, A's and B's status, reason, median and `_row_a`,
    `_row_b`: where their samples are), the points only A or only B has, and how many repeated
    points each (run, family) left out (the last of each is compared)."""
    repeated: dict[tuple[str, str], int] = {}  # (run, family) -> points left out as repeats
    matched, only_a, only_b = [], [], []
    for name in dict.fromkeys([*points_a, *points_b]):
        params = list(params_of[name])
        pa_, pb_ = points_a.get(name), points_b.get(name)
        if pa_ is None or pb_ is None:
            side, part = ("A", pa_) if pa_ is not None else ("B", pb_)
            key, _, span = _joint_keys([part.keys[p] for p in params], [part.keys[p].iloc[:0] for p in params])
            at, repeated[side, name] = _where(key, span)
            kept = np.sort(at[at >= 0]) if repeated[side, name] else None
            (only_a if side == "A" else only_b).append(_frame(part, params, kept, name))
            continue
        _harmonise(pa_.keys, pb_.keys, params)
        key_a, key_b, span = _joint_keys([pa_.keys[p] for p in params], [pb_.keys[p] for p in params])
        (at_a, repeated["A", name]), (at_b, repeated["B", name]) = _where(key_a, span), _where(key_b, span)
        # every key in sorted order: the rows of an outer merge on the params
        in_a, in_b = at_a >= 0, at_b >= 0
        only_a.append(_frame(pa_, params, at_a[in_a & ~in_b], name))
        only_b.append(_frame(pb_, params, at_b[in_b & ~in_a], name))
        both = np.flatnonzero(in_a & in_b)
        if len(both):
            matched.append(_matched(pa_, pb_, params, at_a[both], at_b[both], name))
    return matched, _concat(only_a), _concat(only_b), repeated


def _matched(pa_: Part, pb_: Part, params: list[str], i_a: np.ndarray, i_b: np.ndarray, name: str) -> pd.DataFrame:
    """The points both runs have, at A's positions `i_a` and B's `i_b`, side by side."""
    full = len(i_a) == len(pa_) == len(pb_) and (i_a == np.arange(len(i_a))).all()
    rows_a = None if full else i_a  # A's points in key order already (the usual case)
    return pd.DataFrame({
        **{p: _take(pa_.keys[p], rows_a) for p in params},
        "status_a": _take(pa_.status, rows_a), "reason_a": _take(pa_.reason, rows_a),
        "median_s_a": _take(pa_.median_s, rows_a), "_row_a": pa_.row[i_a],
        "status_b": _take(pb_.status, i_b), "reason_b": _take(pb_.reason, i_b),
        "median_s_b": _take(pb_.median_s, i_b), "_row_b": pb_.row[i_b], "benchmark": name},
        copy=False)  # not copied again into 2-D blocks: the frame is read column by column


def repeat_notes(repeated: dict[tuple[str, str], int], points_a: dict[str, Part], points_b: dict[str, Part]) -> list[str]:
    """A note per (run, family) that held repeated points, families in each run's own order."""
    notes = []
    for side, parts in (("A", points_a), ("B", points_b)):
        for name in parts:
            if repeated.get((side, name)):
                notes.append(f"{name}: {repeated[side, name]} repeated point(s) in run {side}: "
                             "the last of each is compared")
    return notes


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["benchmark"])
