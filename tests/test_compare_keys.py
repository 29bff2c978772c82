"""compare's join (compare_keys): a point a run holds more than once is compared by its LAST
occurrence (its recorded median and its samples), the repeats are counted in a note per run and
family, and points (or whole families) that only one run has are listed once each.

The families here are made up (`mm`, `foo`, `bar`), their params recorded in each run's metadata
as a run records them; the registry is stubbed to know no family, which for such names is what
the real one answers, without importing every built-in family (and torch) for it."""

import math

import numpy as np
import pandas as pd
import pytest

from hpcbench.analysis.compare import compare_frames
from hpcbench.api import registry

MM = {"mm": ["M", "N", "K", "kernel"]}


@pytest.fixture(autouse=True)
def _no_builtin_families(monkeypatch):
    monkeypatch.setattr(registry, "families", lambda: {})

# seven distinct samples with median exactly 1.0: a point "at m" holds BASE * m
BASE = [0.97, 0.99, 1.0, 1.01, 1.03, 0.98, 1.02]


def _mm(m: int, median: float, **extra) -> dict:
    return {"benchmark": "mm", "M": m, "N": 64, "K": 64, "kernel": "triton_bf16", "status": "ok",
            "reason": None, "median_s": median, "samples_s": [x * median for x in BASE], **extra}


def _frame(rows, params=None) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df.attrs["metadata"] = {"params": {**MM, **(params or {})}}
    return df


def _point(c, m: int) -> pd.Series:
    rows = c.points[c.points["M"] == m]
    assert len(rows) == 1, f"M={m} matched {len(rows)} times"
    return rows.iloc[0]


def _repeat_notes(c) -> list[str]:
    return [n for n in c.notes if "repeated" in n]


def test_repeated_points_compare_the_last_occurrence_on_each_side():
    a = [_mm(256, 4e-3), _mm(128, 1e-3), _mm(1024, 5e-3), _mm(256, 3e-3), _mm(1024, 6e-3),
         _mm(128, 1.5e-3), _mm(256, 2e-3)]  # 128 twice, 256 three times, 1024 (only in A) twice
    b = [_mm(2048, 7e-3), _mm(256, 9e-3), _mm(128, 1.5e-3), _mm(2048, 8e-3), _mm(256, 3e-3)]
    c = compare_frames(_frame(a), _frame(b))

    assert sorted(c.points["M"].astype(int)) == [128, 256]  # each matched point once
    p128, p256 = _point(c, 128), _point(c, 256)
    # the recorded medians: A's last 128 is 1.5 ms (not 1 ms), A's last 256 is 2 ms (not 4 or 3), B's is 3 ms (not 9)
    assert p128.median_s_a == 1.5e-3 and p128.median_s_b == 1.5e-3 and p128.ratio == pytest.approx(1.0, rel=1e-12)
    assert p256.median_s_a == 2e-3 and p256.median_s_b == 3e-3 and p256.ratio == pytest.approx(1.5, rel=1e-12)
    assert p256.change_pct == pytest.approx(50.0, rel=1e-9)
    # the samples are the last occurrence's too: A's last 128 holds B's very samples (every pair of
    # A and B samples either tied or in balance: U = 24.5 = 7*7/2, p = 1, the interval centred on 1);
    # A's first 128 (1 ms) would be completely apart from B (p = 2 / C(14, 7))
    assert p128.p_value == 1.0 and p128.verdict == "no change"
    assert math.sqrt(p128.ci_low * p128.ci_high) == pytest.approx(1.0, rel=1e-12) and p128.ci_low < 1 < p128.ci_high
    # 256: the interval is centred on 3 ms / 2 ms (the first ones would give 9/4 or 9/3 or 3/4)
    assert math.sqrt(p256.ci_low * p256.ci_high) == pytest.approx(1.5, rel=1e-12)
    assert p256.p_value == pytest.approx(2 / math.comb(14, 7), rel=1e-12) and p256.verdict == "slower"

    # points only one run has: listed once each, however often that run holds them
    assert c.labels(c.only_a) == ["M=1024 N=64 K=64 kernel=triton_bf16"]
    assert c.labels(c.only_b) == ["M=2048 N=64 K=64 kernel=triton_bf16"]
    # the repeats counted per run: A 1 (128) + 2 (256) + 1 (1024); B 1 (256) + 1 (2048)
    assert _repeat_notes(c) == ["mm: 4 repeated point(s) in run A: the last of each is compared",
                                "mm: 2 repeated point(s) in run B: the last of each is compared"]


def test_a_repeat_in_one_run_only_is_noted_for_that_run_only():
    a = [_mm(128, 1e-3), _mm(256, 2e-3)]
    b = [_mm(128, 5e-3), _mm(256, 2e-3), _mm(128, 1e-3)]
    c = compare_frames(_frame(a), _frame(b))
    assert _point(c, 128).ratio == pytest.approx(1.0, rel=1e-12) and _point(c, 128).p_value == 1.0
    assert _repeat_notes(c) == ["mm: 1 repeated point(s) in run B: the last of each is compared"]
    assert c.only_a.empty and c.only_b.empty


def test_runs_listing_their_points_in_other_orders_pair_each_point_with_itself():
    """A lists 256 before 128, and holds 256 twice; B lists 128 first: every matched point pairs A's
    last occurrence with B's, whatever the order of the rows."""
    c = compare_frames(_frame([_mm(256, 4e-3), _mm(128, 1e-3)]), _frame([_mm(128, 3e-3), _mm(256, 2e-3)]))
    assert _point(c, 128).ratio == pytest.approx(3.0) and _point(c, 256).ratio == pytest.approx(0.5)
    assert _point(c, 128).median_s_a == 1e-3 and _point(c, 256).median_s_a == 4e-3
    c = compare_frames(_frame([_mm(256, 3e-3), _mm(128, 1e-3), _mm(256, 2e-3)]),
                       _frame([_mm(128, 2e-3), _mm(256, 2e-3)]))
    assert _point(c, 128).ratio == pytest.approx(2.0) and _point(c, 256).ratio == pytest.approx(1.0)
    assert _point(c, 256).p_value == 1.0  # the same samples: A's last 256 against B's
    assert _repeat_notes(c) == ["mm: 1 repeated point(s) in run A: the last of each is compared"]


def test_no_repeats_no_note():
    c = compare_frames(_frame([_mm(128, 1e-3), _mm(256, 2e-3), _mm(512, 1e-3)]),
                       _frame([_mm(512, 2e-3), _mm(128, 1e-3), _mm(1024, 1e-3)]))
    assert _repeat_notes(c) == []
    assert _point(c, 512).ratio == pytest.approx(2.0) and _point(c, 128).ratio == pytest.approx(1.0)
    assert c.labels(c.only_a) == ["M=256 N=64 K=64 kernel=triton_bf16"]
    assert c.labels(c.only_b) == ["M=1024 N=64 K=64 kernel=triton_bf16"]


@pytest.mark.parametrize("spread", [1, 1_000_003])  # dense sizes, and sizes too sparse to index directly
def test_many_interleaved_repeats_keep_the_last_of_each(spread):
    """400 points, each held 1 to 4 times by A and 1 to 2 times by B, in shuffled order, every
    occurrence with its own median: each matched point's medians are those of its last occurrence
    (found here by replaying the rows in order, the last write winning)."""
    rng = np.random.default_rng(7)
    sizes = [int(64 + spread * k) for k in range(400)]
    kernels = ["triton_bf16", "torch_bf16"]

    def run(max_copies, only):
        rows = [(m, kern) for m in sizes for kern in kernels if rng.random() < only
                for _ in range(rng.integers(1, max_copies + 1))]
        order = rng.permutation(len(rows))
        out = []
        for i in order:
            m, kern = rows[i]
            out.append(_mm(m, float(rng.uniform(1e-3, 2e-3)), kernel=kern))
        return out
    a, b = run(4, 0.9), run(2, 0.9)
    last_a = {(r["M"], r["kernel"]): r["median_s"] for r in a}  # dict: the last write wins
    last_b = {(r["M"], r["kernel"]): r["median_s"] for r in b}
    c = compare_frames(_frame(a), _frame(b))

    got = {(int(m), k): (ma, mb) for m, k, ma, mb in
           zip(c.points["M"], c.points["kernel"], c.points["median_s_a"], c.points["median_s_b"])}
    both = set(last_a) & set(last_b)
    assert set(got) == both and len(c.points) == len(both)
    assert all(got[k] == (last_a[k], last_b[k]) for k in both)
    assert np.allclose(c.points["ratio"], c.points["median_s_b"] / c.points["median_s_a"], rtol=0)
    # the interval is centred on the ratio of the last occurrences' sample medians (= their medians)
    assert np.allclose(np.sqrt(c.points["ci_low"] * c.points["ci_high"]), c.points["ratio"], rtol=1e-9)
    only_a = {(int(m), k) for m, k in zip(c.only_a["M"], c.only_a["kernel"])}
    only_b = {(int(m), k) for m, k in zip(c.only_b["M"], c.only_b["kernel"])}
    assert only_a == set(last_a) - both and len(c.only_a) == len(only_a)
    assert only_b == set(last_b) - both and len(c.only_b) == len(only_b)
    assert _repeat_notes(c) == [f"mm: {len(a) - len(last_a)} repeated point(s) in run A: the last of each is compared",
                                f"mm: {len(b) - len(last_b)} repeated point(s) in run B: the last of each is compared"]


def test_a_family_only_one_run_has_is_listed_once_per_point_and_its_repeats_noted():
    """A family that only one run holds (`foo` in A, `bar` in B, their params recorded in the
    run's metadata) is all lone points: each point listed once (the run's first row among them),
    its repeats counted."""
    foo = [{"benchmark": "foo", "x": x, "status": "ok", "reason": None, "median_s": 1e-3 * (i + 1),
            "samples_s": [1e-3] * 3} for i, x in enumerate([2, 1, 1, 3, 3, 3])]
    bar = [{"benchmark": "bar", "y": y, "status": "ok", "reason": None, "median_s": 1e-3,
            "samples_s": [1e-3] * 3} for y in ["q", "p", "p"]]
    a = [_mm(128, 1e-3), *foo[:3], _mm(128, 1e-3), *foo[3:]]
    b = [*bar, _mm(128, 1e-3), _mm(256, 1e-3), _mm(256, 1e-3)]
    c = compare_frames(_frame(a, params={"foo": ["x"]}), _frame(b, params={"bar": ["y"]}))

    assert list(c.points["M"].astype(int)) == [128]
    lone_a = c.only_a[c.only_a["benchmark"] == "foo"]
    assert sorted(lone_a["x"].astype(int)) == [1, 2, 3]  # once each
    assert (c.only_a["benchmark"] == "foo").all()
    lone_b = c.only_b[c.only_b["benchmark"] == "bar"]
    assert sorted(lone_b["y"]) == ["p", "q"]
    assert c.labels(c.only_b[c.only_b["benchmark"] == "mm"]) == ["M=256 N=64 K=64 kernel=triton_bf16"]
    assert len(c.only_b) == 3
    # notes in each run's own family order: A (mm, foo), then B (bar, mm)
    assert _repeat_notes(c) == ["mm: 1 repeated point(s) in run A: the last of each is compared",
                                "foo: 3 repeated point(s) in run A: the last of each is compared",
                                "bar: 1 repeated point(s) in run B: the last of each is compared",
                                "mm: 1 repeated point(s) in run B: the last of each is compared"]


# ---- the join's order and matching against pandas' outer merge --------------------------------------

def _outer_merge(a_keys: list[tuple], b_keys: list[tuple], params: list[str]):
    """pandas' outer merge of two runs' keys (no repeats): the matched keys, A's only and B's only,
    each in the merge's order (keys sorted lexicographically: compare_keys' promise)."""
    m = pd.merge(pd.DataFrame(a_keys, columns=params), pd.DataFrame(b_keys, columns=params), how="outer",
                 on=params, indicator=True)
    rows = lambda which: [tuple(r) for r in m.loc[m["_merge"] == which, params].itertuples(index=False)]  # noqa: E731
    return rows("both"), rows("left_only"), rows("right_only")


def _got(frame: pd.DataFrame, params: list[str]) -> list[tuple]:
    return [tuple(r) for r in frame[params].itertuples(index=False)]


def _family(name: str, keys: list[tuple], params: list[str], median: float = 1e-3) -> list[dict]:
    return [{"benchmark": name, **dict(zip(params, k)), "status": "ok", "reason": None, "median_s": median,
             "samples_s": [x * median for x in BASE]} for k in keys]


def _unique_keys(rng, n: int, columns: list) -> list[tuple]:
    keys = []
    while len(keys) < n:
        k = tuple(c(rng) for c in columns)
        if k not in keys:
            keys.append(k)
    return keys


def test_points_come_in_the_order_of_a_pandas_outer_merge_text_and_wide_integer_params():
    """mm points listed in shuffled order: ten sizes (M, N, K) spread over 0..1000 (a key space of
    1001^3 * 4: renumbered densely), each with three kernels, first seen out of alphabetical order.
    The matched points, A's only and B's only come in the order pandas' outer merge on
    (M, N, K, kernel) gives them."""
    rng = np.random.default_rng(3)
    params = MM["mm"]
    sizes = _unique_keys(rng, 10, [lambda r: int(r.integers(0, 1001))] * 3)
    keys = [(*s, kern) for s in sizes for kern in ("triton_bf16", "cublas", "torch_bf16")]
    keys = [keys[i] for i in rng.permutation(len(keys))]
    a_keys, b_keys = keys[:20], keys[10:]  # 10 shared, 10 only A, 10 only B
    seen = list(dict.fromkeys(k[3] for k in a_keys))
    assert seen != sorted(seen)  # the case is informative: first seen is not sorted
    c = compare_frames(_frame(_family("mm", a_keys, params)), _frame(_family("mm", b_keys, params)))
    both, only_a, only_b = _outer_merge(a_keys, b_keys, params)
    assert len(both) == 10 and _got(c.points, params) == both
    assert _got(c.only_a, params) == only_a and _got(c.only_b, params) == only_b


def test_seven_integer_params_whose_key_space_passes_two_to_the_62_join_in_merge_order():
    """Seven params, each spread over 0..1000: their codes combined overflow 64 bits (1001^7 ~ 1e21),
    so the key is renumbered on the way. Every point still meets itself only, in merge order."""
    rng = np.random.default_rng(4)
    params = [f"p{i}" for i in range(7)]
    keys = _unique_keys(rng, 24, [lambda r: int(r.integers(0, 1001))] * 7)
    a_keys, b_keys = keys[:16], keys[8:]
    a_keys, b_keys = [a_keys[i] for i in rng.permutation(16)], [b_keys[i] for i in rng.permutation(16)]
    wide = {"wide": params}
    c = compare_frames(_frame(_family("wide", a_keys, params), wide), _frame(_family("wide", b_keys, params), wide))
    both, only_a, only_b = _outer_merge(a_keys, b_keys, params)
    assert len(both) == 8 and _got(c.points, params) == both
    assert _got(c.only_a, params) == only_a and _got(c.only_b, params) == only_b
    assert _repeat_notes(c) == []


def test_lone_points_of_two_families_are_numbered_from_zero():
    """Two families each with points only A has: one frame of lone points, its rows numbered 0..n-1
    (no label repeated, as a plain concatenation of the two would repeat 0, 1, ...)."""
    foo = _family("foo", [(1,), (2,)], ["x"])
    a = [_mm(128, 1e-3), _mm(256, 1e-3), _mm(512, 1e-3), *foo]
    b = [_mm(128, 1e-3)]
    c = compare_frames(_frame(a, {"foo": ["x"]}), _frame(b, {"foo": ["x"]}))
    assert list(c.only_a["benchmark"]) == ["mm", "mm", "foo", "foo"]
    assert list(c.only_a.index) == [0, 1, 2, 3]
    assert c.labels(c.only_a) == ["M=256 N=64 K=64 kernel=triton_bf16", "M=512 N=64 K=64 kernel=triton_bf16",
                                  "x=1", "x=2"]


def test_a_point_only_each_run_has_beside_matched_points_in_key_order():
    """A: 1, 2, 3 and B: 1, 2, 4 (three points each, A's in key order): 1 and 2 matched with their own
    medians, 3 only A's, 4 only B's."""
    a = [_mm(1, 1e-3), _mm(2, 2e-3), _mm(3, 3e-3)]
    b = [_mm(1, 4e-3), _mm(2, 8e-3), _mm(4, 1e-3)]
    c = compare_frames(_frame(a), _frame(b))
    assert list(c.points["M"]) == [1, 2] and list(c.points["median_s_a"]) == [1e-3, 2e-3]
    assert list(c.points["ratio"]) == pytest.approx([4.0, 4.0], rel=1e-12)
    assert list(c.only_a["M"]) == [3] and list(c.only_b["M"]) == [4]


# ---- key values of every type -----------------------------------------------------------------------

def _keyed(name: str, values: list, param: str = "x", median: float = 1e-3) -> list[dict]:
    return _family(name, [(v,) for v in values], [param], median)


def _compare_one_param(a_values: list, b_values: list, param: str = "x"):
    """Family `foo`, one param, beside a matched mm point (so that a run pair with no foo point in
    common still compares)."""
    params = {"foo": [param]}
    c = compare_frames(_frame([_mm(128, 1e-3), *_keyed("foo", a_values, param)], params),
                       _frame([_mm(128, 1e-3), *_keyed("foo", b_values, param)], params))
    foo = c.points[c.points["benchmark"] == "foo"]
    return c, foo


def test_bool_params_are_labelled_as_recorded():
    """A bool column (every row of the run has it: pandas' bool dtype), and one among other
    families' rows (object, with missing values): labelled True / False either way."""
    params = {"foo": ["x"]}
    c = compare_frames(_frame(_keyed("foo", [True, False]), params), _frame(_keyed("foo", [True]), params))
    assert list(c.points["x"]) == ["True"] and c.labels(c.only_a) == ["x=False"] and c.only_b.empty
    c, foo = _compare_one_param([True, False], [True])
    assert list(foo["x"]) == ["True"]
    assert c.labels(c.only_a) == ["x=False"] and c.only_b.empty


def test_a_number_recorded_as_text_among_numbers_meets_the_number():
    """A's x column mixes an int and the text '4096.0' (an object column): both are numbers, so
    '4096.0' meets B's 4096 (and 1024 meets 1024)."""
    c, foo = _compare_one_param([1024, "4096.0"], [1024, 4096])
    assert sorted(foo["x"]) == [1024.0, 4096.0] and c.only_a.empty and c.only_b.empty


def test_text_params_that_read_as_equal_numbers_stay_distinct():
    """Versions '1.1' and '1.10' are two texts (one number): two points, each matched with itself."""
    c, foo = _compare_one_param(["1.1", "1.10"], ["1.10", "1.1"])
    assert sorted(foo["x"]) == ["1.1", "1.10"] and _repeat_notes(c) == [] and c.only_a.empty


def test_a_param_mixing_text_and_numbers_is_compared_as_text():
    c, foo = _compare_one_param(["auto", 128, 256], [256, "auto", 512])
    assert sorted(foo["x"]) == ["256", "auto"]
    assert c.labels(c.only_a) == ["x=128"] and c.labels(c.only_b) == ["x=512"]


def test_fractional_params_are_distinct_points():
    """Fractions (0.25, 0.5, 0.75) are three points; 1.5 is not 1 or 2; B's 1.5 and 2.5 are no point
    of A's 1 and 2."""
    c, foo = _compare_one_param([0.25, 0.5, 0.75], [0.75, 0.5, 0.25])
    assert sorted(foo["x"]) == [0.25, 0.5, 0.75] and _repeat_notes(c) == []
    c, foo = _compare_one_param([1.0, 2.0], [1.0, 1.5, 2.0])
    assert sorted(foo["x"]) == [1.0, 2.0] and c.labels(c.only_b) == ["x=1.5"] and _repeat_notes(c) == []
    c, foo = _compare_one_param([1.0, 2.0], [1.5, 2.5])
    assert foo.empty and c.labels(c.only_a) == ["x=1", "x=2"] and c.labels(c.only_b) == ["x=1.5", "x=2.5"]
    assert _repeat_notes(c) == []


def test_negative_whole_number_params_match():
    """Offsets -3, -1, 0, 2 on both sides (and -5 only in A): each meets itself."""
    c, foo = _compare_one_param([-3, -1, 0, 2, -5], [2, 0, -1, -3])
    assert list(foo["x"]) == [-3, -1, 0, 2] and c.labels(c.only_a) == ["x=-5"] and c.only_b.empty


def test_whole_number_params_spanning_the_64_bit_range_match():
    """Ids from -9e18 to 9e18 (whole numbers, far apart): each meets itself, in order."""
    values = [-9e18, -1.0, 0.0, 9e18]
    c, foo = _compare_one_param(values, list(reversed(values)))
    assert list(foo["x"]) == values and c.only_a.empty and c.only_b.empty


def test_a_param_one_run_did_not_record_is_blank_there_and_compared_as_text():
    """foo's params grew: A (older) did not record y, B did (numbers). A's points hold y blank; B's
    are compared as text (family_params, _harmonise): no point in common, B's y as the text '8'."""
    a = [_mm(128, 1e-3), *_family("foo", [(1,), (2,)], ["x"])]
    b = [_mm(128, 1e-3), *_family("foo", [(1, 8), (2, 8)], ["x", "y"])]
    c = compare_frames(_frame(a, {"foo": ["x"]}), _frame(b, {"foo": ["x", "y"]}))
    assert c.labels(c.only_a) == ["x=1", "x=2"] and c.labels(c.only_b) == ["x=1 y=8", "x=2 y=8"]
    assert list(c.only_a["y"]) == ["", ""] and list(c.only_b["y"]) == ["8", "8"]


# ---- which rows are measured points -----------------------------------------------------------------

def test_a_run_without_a_status_column_has_every_timed_row_ok():
    a = [{k: v for k, v in _mm(m, median).items() if k != "status"} for m, median in ((128, 1e-3), (256, 2e-3))]
    c = compare_frames(_frame(a), _frame([_mm(128, 2e-3), _mm(256, 1e-3)]))
    assert list(c.points["status_a"]) == ["ok", "ok"] and list(c.points["ratio"]) == pytest.approx([2.0, 0.5])


def test_a_run_without_a_median_column_holds_its_failed_points():
    """A recorded only failures (no median_s column): its failed points are measured points, not
    compared; the run's rows with status ok and no time are no points."""
    a = [{"benchmark": "mm", "M": m, "N": 64, "K": 64, "kernel": "triton_bf16", "status": status, "reason": reason}
         for m, status, reason in ((128, "failed", "OOM"), (256, "ok", None), (512, "skipped", "no fp8"))]
    c = compare_frames(_frame(a), _frame([_mm(128, 2e-3), _mm(256, 1e-3), _mm(512, 1e-3)]))
    assert list(c.points["M"]) == [128, 512] and list(c.points["status_a"]) == ["failed", "skipped"]
    assert c.points["median_s_a"].isna().all() and list(c.points["verdict"]) == ["not compared"] * 2
    assert list(c.points["note"]) == ["failed in A: OOM", "skipped in A: no fp8"]
    assert c.labels(c.only_b) == ["M=256 N=64 K=64 kernel=triton_bf16"]


def test_fits_and_projections_are_not_points_and_untimed_ok_rows_neither():
    """A's `record` column marks a fit row (same key as a point, its own median) and a projection:
    neither is a point (no repeat, the measurement's median compared); an ok row without a time is
    no point either."""
    a = [_mm(128, 1e-3, record="measurement"), _mm(128, 9e-3, record="fit"), _mm(256, 2e-3, record=None),
         _mm(512, 5e-3, record="projection"), _mm(1024, float("nan"), record="measurement")]
    c = compare_frames(_frame(a), _frame([_mm(128, 2e-3), _mm(256, 2e-3), _mm(512, 1e-3), _mm(1024, 1e-3)]))
    assert list(c.points["M"]) == [128, 256] and list(c.points["median_s_a"]) == [1e-3, 2e-3]
    assert _repeat_notes(c) == [] and c.only_a.empty
    assert c.labels(c.only_b) == ["M=512 N=64 K=64 kernel=triton_bf16", "M=1024 N=64 K=64 kernel=triton_bf16"]


def test_a_family_without_params_listed_first_does_not_hide_the_next():
    nop = {"benchmark": "nop", "status": "ok", "reason": None, "median_s": 1e-3, "samples_s": [1e-3] * 3}
    c = compare_frames(_frame([nop, _mm(128, 1e-3), nop]), _frame([_mm(128, 3e-3), nop]))
    assert list(c.points["M"]) == [128] and list(c.points["ratio"]) == pytest.approx([3.0])
    assert "nop: no PARAMS declared (or unknown family): not comparable" in c.notes


def test_runs_without_rows_or_without_a_benchmark_column_have_no_points():
    from hpcbench.analysis.compare_keys import measured_points
    from hpcbench.api.errors import UserError

    params_of = {"mm": tuple(MM["mm"])}
    assert measured_points(pd.DataFrame({"M": [128], "median_s": [1e-3]}), params_of) == {}
    assert measured_points(pd.DataFrame(columns=["benchmark", "M", "median_s"]), params_of) == {}
    with pytest.raises(UserError, match="no point in common.*A has no comparable points"):
        compare_frames(_frame([{"M": 128, "median_s": 1e-3}]), _frame([_mm(128, 1e-3)]))
