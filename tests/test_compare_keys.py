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
