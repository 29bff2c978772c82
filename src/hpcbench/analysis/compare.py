"""Join two runs on their benchmark parameters and decide, point by point, what changed.

The join key is each family's params (as the run's metadata recorded them; else the registry's),
never row order: the same shape and kernel, the same message size, the same schedule. Every timed row keeps
its raw samples (`samples_s`), and the verdict comes from them:

  ratio      median(B) / median(A) of the time: above 1, B is slower
  CI         Bonett-Price interval for the ratio of two medians: each log-median's variance from
             the order statistics around it, with the exact binomial coverage of that pair
  p          two-sided Mann-Whitney U on the two sample sets (no normality assumed: GPU timings
             are skewed and multi-modal)
  verdict    faster / slower when p < alpha and the change is at least `min_effect` (a 0.3 %
             difference can be significant and still not matter); "no change" otherwise; "too few
             samples" when not even a complete separation of A and B could reach p < alpha
             (3 against 3 cannot: the smallest two-sided p is 2 / C(6, 3) = 0.1)

The join is on one integer per point (each param's values numbered in sorted order, the numbers
combined), and the statistics are vectorised over points (grouped by sample counts, one integer
sort of each point's merged samples serving the U statistic and both medians), so a million
points take under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import special

from hpcbench import registry
from hpcbench.errors import UserError
from hpcbench.tables import fmt
from hpcbench.results.reader import Samples

FASTER, SLOWER, SAME = "faster", "slower", "no change"
FEW = "too few samples"
NO_SAMPLES = "no raw samples"
NOT_COMPARED = "not compared"
DAMAGED = "damaged samples"

# environment fields shown side by side when they differ between the runs
ENV_FIELDS = ("device_name", "gpu_name", "gpu_count", "driver_version", "cuda_runtime", "torch_version",
              "triton_version", "nccl_version", "world_size", "backend", "hostname", "cpu_model",
              "python_version", "hpcbench_version", "git_sha", "fallback")


@dataclass(frozen=True)
class Settings:
    alpha: float = 0.05
    min_effect: float = 0.02  # relative change below which a difference does not count
    confidence: float = 0.95


@dataclass
class Comparison:
    points: pd.DataFrame  # one row per matched point: benchmark, params, A/B medians, ratio, CI, p, verdict
    only_a: pd.DataFrame  # points of A that B lacks (benchmark and params; point_labels() names them)
    only_b: pd.DataFrame
    environment: list[tuple[str, object, object]]  # (field, A, B) that differ
    notes: list[str] = field(default_factory=list)  # duplicates, families without PARAMS, ...
    params: dict[str, tuple[str, ...]] = field(default_factory=dict)  # each family's join columns

    def labels(self, frame: pd.DataFrame) -> list[str]:
        return point_labels(frame, self.params)

    def regressions(self, threshold_pct: float, alpha: float = 0.05) -> pd.DataFrame:
        """Points significantly slower (p < alpha) by at least threshold_pct, whatever the display's
        minimum effect, or that passed their check in A and fail it in B."""
        p = self.points
        testable = ~p["verdict"].isin([FEW, NO_SAMPLES, DAMAGED, NOT_COMPARED])
        slower = testable & (p["p_value"] < alpha) & ((p["ratio"] - 1) * 100 >= threshold_pct)
        broke = (p["status_a"] == "ok") & (p["status_b"] == "failed")
        return p[slower | broke]

    def untestable(self) -> int:
        """Points whose change could not be tested (too few, no or damaged samples)."""
        return int(self.points["verdict"].isin([FEW, NO_SAMPLES, DAMAGED]).sum())


def environment_of(metadata: dict) -> dict:
    env = {k: metadata.get(k) for k in ENV_FIELDS}
    dist = metadata.get("distributed") or {}
    env["world_size"] = dist.get("world_size", env["world_size"])
    env["backend"] = dist.get("backend")
    return env


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


def samples_of(df: pd.DataFrame, column: str = "samples_s") -> Samples:
    """Flat Samples from a DataFrame whose `column` holds a list (or array) per row."""
    return Samples.from_lists(df[column] if column in df.columns else [None] * len(df))


def join_columns(params_of: dict[str, tuple[str, ...]]) -> set[str]:
    """The columns compare reads: what identifies a point, its status and its time."""
    return {"benchmark", "status", "reason", "median_s", "record", *(p for ps in params_of.values() for p in ps)}


def _family_params(df_a: pd.DataFrame, df_b: pd.DataFrame, notes: list[str]) -> dict[str, tuple[str, ...]]:
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
class _Part:
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


def _points(df: pd.DataFrame, params_of: dict[str, tuple[str, ...]]) -> dict[str, _Part]:
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
        out[str(name)] = _Part(keys=keys, status=status.astype(str), reason=reason,
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


def _frame(part: _Part, params: list[str], rows: np.ndarray | None, name: str) -> pd.DataFrame:
    """Key columns of `rows` of a part, and the family's name: a lone point's identity."""
    return pd.DataFrame({**{p: _take(part.keys[p], rows) for p in params}, "benchmark": name})


def point_labels(frame: pd.DataFrame, params_of: dict[str, tuple[str, ...]]) -> list[str]:
    """'M=4096 N=4096 K=4096 kernel=triton_fp8_block' for each row (built only for what is shown)."""
    labels = []
    for row in frame.to_dict("records"):
        params = params_of.get(row["benchmark"], ())
        labels.append(" ".join(f"{p}={fmt(row.get(p))}" for p in params if fmt(row.get(p)) != ""))
    return labels


def _log_median_var(low: np.ndarray, high: np.ndarray, n: int) -> np.ndarray:
    """Bonett-Price variance of the log sample median, per row of n sorted samples, from its order
    statistics x_(c) (`low`) and x_(n-c+1) (`high`); `_order_pair(n)` says which."""
    c = _order_pair(n)[0] + 1
    tail = special.bdtr(c - 1, n, 0.5)  # P(the median lies outside [x_(c), x_(n-c+1)]) / 2
    z = special.ndtri(1 - tail) if tail > 0 else np.inf
    if not z > 0:
        return np.full(len(low), np.nan)
    spread = np.log(high) - np.log(low)
    return (spread / (2 * z)) ** 2


def _order_pair(n: int) -> tuple[int, int]:
    """0-based positions of the order statistics around the median that Bonett-Price use."""
    c = max(1, round(n / 2 - math.sqrt(n)))  # as in Bonett & Price's own implementation
    return c - 1, n - c


def _min_p(n_a: int, n_b: int, exact: bool) -> float:
    """The smallest two-sided Mann-Whitney p, reached when A and B are completely separated."""
    if exact:
        return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))
    n = n_a + n_b
    sigma = math.sqrt(n_a * n_b * (n + 1) / 12)
    return float(min(1.0, 2 * special.ndtr(-(n_a * n_b / 2 - 0.5) / sigma)))


STAT_BLOCK = 1 << 14  # points per block in _statistics: a block's 20 + 20 samples stay in cache


def _all_positive(samples: Samples) -> bool:
    """Whether every sample of the run is a positive time (NaN fails too): then no point is damaged."""
    return bool(len(samples.values) == 0 or samples.values.min() > 0)


def _statistics(rows_a: np.ndarray, rows_b: np.ndarray, samples_a: Samples, samples_b: Samples,
                s: Settings) -> dict[str, np.ndarray]:
    """Per matched point: sample counts, the CI of the ratio of medians, the Mann-Whitney p.
    A point whose samples hold a zero, negative or missing time is flagged `damaged`, not tested."""
    n = len(rows_a)
    out = {k: np.full(n, np.nan) for k in ("ci_low", "ci_high", "p_value", "min_p")}
    damaged = np.zeros(n, dtype=bool)
    len_a, len_b = samples_a.lengths[rows_a].copy(), samples_b.lengths[rows_b].copy()
    z = special.ndtri(1 - (1 - s.confidence) / 2)
    positive = _all_positive(samples_a) and _all_positive(samples_b)
    if n and len_a.min() == len_a.max() and len_b.min() == len_b.max():
        groups = {(len_a[0], len_b[0]): np.arange(n)}  # every point has the same counts: one group
    else:
        groups = pd.DataFrame({"na": len_a, "nb": len_b}).groupby(["na", "nb"]).indices
    # a block of points at a time: its samples and their sort stay small and in cache, where a
    # million points' would be hundreds of MB of fresh memory to fault in (slower than the statistics)
    blocks = ((na, nb, idx[lo:lo + STAT_BLOCK]) for (na, nb), idx in groups.items() for lo in range(0, len(idx), STAT_BLOCK))
    for na, nb, idx in blocks:
        na, nb = int(na), int(nb)
        if na == 0 or nb == 0:
            continue
        xa, xb = samples_a.matrix(rows_a[idx], na, copy=False), samples_b.matrix(rows_b[idx], nb, copy=False)
        if not positive:
            bad = ~((xa > 0).all(axis=1) & (xb > 0).all(axis=1))  # NaN fails the comparison too
            if bad.any():
                damaged[idx[bad]] = True
                idx, xa, xb = idx[~bad], xa[~bad], xb[~bad]
        block = _SortedBlock(xa, xb)
        # each side's two middle samples and the pair around them that bounds the median's CI
        a = block.order_statistics("a", [(na - 1) // 2, na // 2, *_order_pair(na)])
        b = block.order_statistics("b", [(nb - 1) // 2, nb // 2, *_order_pair(nb)])
        log_ratio = np.log(_median(b[:, 0], b[:, 1])) - np.log(_median(a[:, 0], a[:, 1]))
        half = z * np.sqrt(_log_median_var(a[:, 2], a[:, 3], na) + _log_median_var(b[:, 2], b[:, 3], nb))
        out["ci_low"][idx] = np.exp(log_ratio - half)
        out["ci_high"][idx] = np.exp(log_ratio + half)
        p, exact = block.mann_whitney_p()
        out["p_value"][idx] = p
        out["min_p"][idx] = np.where(exact, _min_p(na, nb, True), _min_p(na, nb, False))
    return {"n_a": len_a, "n_b": len_b, "damaged": damaged, **out}


def _median(middle_low: np.ndarray, middle_high: np.ndarray) -> np.ndarray:
    """The sample median from the two middle order statistics (the same one for an odd count)."""
    return (middle_low + middle_high) / 2


class _SortedBlock:
    """Points' positive samples of A (g x na) and B (g x nb), sorted once, merged: what the medians,
    their CIs and the Mann-Whitney U all read. A positive double's bits, read as an unsigned
    integer, order as the double does; shifted left one bit, with that bit saying which run the
    sample came from (B: 1), one integer sort of each merged row orders the samples and puts an A
    sample before a B sample of the same time (see `_u_by_sorting`). Each run's samples, in order,
    are then the merged row's entries with its flag (no second sort)."""

    def __init__(self, xa: np.ndarray, xb: np.ndarray):
        self.na, self.nb = xa.shape[1], xb.shape[1]
        one = np.uint64(1)
        merged = np.empty((len(xa), self.na + self.nb), dtype=np.uint64)
        np.left_shift(np.ascontiguousarray(xa).view(np.uint64), one, out=merged[:, :self.na])
        np.left_shift(np.ascontiguousarray(xb).view(np.uint64), one, out=merged[:, self.na:])
        merged[:, self.na:] |= one
        merged.sort(axis=1)
        self.merged = merged
        self.flag = merged & one
        from_b = self.flag.astype(bool).ravel()
        flat = merged.ravel()
        self._sorted = {"a": np.compress(~from_b, flat).reshape(len(xa), self.na),
                        "b": np.compress(from_b, flat).reshape(len(xa), self.nb)}

    def order_statistics(self, side: str, ranks: list[int]) -> np.ndarray:
        """The samples of each point on one side ("a", "b") at these 0-based ranks, as columns."""
        return (self._sorted[side][:, ranks] >> np.uint64(1)).view(np.float64)

    def sorted(self, side: str) -> np.ndarray:
        """Each point's samples on one side, sorted."""
        return (self._sorted[side] >> np.uint64(1)).view(np.float64)

    def ties(self) -> np.ndarray:
        """Which points have two equal samples (equal times differ by at most the flag bit)."""
        g, n = self.merged.shape
        flat = self.merged.ravel()
        close = np.flatnonzero(flat[1:] - flat[:-1] <= np.uint64(1))  # wraps to huge where it falls
        close = close[close % n != n - 1]  # a pair across two rows is no tie
        tied = np.zeros(g, dtype=bool)
        tied[close // n] = True
        return tied

    def mann_whitney_p(self) -> tuple[np.ndarray, np.ndarray]:
        """`mann_whitney_p` of the block's points, from the one merged sort."""
        na, nb = self.na, self.nb
        g, n = self.merged.shape
        if na == 1 and nb == 1:
            return np.ones(g), np.zeros(g, dtype=bool)
        # positions of the b's (flag 1) summed; the a's hold the rest of 0 + 1 + ... + (na + nb - 1)
        b_positions = self.flag.astype(np.float64) @ np.arange(n, dtype=np.float64)
        u = (n * (n - 1) / 2 - b_positions) - na * (na - 1) / 2
        tied = self.ties()
        ties = np.zeros(g)
        if tied.any():  # half of each equal a-b pair, and the tie correction, for the rows with ties
            a, b = self.sorted("a")[tied], self.sorted("b")[tied]
            u[tied] += 0.5 * np.count_nonzero(a[:, :, None] == b[:, None, :], axis=(1, 2))
            ties[tied] = _tie_term(np.concatenate([a, b], axis=1))
        return _p_from_u(u, ties, na, nb, lambda rows: (self.sorted("a")[rows], self.sorted("b")[rows]))


def mann_whitney_p(xa: np.ndarray, xb: np.ndarray, chunk: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney U p-value per row of sorted samples (xa: g x na, xb: g x nb), and
    whether it is exact.

    Rows with 8 or fewer samples on a side and no ties use scipy's exact distribution. The others
    use the normal approximation with tie and continuity corrections, as scipy's asymptotic method
    does, computed here for all rows at once (scipy ranks row by row through a general routine that
    takes minutes on a million points; tests check both agree)."""
    na, nb = xa.shape[1], xb.shape[1]
    g = len(xa)
    if na == 1 and nb == 1:
        return np.ones(g), np.zeros(g, dtype=bool)
    u, ties = np.empty(g), np.zeros(g)
    for lo in range(0, g, chunk):
        a, b = xa[lo:lo + chunk], xb[lo:lo + chunk]
        u[lo:lo + chunk], tied = _u_statistic(a, b)
        if tied.any():  # the tie correction, for the rows that have ties (timer ticks make them)
            ties[lo:lo + chunk][tied] = _tie_term(np.concatenate([a[tied], b[tied]], axis=1))
    return _p_from_u(u, ties, na, nb, lambda rows: (xa[rows], xb[rows]))


def _p_from_u(u: np.ndarray, ties: np.ndarray, na: int, nb: int, samples) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p of each row's U (normal approximation with tie and continuity corrections;
    scipy's exact distribution for untied rows with 8 or fewer samples on a side, whose samples
    `samples(rows)` gives), and whether it is exact."""
    n = na + nb
    sigma = np.sqrt(na * nb / 12 * ((n + 1) - ties / (n * (n - 1))))
    dev = np.abs(u - na * nb / 2) - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(sigma > 0, np.minimum(1.0, 2 * special.ndtr(-np.maximum(dev, 0) / sigma)), 1.0)
    exact = np.zeros(len(u), dtype=bool)
    if min(na, nb) <= 8:
        untied = ties == 0
        if untied.any():
            from scipy.stats import mannwhitneyu

            xa, xb = samples(untied)
            p[untied] = mannwhitneyu(xa, xb, axis=1, alternative="two-sided", method="exact").pvalue
            exact[untied] = True
    return p, exact


def _u_statistic(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U of A per row (pairs a > b count 1, ties 1/2) and which rows have any tie. Times (all
    positive) take one integer sort per row (`_u_by_sorting`); other values the pairwise
    comparison while na x nb is small, ranks of the merged row (n log n) beyond that."""
    na, nb = a.shape[1], b.shape[1]
    if a.dtype == np.float64 and b.dtype == np.float64 and (a > 0).all() and (b > 0).all():
        return _u_by_sorting(a, b)
    if na * nb <= 1024:
        equal = np.count_nonzero(a[:, :, None] == b[:, None, :], axis=(1, 2))
        u = np.count_nonzero(a[:, :, None] > b[:, None, :], axis=(1, 2)) + 0.5 * equal
        tied = (equal > 0) | (a[:, 1:] == a[:, :-1]).any(axis=1) | (b[:, 1:] == b[:, :-1]).any(axis=1)
        return u, tied
    merged = np.concatenate([a, b], axis=1)
    order = np.argsort(merged, axis=1, kind="stable")
    ordered = np.take_along_axis(merged, order, axis=1)
    g, n = ordered.shape
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = (np.cumsum(starts, axis=1) - 1 + (np.arange(g) * n)[:, None]).ravel()
    length = np.bincount(run, minlength=g * n)
    first = np.zeros(g * n, dtype=np.int64)
    flat_starts = np.flatnonzero(starts.ravel())
    first[run[flat_starts]] = flat_starts % n
    rank = first[run] + (length[run] + 1) / 2  # 1-based average rank of each sorted element
    rank_a = np.where((order < na).ravel(), rank, 0.0).reshape(g, n).sum(axis=1)
    return rank_a - na * (na + 1) / 2, ~starts[:, 1:].all(axis=1)


def _u_by_sorting(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_u_statistic` for positive samples. A positive double's bits, read as an unsigned integer,
    order as the double does; shifted left one bit, with that bit saying which run the sample
    came from, an A sample sorts before a B sample of the same time. One integer sort of the
    merged row then puts every a after exactly the b's below it: U is the sum of the a's positions
    less their own, plus half of each equal a-b pair, counted only in the rows that have a tie
    (rare: timer ticks). 20 against 20 samples: one sort of 40 integers instead of 400 pairwise
    comparisons, about a fifth of the time."""
    na, nb = a.shape[1], b.shape[1]
    one = np.uint64(1)
    merged = np.concatenate([np.ascontiguousarray(a).view(np.uint64) << one,
                             (np.ascontiguousarray(b).view(np.uint64) << one) | one], axis=1)
    merged.sort(axis=1)
    # positions of the b's (flag 1) summed; the a's hold the rest of 0 + 1 + ... + (na + nb - 1)
    n = na + nb
    b_positions = (merged & one).astype(np.float64) @ np.arange(n, dtype=np.float64)
    u = (n * (n - 1) / 2 - b_positions) - na * (na - 1) / 2
    tied = (np.diff(merged, axis=1) <= one).any(axis=1)  # equal times differ by at most the flag bit
    if tied.any():
        u[tied] += 0.5 * np.count_nonzero(a[tied][:, :, None] == b[tied][:, None, :], axis=(1, 2))
    return u, tied


def _tie_term(x: np.ndarray) -> np.ndarray:
    """Sum over groups of equal values of t^3 - t, per row."""
    g, n = x.shape
    merged = np.sort(x, axis=1)
    starts = np.ones(merged.shape, dtype=bool)
    starts[:, 1:] = merged[:, 1:] != merged[:, :-1]
    run = np.cumsum(starts, axis=1) - 1 + (np.arange(g) * n)[:, None]
    t = np.bincount(run.ravel(), minlength=g * n).astype(np.float64)
    return (t ** 3 - t).reshape(g, n).sum(axis=1)


def _verdicts(p: pd.DataFrame, s: Settings) -> pd.Series:
    ok = (p["status_a"] == "ok") & (p["status_b"] == "ok")
    has = (p["n_a"] > 0) & (p["n_b"] > 0)
    big = (p["ratio"] >= 1 + s.min_effect) | (p["ratio"] <= 1 / (1 + s.min_effect))
    significant = p["p_value"] < s.alpha
    which = np.select(
        [~ok, p["damaged"], ~has, p["min_p"] >= s.alpha, significant & big & (p["ratio"] > 1), significant & big],
        np.arange(6), default=6)
    # a small integer per point naming its label (a categorical column): a million labels as
    # text cost more to make, count and sort than deciding them
    labels = [NOT_COMPARED, DAMAGED, NO_SAMPLES, FEW, SLOWER, FASTER, SAME]
    return pd.Series(pd.Categorical.from_codes(which.astype(np.int8), categories=labels), index=p.index)


def _why_not(p: pd.DataFrame) -> pd.Series:
    note = pd.Series("", index=p.index)
    bad_of = {which: p[f"status_{which}"] != "ok" for which in ("a", "b")}
    for which, bad in bad_of.items():
        if not bad.any():
            continue  # the usual case: every point passed its check in both runs
        reason = p.loc[bad, f"reason_{which}"].astype(object).where(p.loc[bad, f"reason_{which}"].notna(), "")
        text = p.loc[bad, f"status_{which}"] + f" in {which.upper()}: " + reason.astype(str)
        note.loc[bad] = note.loc[bad].where(note.loc[bad] == "", note.loc[bad] + "; ") + text
    return note


def compare_frames(df_a: pd.DataFrame, df_b: pd.DataFrame, settings: Settings = Settings(),
                   samples_a: Samples | None = None, samples_b: Samples | None = None) -> Comparison:
    """Compare two runs' rows. Raw samples come from each frame's `samples_s` column, or, for large
    runs loaded with load_run_samples, from the flat Samples given beside the frames."""
    samples_a = samples_a if samples_a is not None else samples_of(df_a)
    samples_b = samples_b if samples_b is not None else samples_of(df_b)
    notes: list[str] = []
    params_of = _family_params(df_a, df_b, notes)
    points_a, points_b = _points(df_a, params_of), _points(df_b, params_of)
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
            i_a, i_b = at_a[both], at_b[both]
            full = len(both) == len(pa_) == len(pb_) and (i_a == np.arange(len(both))).all()
            rows_a = None if full else i_a  # A's points in key order already (the usual case)
            matched.append(pd.DataFrame({
                **{p: _take(pa_.keys[p], rows_a) for p in params},
                "status_a": _take(pa_.status, rows_a), "reason_a": _take(pa_.reason, rows_a),
                "median_s_a": _take(pa_.median_s, rows_a), "_row_a": pa_.row[i_a],
                "status_b": _take(pb_.status, i_b), "reason_b": _take(pb_.reason, i_b),
                "median_s_b": _take(pb_.median_s, i_b), "_row_b": pb_.row[i_b], "benchmark": name},
                copy=False))  # not copied again into 2-D blocks: the frame is read column by column
    for side, parts in (("A", points_a), ("B", points_b)):
        for name in parts:  # in the run's own order of families
            if repeated.get((side, name)):
                notes.append(f"{name}: {repeated[side, name]} repeated point(s) in run {side}: "
                             "the last of each is compared")
    if not matched:
        raise UserError("the two runs have no point in common (nothing to compare): "
                        f"A has {', '.join(points_a) or 'no comparable points'}, "
                        f"B has {', '.join(points_b) or 'no comparable points'}")
    points = matched[0] if len(matched) == 1 else pd.concat(matched, ignore_index=True)
    rows_a, rows_b = (points.pop(c).to_numpy().astype(np.int64) for c in ("_row_a", "_row_b"))
    stat = _statistics(rows_a, rows_b, samples_a, samples_b, settings)
    for column, values in stat.items():
        points[column] = values
    points["ratio"] = points["median_s_b"] / points["median_s_a"]
    points["change_pct"] = (points["ratio"] - 1) * 100
    points["verdict"] = _verdicts(points, settings)
    points["note"] = _why_not(points)
    if points["damaged"].any():
        notes.append(f"{int(points['damaged'].sum())} point(s) with a zero, negative or missing time sample: "
                     "not tested (see the verdict 'damaged samples')")
    env_a, env_b = environment_of(df_a.attrs.get("metadata", {})), environment_of(df_b.attrs.get("metadata", {}))
    differ = [(k, env_a[k], env_b[k]) for k in ENV_FIELDS if env_a[k] != env_b[k]]
    return Comparison(points=points, only_a=_concat(only_a), only_b=_concat(only_b), environment=differ,
                      notes=notes, params=params_of)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["benchmark"])
