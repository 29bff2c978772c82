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

Everything is vectorised over points (grouped by sample counts), so a million points take seconds.
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


def _harmonise(a: pd.DataFrame, b: pd.DataFrame, params: list[str]) -> None:
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


def _param_column(rows: pd.DataFrame, p: str, defaults: dict) -> pd.Series:
    """A key column; where the run did not record the param, the family's default for it."""
    if p not in rows.columns:
        return pd.Series(defaults.get(p, ""), index=rows.index)
    return rows[p].fillna(defaults[p]) if p in defaults else rows[p]


def _points(df: pd.DataFrame, params_of: dict[str, tuple[str, ...]], notes: list[str], side: str) -> dict[str, pd.DataFrame]:
    """Per family: the rows that are measured points (timed, or failed/skipped with a reason), with
    `_row`, their position in the run (where their samples are)."""
    out = {}
    if df.empty or "benchmark" not in df.columns:
        return out
    # only the columns the join needs: a million-row frame is not copied whole
    needed = join_columns(params_of)
    df = df[[c for c in df.columns if c in needed]].assign(_row=np.arange(len(df)))
    for name, rows in df.groupby("benchmark", sort=False):
        params = params_of.get(str(name))
        if params is None:
            continue
        median = rows["median_s"] if "median_s" in rows.columns else pd.Series(np.nan, index=rows.index)
        status = rows["status"] if "status" in rows.columns else pd.Series("ok", index=rows.index)
        measured = median.notna() | (status != "ok")
        if "record" in rows.columns:  # fits and projections are derived from the points, not points
            measured &= rows["record"].isna() | (rows["record"] == "measurement")
        rows = rows[measured]
        defaults = registry.param_defaults(str(name))
        keys = pd.DataFrame({p: _key_column(_param_column(rows, p, defaults)) for p in params}, index=rows.index)
        part = keys.assign(status=status.loc[rows.index].astype(str),
                           reason=rows["reason"] if "reason" in rows.columns else None,
                           median_s=pd.to_numeric(median.loc[rows.index], errors="coerce"), _row=rows["_row"])
        dup = part.duplicated(list(params), keep="last")
        if dup.any():
            notes.append(f"{name}: {int(dup.sum())} repeated point(s) in run {side}: the last of each is compared")
            part = part[~dup]
        out[str(name)] = part.reset_index(drop=True)
    return out


def point_labels(frame: pd.DataFrame, params_of: dict[str, tuple[str, ...]]) -> list[str]:
    """'M=4096 N=4096 K=4096 kernel=triton_fp8_block' for each row (built only for what is shown)."""
    labels = []
    for row in frame.to_dict("records"):
        params = params_of.get(row["benchmark"], ())
        labels.append(" ".join(f"{p}={fmt(row.get(p))}" for p in params if fmt(row.get(p)) != ""))
    return labels


def _log_median_var(sorted_x: np.ndarray) -> np.ndarray:
    """Bonett-Price variance of the log sample median, per row of sorted samples (one n)."""
    n = sorted_x.shape[1]
    c = max(1, int(round(n / 2 - math.sqrt(n))))  # as in Bonett & Price's own implementation
    tail = special.bdtr(c - 1, n, 0.5)  # P(the median lies outside [x_(c), x_(n-c+1)]) / 2
    z = special.ndtri(1 - tail) if tail > 0 else np.inf
    if not z > 0:
        return np.full(sorted_x.shape[0], np.nan)
    spread = np.log(sorted_x[:, n - c]) - np.log(sorted_x[:, c - 1])
    return (spread / (2 * z)) ** 2


def _min_p(n_a: int, n_b: int, exact: bool) -> float:
    """The smallest two-sided Mann-Whitney p, reached when A and B are completely separated."""
    if exact:
        return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))
    n = n_a + n_b
    sigma = math.sqrt(n_a * n_b * (n + 1) / 12)
    return float(min(1.0, 2 * special.ndtr(-(n_a * n_b / 2 - 0.5) / sigma)))


STAT_BLOCK = 1 << 16  # points per block in _statistics


def _statistics(rows_a: np.ndarray, rows_b: np.ndarray, samples_a: Samples, samples_b: Samples,
                s: Settings) -> pd.DataFrame:
    """Per matched point: sample counts, the CI of the ratio of medians, the Mann-Whitney p.
    A point whose samples hold a zero, negative or missing time is flagged `damaged`, not tested."""
    n = len(rows_a)
    out = {k: np.full(n, np.nan) for k in ("ci_low", "ci_high", "p_value", "min_p")}
    damaged = np.zeros(n, dtype=bool)
    len_a, len_b = samples_a.lengths[rows_a].copy(), samples_b.lengths[rows_b].copy()
    z = special.ndtri(1 - (1 - s.confidence) / 2)
    groups = pd.DataFrame({"na": len_a, "nb": len_b}).groupby(["na", "nb"]).indices
    # a block of points at a time: its sample copies stay small and reused, where a million
    # points' would be hundreds of MB of fresh memory to fault in (slower than the statistics)
    blocks = ((na, nb, idx[lo:lo + STAT_BLOCK]) for (na, nb), idx in groups.items() for lo in range(0, len(idx), STAT_BLOCK))
    for na, nb, idx in blocks:
        if na == 0 or nb == 0:
            continue
        xa, xb = samples_a.matrix(rows_a[idx], int(na)), samples_b.matrix(rows_b[idx], int(nb))
        bad = ~((xa > 0).all(axis=1) & (xb > 0).all(axis=1))  # NaN fails the comparison too
        if bad.any():
            damaged[idx[bad]] = True
            idx, xa, xb = idx[~bad], xa[~bad], xb[~bad]
        xa.sort(axis=1)  # in place: matrix() returned a copy
        xb.sort(axis=1)
        log_ratio = np.log(_median(xb)) - np.log(_median(xa))
        half = z * np.sqrt(_log_median_var(xa) + _log_median_var(xb))
        out["ci_low"][idx] = np.exp(log_ratio - half)
        out["ci_high"][idx] = np.exp(log_ratio + half)
        p, exact = mann_whitney_p(xa, xb)
        out["p_value"][idx] = p
        out["min_p"][idx] = np.where(exact, _min_p(int(na), int(nb), True), _min_p(int(na), int(nb), False))
    return pd.DataFrame({"n_a": len_a, "n_b": len_b, "damaged": damaged, **out})


def _median(sorted_x: np.ndarray) -> np.ndarray:
    n = sorted_x.shape[1]
    return (sorted_x[:, (n - 1) // 2] + sorted_x[:, n // 2]) / 2


def mann_whitney_p(xa: np.ndarray, xb: np.ndarray, chunk: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney U p-value per row of sorted samples (xa: g x na, xb: g x nb), and
    whether it is exact.

    Rows with 8 or fewer samples on a side and no ties use scipy's exact distribution. The others
    use the normal approximation with tie and continuity corrections, as scipy's asymptotic method
    does, computed here for all rows at once (scipy ranks row by row through a general routine that
    takes minutes on a million points; tests check both agree)."""
    na, nb = xa.shape[1], xb.shape[1]
    g = len(xa)
    p, exact = np.empty(g), np.zeros(g, dtype=bool)
    if na == 1 and nb == 1:
        return np.ones(g), exact
    ties = np.zeros(g)
    for lo in range(0, g, chunk):
        a, b = xa[lo:lo + chunk], xb[lo:lo + chunk]
        u, tied = _u_statistic(a, b)
        if tied.any():  # the tie correction, for the rows that have ties (timer ticks make them)
            ties[lo:lo + chunk][tied] = _tie_term(np.concatenate([a[tied], b[tied]], axis=1))
        n = na + nb
        sigma = np.sqrt(na * nb / 12 * ((n + 1) - ties[lo:lo + chunk] / (n * (n - 1))))
        dev = np.abs(u - na * nb / 2) - 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            p[lo:lo + chunk] = np.where(sigma > 0, np.minimum(1.0, 2 * special.ndtr(-np.maximum(dev, 0) / sigma)), 1.0)
    if min(na, nb) <= 8:
        untied = ties == 0
        if untied.any():
            from scipy.stats import mannwhitneyu

            p[untied] = mannwhitneyu(xa[untied], xb[untied], axis=1, alternative="two-sided", method="exact").pvalue
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
    # a small integer per point, then its label, as Python objects: converting a million labels
    # to pandas' text dtype costs more than deciding them
    labels = np.array([NOT_COMPARED, DAMAGED, NO_SAMPLES, FEW, SLOWER, FASTER, SAME], dtype=object)
    return pd.Series(labels[which], index=p.index, dtype=object)


def _why_not(p: pd.DataFrame) -> pd.Series:
    note = pd.Series("", index=p.index)
    for which in ("a", "b"):
        bad = p[f"status_{which}"] != "ok"
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
    points_a, points_b = _points(df_a, params_of, notes, "A"), _points(df_b, params_of, notes, "B")
    matched, only_a, only_b = [], [], []
    for name in dict.fromkeys([*points_a, *points_b]):
        params = list(params_of[name])
        pa_, pb_ = points_a.get(name), points_b.get(name)
        if pa_ is None or pb_ is None:
            (only_a if pa_ is not None else only_b).append((pa_ if pa_ is not None else pb_)[params].assign(benchmark=name))
            continue
        _harmonise(pa_, pb_, params)
        joined = pa_.merge(pb_, on=params, how="outer", suffixes=("_a", "_b"), indicator=True)
        only_a.append(joined.loc[joined["_merge"] == "left_only", params].assign(benchmark=name))
        only_b.append(joined.loc[joined["_merge"] == "right_only", params].assign(benchmark=name))
        both = joined[joined["_merge"] == "both"].drop(columns="_merge").assign(benchmark=name)
        if len(both):
            matched.append(both)
    if not matched:
        raise UserError("the two runs have no point in common (nothing to compare): "
                        f"A has {', '.join(points_a) or 'no comparable points'}, "
                        f"B has {', '.join(points_b) or 'no comparable points'}")
    points = pd.concat(matched, ignore_index=True)
    rows_a, rows_b = (points.pop(c).to_numpy().astype(np.int64) for c in ("_row_a", "_row_b"))
    stat = _statistics(rows_a, rows_b, samples_a, samples_b, settings)
    points = pd.concat([points.reset_index(drop=True), stat], axis=1)
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
