"""Join two runs on their benchmark parameters and decide, point by point, what changed.

The join key is each family's PARAMS (hpcbench.benchmarks.<name>.PARAMS), never row order: the
same GEMM shape and kernel, the same collective and size, the same schedule. Every timed row keeps
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
from scipy import stats

from hpcbench import benchmarks
from hpcbench.errors import UserError

FASTER, SLOWER, SAME = "faster", "slower", "no change"
FEW = "too few samples"
NO_SAMPLES = "no raw samples"
NOT_COMPARED = "not compared"

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

    def regressions(self, threshold_pct: float) -> pd.DataFrame:
        """Points significantly slower by at least threshold_pct, or that passed in A and fail in B."""
        p = self.points
        slower = (p["verdict"] == SLOWER) & ((p["ratio"] - 1) * 100 >= threshold_pct)
        broke = (p["status_a"] == "ok") & (p["status_b"] == "failed")
        return p[slower | broke]


def environment_of(metadata: dict) -> dict:
    env = {k: metadata.get(k) for k in ENV_FIELDS}
    dist = metadata.get("distributed") or {}
    env["world_size"] = dist.get("world_size", env["world_size"])
    env["backend"] = dist.get("backend")
    return env


def _params(name: str) -> tuple[str, ...] | None:
    try:
        return tuple(getattr(benchmarks.load(name), "PARAMS", None) or ()) or None
    except UserError:
        return None  # a family this hpcbench does not know


def _key_column(s: pd.Series) -> pd.Series:
    """One dtype per key column on both sides, so 4096 meets 4096.0 and None meets NaN."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype(str)
    if pd.api.types.is_numeric_dtype(s):
        return s.astype("float64")
    numeric = pd.to_numeric(s, errors="coerce")
    if numeric.notna().sum() == s.notna().sum() and not s.map(lambda v: isinstance(v, bool)).any():
        return numeric.astype("float64")
    return s.astype(object).where(s.notna(), "").astype(str)


def _points(df: pd.DataFrame, notes: list[str], side: str) -> dict[str, pd.DataFrame]:
    """Per family: the rows that are measured points (timed, or failed/skipped with a reason)."""
    out = {}
    if df.empty or "benchmark" not in df.columns:
        return out
    for name, rows in df.groupby("benchmark", sort=False):
        params = _params(str(name))
        if params is None:
            notes.append(f"{name}: no PARAMS declared (or unknown family): not comparable")
            continue
        median = rows["median_s"] if "median_s" in rows.columns else pd.Series(np.nan, index=rows.index)
        status = rows["status"] if "status" in rows.columns else pd.Series("ok", index=rows.index)
        rows = rows[median.notna() | (status != "ok")]
        keys = pd.DataFrame({p: _key_column(rows[p]) if p in rows.columns else "" for p in params}, index=rows.index)
        part = keys.assign(status=status.loc[rows.index].astype(str),
                           reason=rows["reason"] if "reason" in rows.columns else None,
                           median_s=pd.to_numeric(median.loc[rows.index], errors="coerce"),
                           samples_s=rows["samples_s"] if "samples_s" in rows.columns else None)
        dup = part.duplicated(list(params), keep="last")
        if dup.any():
            notes.append(f"{name}: {int(dup.sum())} repeated point(s) in run {side}: the last of each is compared")
            part = part[~dup]
        out[str(name)] = part.reset_index(drop=True)
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else (str(int(value)) if value.is_integer() else f"{value:g}")
    return "" if value is None else str(value)


def point_labels(frame: pd.DataFrame) -> list[str]:
    """'M=4096 N=4096 K=4096 kernel=triton_fp8_block' for each row (built only for what is shown)."""
    labels = []
    for row in frame.to_dict("records"):
        params = _params(row["benchmark"]) or ()
        labels.append(" ".join(f"{p}={_fmt(row.get(p))}" for p in params if _fmt(row.get(p)) != ""))
    return labels


def _sample_matrix(column: pd.Series) -> tuple[np.ndarray, list]:
    lengths = np.fromiter((0 if v is None or (isinstance(v, float) and math.isnan(v)) else len(v)
                           for v in column), dtype=np.int64, count=len(column))
    return lengths, list(column)


def _log_median_var(sorted_x: np.ndarray) -> np.ndarray:
    """Bonett-Price variance of the log sample median, per row of sorted samples (one n)."""
    n = sorted_x.shape[1]
    c = max(1, int(round((n + 1) / 2 - math.sqrt(n))))
    tail = stats.binom.cdf(c - 1, n, 0.5)  # P(the median lies outside [x_(c), x_(n-c+1)]) / 2
    z = stats.norm.isf(tail) if tail > 0 else np.inf
    if not z > 0:
        return np.full(sorted_x.shape[0], np.nan)
    spread = np.log(sorted_x[:, n - c]) - np.log(sorted_x[:, c - 1])
    return (spread / (2 * z)) ** 2


def _min_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided exact Mann-Whitney p: A and B completely separated."""
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def _statistics(a: pd.Series, b: pd.Series, s: Settings) -> pd.DataFrame:
    n = len(a)
    out = pd.DataFrame({"n_a": 0, "n_b": 0, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                        "min_p": np.nan, "sample_ratio": np.nan}, index=range(n))
    len_a, list_a = _sample_matrix(a)
    len_b, list_b = _sample_matrix(b)
    out["n_a"], out["n_b"] = len_a, len_b
    z = stats.norm.isf((1 - s.confidence) / 2)
    groups = pd.DataFrame({"na": len_a, "nb": len_b}).groupby(["na", "nb"]).indices
    for (na, nb), idx in groups.items():
        if na == 0 or nb == 0:
            continue
        xa = np.sort(np.concatenate([np.asarray(list_a[i], dtype=np.float64) for i in idx]).reshape(-1, na), axis=1)
        xb = np.sort(np.concatenate([np.asarray(list_b[i], dtype=np.float64) for i in idx]).reshape(-1, nb), axis=1)
        if (xa <= 0).any() or (xb <= 0).any():
            raise UserError("a time sample is zero or negative: the run is damaged")
        log_ratio = np.log(np.median(xb, axis=1)) - np.log(np.median(xa, axis=1))
        half = z * np.sqrt(_log_median_var(xa) + _log_median_var(xb))
        out.loc[idx, "sample_ratio"] = np.exp(log_ratio)
        out.loc[idx, "ci_low"] = np.exp(log_ratio - half)
        out.loc[idx, "ci_high"] = np.exp(log_ratio + half)
        out.loc[idx, "min_p"] = _min_p(int(na), int(nb))
        if na > 1 or nb > 1:
            out.loc[idx, "p_value"] = stats.mannwhitneyu(xa, xb, axis=1, alternative="two-sided").pvalue
    return out


def _verdicts(p: pd.DataFrame, s: Settings) -> pd.Series:
    ok = (p["status_a"] == "ok") & (p["status_b"] == "ok")
    has = (p["n_a"] > 0) & (p["n_b"] > 0)
    big = (p["ratio"] >= 1 + s.min_effect) | (p["ratio"] <= 1 / (1 + s.min_effect))
    significant = p["p_value"] < s.alpha
    verdict = np.select(
        [~ok, ~has, p["min_p"] >= s.alpha, significant & big & (p["ratio"] > 1), significant & big],
        [NOT_COMPARED, NO_SAMPLES, FEW, SLOWER, FASTER], default=SAME)
    return pd.Series(verdict, index=p.index)


def _why_not(p: pd.DataFrame) -> pd.Series:
    note = pd.Series("", index=p.index)
    for which in ("a", "b"):
        bad = p[f"status_{which}"] != "ok"
        reason = p.loc[bad, f"reason_{which}"].astype(object).where(p.loc[bad, f"reason_{which}"].notna(), "")
        text = p.loc[bad, f"status_{which}"] + f" in {which.upper()}: " + reason.astype(str)
        note.loc[bad] = note.loc[bad].where(note.loc[bad] == "", note.loc[bad] + "; ") + text
    return note


def compare_frames(df_a: pd.DataFrame, df_b: pd.DataFrame, settings: Settings = Settings()) -> Comparison:
    notes: list[str] = []
    points_a, points_b = _points(df_a, notes, "A"), _points(df_b, notes, "B")
    matched, only_a, only_b = [], [], []
    for name in dict.fromkeys([*points_a, *points_b]):
        params = list(_params(name))
        pa_, pb_ = points_a.get(name), points_b.get(name)
        if pa_ is None or pb_ is None:
            (only_a if pa_ is not None else only_b).append((pa_ if pa_ is not None else pb_)[params].assign(benchmark=name))
            continue
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
    stat = _statistics(points.pop("samples_s_a"), points.pop("samples_s_b"), settings)
    points = pd.concat([points.reset_index(drop=True), stat], axis=1)
    points["ratio"] = points["median_s_b"] / points["median_s_a"]
    points["change_pct"] = (points["ratio"] - 1) * 100
    points["verdict"] = _verdicts(points, settings)
    points["note"] = _why_not(points)
    points = points.drop(columns=["sample_ratio"])
    env_a, env_b = environment_of(df_a.attrs.get("metadata", {})), environment_of(df_b.attrs.get("metadata", {}))
    differ = [(k, env_a[k], env_b[k]) for k in ENV_FIELDS if env_a[k] != env_b[k]]
    return Comparison(points=points, only_a=_concat(only_a), only_b=_concat(only_b), environment=differ,
                      notes=notes)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["benchmark"])
