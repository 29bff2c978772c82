"""What a MAMF search found, per dtype: its best shape and the means over every shape measured.

- best (the MAMF): the shape with the shortest median time per FLOP, i.e. the highest `tflops`;
- best by max: the highest `tflops_max` (from each shape's fastest call; mamf-finder's "max");
- arithmetic and geometric mean of `tflops` over every ok shape of the dtype.
A tie goes to the shape visited first. These are derived records (`record: summary`), not points.
"""

from __future__ import annotations

import math

from hpcbench.results.schema import STATUS_OK

SUMMARY = "summary"


def shape_label(r: dict) -> str:
    return f"{int(r['M'])}x{int(r['N'])}x{int(r['K'])}"


def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def ok_points(rows: list[dict]) -> list[dict]:
    """The ok point rows among `rows` (summaries, failures and skips left out)."""
    return [r for r in rows if r.get("record") in (None, "point") and r.get("status") == STATUS_OK
            and _number(r.get("tflops")) is not None]


def merge_points(earlier: list[dict], current: list[dict]) -> list[dict]:
    """Earlier attempts' points then this attempt's, one per (M, N, K, dtype): a point measured again
    (force=true) counts once, with its newest row."""
    out: dict[tuple, dict] = {}
    for r in [*ok_points(earlier), *ok_points(current)]:
        out[(int(r["M"]), int(r["N"]), int(r["K"]), r["dtype"])] = r
    return list(out.values())


def summary_rows(points: list[dict], dtypes: list[str]) -> list[dict]:
    """One summary row per dtype of `dtypes` that has ok points, in that order."""
    out = []
    for dtype in dtypes:
        mine = [r for r in ok_points(points) if r["dtype"] == dtype]
        if not mine:
            continue
        values = [float(r["tflops"]) for r in mine]
        best = max(mine, key=lambda r: float(r["tflops"]))  # max() keeps the first of equals
        with_max = [r for r in mine if _number(r.get("tflops_max")) is not None]
        best_max = max(with_max, key=lambda r: float(r["tflops_max"])) if with_max else None
        peak = _number(best.get("peak_tflops"))
        out.append({
            "record": SUMMARY, "dtype": dtype, "status": STATUS_OK, "reason": None, "shapes": len(mine),
            "best_shape": shape_label(best), "best_M": int(best["M"]), "best_N": int(best["N"]),
            "best_K": int(best["K"]), "best_tflops": float(best["tflops"]),
            "best_median_s": _number(best.get("median_s")), "peak_tflops": peak,
            "best_pct_peak": 100 * float(best["tflops"]) / peak if peak else None,
            "best_max_shape": shape_label(best_max) if best_max else None,
            "best_max_tflops": float(best_max["tflops_max"]) if best_max else None,
            "mean_tflops": sum(values) / len(values),
            "geomean_tflops": math.exp(sum(math.log(v) for v in values) / len(values)),
        })
    return out
