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

The join is on one integer per point (compare_keys: each param's values numbered in sorted order,
the numbers combined), and the statistics are vectorised over points (compare_stats: grouped by
sample counts, one integer sort of each point's merged samples serving the U statistic and both
medians), so a million points take under a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hpcbench.analysis.compare_keys import (
    family_params,
    join_points,
    measured_points,
    repeat_notes,
)
from hpcbench.analysis.compare_stats import mann_whitney_p, point_statistics
from hpcbench.api.errors import UserError
from hpcbench.results.reader import Samples
from hpcbench.api.tables import fmt

__all__ = ["DAMAGED", "ENV_FIELDS", "FASTER", "FEW", "NOT_COMPARED", "NO_SAMPLES", "SAME", "SLOWER", "Comparison",
           "Settings", "compare_frames", "environment_of", "join_columns", "mann_whitney_p", "point_labels",
           "samples_of"]  # mann_whitney_p lives in compare_stats; importable from here as before

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
    fallback: tuple[bool, bool] = (False, False)  # A, B measured on the CPU fallback

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

    def not_measured_in_b(self) -> pd.DataFrame:
        """Matched points that passed in A and have no measurement to test in B: skipped there, or
        left with fewer samples than A had and too few to test (a gate must not read them as "no
        change")."""
        p = self.points
        skipped = (p["status_a"] == "ok") & (p["status_b"] == "skipped")
        both_ok = (p["status_a"] == "ok") & (p["status_b"] == "ok")
        thinner = both_ok & p["verdict"].isin([FEW, NO_SAMPLES]) & (p["n_b"] < p["n_a"])
        return p[skipped | thinner]

    def untestable(self) -> int:
        """Points whose change could not be tested (too few, no or damaged samples)."""
        return int(self.points["verdict"].isin([FEW, NO_SAMPLES, DAMAGED]).sum())


def environment_of(metadata: dict) -> dict:
    env = {k: metadata.get(k) for k in ENV_FIELDS}
    dist = metadata.get("distributed") or {}
    env["world_size"] = dist.get("world_size", env["world_size"])
    env["backend"] = dist.get("backend")
    return env


def samples_of(df: pd.DataFrame, column: str = "samples_s") -> Samples:
    """Flat Samples from a DataFrame whose `column` holds a list (or array) per row."""
    return Samples.from_lists(df[column] if column in df.columns else [None] * len(df))


def join_columns(params_of: dict[str, tuple[str, ...]]) -> set[str]:
    """The columns compare reads: what identifies a point, its status and its time."""
    return {"benchmark", "status", "reason", "median_s", "record", *(p for ps in params_of.values() for p in ps)}


def point_labels(frame: pd.DataFrame, params_of: dict[str, tuple[str, ...]]) -> list[str]:
    """'M=4096 N=4096 K=4096 kernel=triton_fp8_block' for each row (built only for what is shown)."""
    labels = []
    for row in frame.to_dict("records"):
        params = params_of.get(row["benchmark"], ())
        labels.append(" ".join(f"{p}={fmt(row.get(p))}" for p in params if fmt(row.get(p)) != ""))
    return labels


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
    params_of = family_params(df_a, df_b, notes)
    points_a, points_b = measured_points(df_a, params_of), measured_points(df_b, params_of)
    matched, only_a, only_b, repeated = join_points(points_a, points_b, params_of)
    notes += repeat_notes(repeated, points_a, points_b)
    if not matched:
        raise UserError("the two runs have no point in common (nothing to compare): "
                        f"A has {', '.join(points_a) or 'no comparable points'}, "
                        f"B has {', '.join(points_b) or 'no comparable points'}")
    points = matched[0] if len(matched) == 1 else pd.concat(matched, ignore_index=True)
    rows_a, rows_b = (points.pop(c).to_numpy().astype(np.int64) for c in ("_row_a", "_row_b"))
    stat = point_statistics(rows_a, rows_b, samples_a, samples_b, settings.confidence)
    for column, values in stat.items():
        points[column] = values
    points["ratio"] = points["median_s_b"] / points["median_s_a"]
    points["change_pct"] = (points["ratio"] - 1) * 100
    points["verdict"] = _verdicts(points, settings)
    points["note"] = _why_not(points)
    if points["damaged"].any():
        notes.append(f"{int(points['damaged'].sum())} point(s) with a zero, negative or missing time sample: "
                     "not tested (see the verdict 'damaged samples')")
    fallback = (_on_cpu_fallback(df_a), _on_cpu_fallback(df_b))
    if any(fallback):
        which = " and ".join(side for side, f in zip("AB", fallback) if f)
        notes.insert(0, f"{which} ran on the CPU fallback: its times are a shared host CPU's, not a GPU's; a "
                        "faster or slower there is a smoke check, not a performance result")
    env_a, env_b = environment_of(df_a.attrs.get("metadata", {})), environment_of(df_b.attrs.get("metadata", {}))
    differ = [(k, env_a[k], env_b[k]) for k in ENV_FIELDS if env_a[k] != env_b[k]]
    return Comparison(points=points, only_a=only_a, only_b=only_b, environment=differ,
                      notes=notes, params=params_of, fallback=fallback)


def _on_cpu_fallback(df: pd.DataFrame) -> bool:
    """Whether a run was measured on the CPU fallback (its metadata says, or its rows do)."""
    meta = df.attrs.get("metadata", {})
    if meta.get("fallback") is not None:
        return bool(meta["fallback"])
    return "fallback" in df.columns and bool(df["fallback"].fillna(False).astype(bool).any())
