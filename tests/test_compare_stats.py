"""compare's statistics on the path `hpcbench compare` takes (`point_statistics`: the merged sort of
`_SortedBlock`), checked against known answers computed independently here: scipy's Mann-Whitney U,
and the Bonett-Price (2002) interval for a ratio of two medians written out from the paper."""

import math

import numpy as np
import pytest
from scipy import stats

from hpcbench.analysis.compare_stats import point_statistics
from hpcbench.results.reader import Samples


def _stats(a_lists, b_lists, confidence=0.95):
    """point_statistics of points whose A and B samples are given as lists, point i against point i,
    the Samples built as compare builds them from a run's `samples_s` column."""
    sa, sb = Samples.from_lists([list(map(float, x)) for x in a_lists]), Samples.from_lists([list(map(float, x)) for x in b_lists])
    rows = np.arange(len(a_lists), dtype=np.int64)
    return point_statistics(rows, rows, sa, sb, confidence)


def _scipy_p(a, b, method):
    return float(stats.mannwhitneyu(np.asarray(a, float), np.asarray(b, float), alternative="two-sided",
                                    method=method).pvalue)


# ---- Mann-Whitney U on the merged-sort path ---------------------------------------------------------
#
# The code's rule (compare_stats docstrings): a point with no tie at all and at most 8 samples on its
# smaller side gets scipy's exact distribution; every other point the normal approximation with the
# tie and continuity corrections, which is scipy's method="asymptotic" (use_continuity=True).

# (A, B, scipy method the code must agree with). Values are times in ms; each case's p is well inside
# (0, 1) so that a U off by a few pairs moves it.
CASES = {
    # no ties, small: exact (one sample against several is a test too: only 1 v 1 is not)
    "1v6 exact": ([0.5], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "exact"),
    "12v1 exact": ([float(v) for v in range(1, 13)], [11.5], "exact"),
    "3v5 exact": ([1.3, 2.1, 2.9], [2.5, 3.4, 3.7, 4.2, 5.0], "exact"),
    "7v4 exact": ([2.2, 3.1, 3.3, 4.4, 4.9, 5.6, 6.1], [1.0, 1.9, 2.6, 3.9], "exact"),
    "8v12 exact (boundary)": ([1.1, 2.3, 2.8, 3.6, 4.1, 4.7, 5.2, 6.6],
                              [2.0, 3.0, 3.9, 4.3, 5.5, 5.9, 6.2, 6.8, 7.1, 7.7, 8.4, 9.3], "exact"),
    "4v20 exact (small side)": ([3.05, 5.15, 7.25, 8.35], [float(v) for v in np.arange(1.0, 21.0)], "exact"),
    # no ties, both sides over 8: asymptotic
    "9v9 asymptotic (boundary)": ([1.1, 2.3, 2.8, 3.6, 4.1, 4.7, 5.2, 6.6, 7.4],
                                  [2.0, 3.0, 3.9, 4.3, 5.5, 5.9, 6.2, 6.8, 7.1], "asymptotic"),
    "9v12 asymptotic": ([1.1, 2.3, 2.8, 3.6, 4.1, 4.7, 5.2, 6.6, 7.4],
                        [2.0, 3.0, 3.9, 4.3, 5.5, 5.9, 6.2, 6.8, 7.1, 7.7, 8.4, 9.3], "asymptotic"),
    "13v20 asymptotic": ([float(v) for v in np.arange(1, 14) * 1.5 + 0.01],
                         [float(v) for v in np.arange(1, 21) * 1.3 + 4.02], "asymptotic"),
    # ties (between A and B, and within a side): always the approximation, even when small
    "3v5 ties": ([2.0, 3.0, 4.0], [3.0, 4.0, 4.0, 5.0, 6.0], "asymptotic"),
    "7v4 ties": ([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 6.0], [3.0, 5.0, 7.0, 8.0], "asymptotic"),
    "5v6 only A-B ties": ([1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 5.0, 6.0, 7.0, 8.0, 9.0], "asymptotic"),
    "11v14 only A-B ties": ([float(v) for v in range(1, 12)], [float(v) for v in range(4, 18)], "asymptotic"),
    "10v12 only ties within A": ([1.0, 1.0, 2.0, 2.0, 2.0, 3.5, 4.5, 6.5, 7.5, 7.5],
                                 [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0], "asymptotic"),
    "12v10 only ties within B": ([3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0],
                                 [1.0, 1.0, 2.0, 2.0, 2.0, 3.5, 4.5, 6.5, 7.5, 7.5], "asymptotic"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_point_p_value_matches_scipy(name):
    a, b, method = CASES[name]
    expected = _scipy_p(a, b, method)
    assert 1e-5 < expected < 0.9  # the case is informative
    got = _stats([a], [b])["p_value"][0]
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-14), (name, got, expected)


def test_point_p_values_match_scipy_for_many_points_of_mixed_sizes_in_one_call():
    """Every case above in one call (grouped by sample counts), each point against scipy; and
    swapping A and B gives the same two-sided p."""
    names = list(CASES)
    a, b = [CASES[n][0] for n in names], [CASES[n][1] for n in names]
    expected = np.array([_scipy_p(CASES[n][0], CASES[n][1], CASES[n][2]) for n in names])
    assert np.allclose(_stats(a, b)["p_value"], expected, rtol=1e-9, atol=1e-14)
    assert np.allclose(_stats(b, a)["p_value"], expected, rtol=1e-9, atol=1e-14)


def test_one_sample_against_one_is_no_evidence_and_against_six_is_exact():
    s = _stats([[1.0], [1.0]], [[2.0], [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
    assert s["p_value"][0] == 1.0
    assert s["p_value"][1] == pytest.approx(2 / 7, rel=1e-12)  # 1 below all 6: P(U = 0) = 1/7, both tails
    assert s["min_p"][1] == pytest.approx(2 / 7, rel=1e-12)


def test_u_of_hand_counted_samples_gives_the_normal_approximation_p():
    """A hand-derived answer, no scipy: A = 1..10, B = 11.5, 12.5, .., 21.5 except that B's first two
    samples are 5 and 10 (tied with A's 5 and 10). U_A = pairs a > b + half the equal pairs:
    a > 5: 6, 7, 8, 9, 10 (5 pairs); a > 10: none; equal pairs 2 -> U_A = 5 + 1 = 6.
    mean na*nb/2 = 50; ties: two groups of 2 -> sum(t^3 - t) = 12;
    sigma^2 = na*nb/12 * (n + 1 - 12 / (n (n - 1))) with n = 20; p = 2 Phi(-(|U - 50| - 0.5) / sigma)."""
    a = [float(v) for v in range(1, 11)]
    b = [5.0, 10.0] + [11.5 + k for k in range(8)]
    n = 20
    sigma = math.sqrt(10 * 10 / 12 * (n + 1 - 12 / (n * (n - 1))))
    expected = 2 * stats.norm.cdf(-(abs(6 - 50) - 0.5) / sigma)
    assert _stats([a], [b])["p_value"][0] == pytest.approx(expected, rel=1e-12)
    assert _stats([b], [a])["p_value"][0] == pytest.approx(expected, rel=1e-12)  # U_B = 94: the same |U - 50|


def test_p_values_of_random_timings_match_scipy_with_ties_and_without():
    """Seeded timings, many points per call: continuous ones (no ties, asymptotic at 20 v 13 and
    20 v 20, exact at 6 v 17) and ones rounded to a timer tick (ties: asymptotic)."""
    rng = np.random.default_rng(11)
    for na, nb, tick, method in ((20, 13, None, "asymptotic"), (20, 20, None, "asymptotic"),
                                 (6, 17, None, "exact"), (20, 13, 0.05, "asymptotic"), (7, 4, 0.1, "asymptotic"),
                                 (16, 25, 0.05, "asymptotic")):
        a = rng.lognormal(0.0, 0.3, (40, na))
        b = rng.lognormal(0.15, 0.3, (40, nb))
        if tick:
            a, b = np.round(a / tick) * tick + tick, np.round(b / tick) * tick + tick
        expected = stats.mannwhitneyu(a, b, axis=1, alternative="two-sided", method=method).pvalue
        got = _stats(list(a), list(b))["p_value"]
        assert np.allclose(got, expected, rtol=1e-9, atol=1e-14), (na, nb, tick)
        if tick:
            assert (expected < 0.9).any()


def test_min_p_is_a_complete_separation():
    """min_p: the p of A and B completely apart (scipy's, exact where the point is exact)."""
    s = _stats([[1.0, 2.0, 3.0], list(np.arange(1.0, 21.0))], [[4.0, 5.0, 6.0, 7.0, 8.0], list(np.arange(31.0, 51.0))])
    assert s["min_p"][0] == pytest.approx(2 / math.comb(8, 3), rel=1e-12)
    assert s["min_p"][1] == pytest.approx(_scipy_p(np.arange(1, 21), np.arange(31, 51), "asymptotic"), rel=1e-12)
    assert s["p_value"] == pytest.approx(s["min_p"], rel=1e-12)


# ---- the ratio of medians and its Bonett-Price interval ---------------------------------------------

def _bonett_price(a, b, confidence):
    """Bonett & Price (2002), ratio of two medians B/A, written out: for each side of n sorted
    samples y, c = max(1, round(n/2 - sqrt(n))), the pair y_(c), y_(n-c+1) (1-based);
    alpha*/2 = P(Binomial(n, 1/2) <= c - 1), z* = Phi^-1(1 - alpha*/2);
    var(ln median) = ((ln y_(n-c+1) - ln y_(c)) / (2 z*))^2. The interval is
    exp(ln(med_B / med_A) -/+ z_(1-(1-confidence)/2) sqrt(var_A + var_B))."""
    def log_median_var(y):
        y = np.sort(np.asarray(y, float))
        n = len(y)
        c = max(1, int(math.floor(n / 2 - math.sqrt(n) + 0.5)))
        z_star = stats.norm.ppf(1 - stats.binom.cdf(c - 1, n, 0.5))
        return ((math.log(y[n - c]) - math.log(y[c - 1])) / (2 * z_star)) ** 2
    z = stats.norm.ppf(1 - (1 - confidence) / 2)
    centre = math.log(np.median(b)) - math.log(np.median(a))
    half = z * math.sqrt(log_median_var(a) + log_median_var(b))
    return math.exp(centre - half), math.exp(centre + half)


def _samples(rng, n, scale):
    return list(rng.lognormal(math.log(scale), 0.2, n))


# sample counts that exercise the order-pair rounding: n/2 - sqrt(n) below 1 (2, 4, 5), .5 exactly
# (9, 25), just above or below .5 (20: 5.53, 15: 3.63, 30: 9.52, 12: 2.54), and even and odd counts
SIZES = [(2, 3), (4, 5), (9, 25), (20, 20), (15, 30), (12, 7), (30, 11), (20, 13)]


@pytest.mark.parametrize("confidence", [0.90, 0.95, 0.99])
def test_ratio_interval_is_the_published_bonett_price_interval(confidence):
    rng = np.random.default_rng(5)
    a = [_samples(rng, na, 1.0) for na, _ in SIZES]
    b = [_samples(rng, nb, 1.3) for _, nb in SIZES]
    s = _stats(a, b, confidence)
    for k, (na, nb) in enumerate(SIZES):
        low, high = _bonett_price(a[k], b[k], confidence)
        assert s["ci_low"][k] == pytest.approx(low, rel=1e-12), (na, nb)
        assert s["ci_high"][k] == pytest.approx(high, rel=1e-12), (na, nb)
        # the interval is centred, in log space, on the ratio of the sample medians
        assert math.sqrt(s["ci_low"][k] * s["ci_high"][k]) == pytest.approx(np.median(b[k]) / np.median(a[k]), rel=1e-12)


def test_ratio_interval_of_hand_picked_samples():
    """A hand-derived case: A = 1, 2, 4, 8 ms and B = 2, 4, 8, 16 ms (n = 4: c = 1, the pair is the
    minimum and the maximum, alpha*/2 = P(Bin(4, 1/2) = 0) = 1/16). med_A = 3, med_B = 6: ratio 2.
    Each side's spread ln(8) (ln 16 - ln 2 = ln 8 too), so var = 2 (ln 8 / (2 z*))^2 with
    z* = Phi^-1(15/16), and the 95 % half-width is 1.959964 * sqrt(2) * ln 8 / (2 z*)."""
    z_star = stats.norm.ppf(15 / 16)
    half = stats.norm.ppf(0.975) * math.sqrt(2) * math.log(8) / (2 * z_star)
    s = _stats([[8.0, 1.0, 4.0, 2.0]], [[2.0, 16.0, 4.0, 8.0]])  # in any order: the code sorts
    assert s["ci_low"][0] == pytest.approx(2 * math.exp(-half), rel=1e-12)
    assert s["ci_high"][0] == pytest.approx(2 * math.exp(half), rel=1e-12)
    assert half == pytest.approx(1.8785394640, rel=1e-9)  # a wide interval from 4 samples: 2 * exp(-+1.88)


def test_ratio_interval_matches_the_published_example_of_bonett_s_statpsych():
    """The example of `ci.ratio.median2` in Bonett's R package statpsych (its documented output,
    6 digits): y1 = 36 44 47 42 49 39 46 31 33 48, y2 = 32 39 26 35 43 27 40 37 34 29 49 42 40,
    alpha .05 -> Median1/Median2 = 1.162162, 95 % CI [0.927667, 1.455933]. compare's ratio is B/A:
    A = y2, B = y1."""
    y1 = [36, 44, 47, 42, 49, 39, 46, 31, 33, 48]
    y2 = [32, 39, 26, 35, 43, 27, 40, 37, 34, 29, 49, 42, 40]
    s = _stats([y2], [y1], 0.95)
    assert math.sqrt(s["ci_low"][0] * s["ci_high"][0]) == pytest.approx(43 / 37, rel=1e-12)
    assert s["ci_low"][0] == pytest.approx(0.927667, abs=6e-7)
    assert s["ci_high"][0] == pytest.approx(1.455933, abs=6e-7)


def test_half_width_in_log_space_scales_with_the_normal_quantile():
    rng = np.random.default_rng(9)
    a = [_samples(rng, na, 1.0) for na, _ in SIZES]
    b = [_samples(rng, nb, 0.8) for _, nb in SIZES]

    def half(confidence):
        s = _stats(a, b, confidence)
        return (np.log(s["ci_high"]) - np.log(s["ci_low"])) / 2
    h90, h95, h99 = half(0.90), half(0.95), half(0.99)
    assert np.allclose(h90 / h95, 1.6448536269514722 / 1.959963984540054, rtol=1e-12)
    assert np.allclose(h99 / h95, 2.5758293035489004 / 1.959963984540054, rtol=1e-12)
    assert (h95 > 0).all() and np.isfinite(h95).all()


def test_interval_coverage_of_identical_distributions():
    """2000 seeded trials, 20 lognormal samples per side from one distribution: the 95 % interval
    covers 1.0 close to 95 % of the time (observed 0.947..0.963 over seeds 0-9), the 90 % one about
    90 % (0.905..0.920), the 99 % one about 99 % (0.985..0.992). An interval twice as wide covers
    ~100 %, a 90 % interval labelled 95 % ~91 %."""
    rng = np.random.default_rng(0)
    trials, n = 2000, 20
    a, b = rng.lognormal(0.0, 0.5, (trials, n)), rng.lognormal(0.0, 0.5, (trials, n))

    def coverage(confidence):
        s = _stats(list(a), list(b), confidence)
        return float(np.mean((s["ci_low"] <= 1.0) & (s["ci_high"] >= 1.0)))
    c90, c95, c99 = coverage(0.90), coverage(0.95), coverage(0.99)
    print(f"coverage 90 %: {c90:.4f}  95 %: {c95:.4f}  99 %: {c99:.4f}")
    assert 0.93 <= c95 <= 0.975
    assert 0.875 <= c90 <= 0.935 and c90 <= c95 - 0.02
    assert 0.98 <= c99 <= 0.998 and c99 >= c95 + 0.015


# ---- mann_whitney_p on samples that are not positive times ------------------------------------------
#
# compare's own points go through `_SortedBlock`; the public `mann_whitney_p` (importable from
# hpcbench.analysis.compare) takes any numbers: positive float64 times by one integer sort, other values
# (negatives, zeros, integers) pairwise while na x nb <= 1024 and by ranks beyond. Every path against
# scipy, row by row, under the code's rule: exact for an untied row with at most 8 samples on a side.

def _scipy_rows(xa, xb):
    """scipy's p of each row, and whether the rule makes it exact."""
    p, exact = [], []
    for a, b in zip(xa, xb):
        tied = len(np.unique(np.concatenate([a, b]))) < len(a) + len(b)
        use_exact = not tied and min(len(a), len(b)) <= 8
        p.append(_scipy_p(a, b, "exact" if use_exact else "asymptotic"))
        exact.append(use_exact)
    return np.array(p), np.array(exact)


def _check_rows(xa, xb):
    from hpcbench.analysis.compare_stats import mann_whitney_p

    xa, xb = np.sort(xa, axis=1), np.sort(xb, axis=1)
    expected, expected_exact = _scipy_rows(xa, xb)
    assert ((1e-4 < expected) & (expected < 0.95)).all(), expected  # every row informative
    p, exact = mann_whitney_p(xa, xb)
    assert list(exact) == list(expected_exact)
    assert np.allclose(p, expected, rtol=1e-9, atol=1e-14), (p, expected)
    return p


def test_pairwise_u_of_negative_and_zero_samples_matches_scipy_row_by_row():
    """Differences (B - A style values, negative and zero) at 5 v 6: rows with no tie (exact), a tie
    within A only, within B only (not at B's smallest), between A and B, and B all one value (a
    tie of six); one call, several rows."""
    xa = np.array([[-3.0, -1.5, 0.0, 0.5, 2.0],          # no tie
                   [-3.0, -1.0, -1.0, 0.5, 2.0],         # tie within A only
                   [-3.0, -1.5, 0.0, 0.5, 2.0],          # tie within B only (1.0 twice)
                   [-3.0, -1.5, 0.0, 0.5, 2.0],          # ties between A and B (0.0, 2.0)
                   [-3.0, -1.5, 0.0, 0.5, 2.0]])         # B all one value: ties within B only
    xb = np.array([[-2.0, 1.0, 1.5, 2.5, 3.0, 4.0],
                   [-2.0, 1.0, 1.5, 2.5, 3.0, 4.0],
                   [-2.0, 1.0, 1.0, 2.5, 3.0, 4.0],
                   [-2.0, 0.0, 1.5, 2.0, 3.0, 4.0],
                   [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    _check_rows(xa, xb)
    _check_rows(xb, xa)  # the two-sided p does not depend on which run is A


def test_pairwise_u_of_a_hand_counted_row_of_negative_samples():
    """No scipy: A = -4, -2, 0, B = -3, -1, 1, 3 (untied, 3 v 4: exact). Pairs a > b: -2 > -3,
    0 > -3, 0 > -1: U_A = 3 of 12. The exact null distribution of U for 3 v 4 (C(7, 3) = 35
    arrangements) has P(U <= 3) = 7/35 (counts 1, 1, 2, 3 for U = 0..3), so p = 2 * 7/35 = 0.4."""
    from hpcbench.analysis.compare_stats import mann_whitney_p

    xa = np.array([[-4.0, -2.0, 0.0], [-4.0, -2.0, 0.0]])
    xb = np.array([[-3.0, -1.0, 1.0, 3.0], [-3.0, -2.0, 1.0, 3.0]])  # row 2: a tie (-2): asymptotic
    p, exact = mann_whitney_p(xa, xb)
    assert p[0] == pytest.approx(0.4, rel=1e-12) and list(exact) == [True, False]
    # row 2 by hand: U_A = 3 (-2 > -3, 0 > -3, 0 > -2) + 1/2 (the tie -2) = 3.5; one tie group of 2:
    # sum t^3 - t = 6, sigma^2 = 3 * 4 / 12 * (8 - 6 / (7 * 6)); p = 2 Phi(-(|3.5 - 6| - 0.5) / sigma)
    sigma = math.sqrt(3 * 4 / 12 * (8 - 6 / (7 * 6)))
    assert p[1] == pytest.approx(2 * stats.norm.cdf(-(abs(3.5 - 6) - 0.5) / sigma), rel=1e-12)


def test_integer_samples_take_the_pairwise_path_and_match_scipy():
    """Integer arrays (timer ticks as counts), on one side or both: U as scipy has it."""
    xa = np.array([[3, 5, 7, 9, 12], [3, 5, 5, 9, 12]], dtype=np.int64)
    xb = np.array([[4, 8, 10, 11, 13, 14], [4, 8, 10, 11, 13, 14]], dtype=np.int64)
    _check_rows(xa, xb)
    _check_rows(xa.astype(np.float64), xb)  # float A against integer B
    _check_rows(xa, xb.astype(np.float64))


def test_rank_path_of_large_rows_of_negative_samples_matches_scipy():
    """40 v 45 (1800 pairs: ranks of the merged row) of negative values rounded to a tick (ties of
    every size), and rows without ties; several rows per call."""
    rng = np.random.default_rng(21)
    xa = -np.round(rng.normal(10.0, 1.0, (6, 40)), 1)
    xb = -np.round(rng.normal(9.6, 1.0, (6, 45)), 1)
    xa[:2] = -rng.normal(10.0, 1.0, (2, 40))  # two rows continuous: no tie
    xb[:2] = -rng.normal(9.6, 1.0, (2, 45))
    _check_rows(xa, xb)
    _check_rows(xb, xa)


def test_rank_path_tie_between_the_two_smallest_samples_only():
    """8 v 200 (the rank path, with a small side: exact unless tied), integers (not times). B holds the
    even numbers 2..400; row 0: A odd numbers, no tie (exact); row 1: A's smallest is 2, tied with B's
    2, the two smallest merged samples and the only tie (asymptotic); row 2: B's two smallest are
    2, 2 (B's 4 made 2), A's smallest 3: again the two smallest, within B (asymptotic)."""
    odd = [1, 41, 91, 141, 191, 231, 271, 331]
    xa = np.array([odd, [2, *odd[1:]], [3, *odd[1:]]], dtype=np.int64)
    even = np.arange(2, 401, 2)
    xb = np.stack([even, even, even])
    xb[2, 1] = 2
    p = _check_rows(xa, xb)
    for k in (1, 2):  # the exact distribution would be another answer
        assert abs(p[k] - _scipy_p(xa[k], xb[k], "exact")) > 1e-3 * p[k]


def test_one_sample_against_one_is_p_1_and_not_exact_for_every_row():
    from hpcbench.analysis.compare_stats import mann_whitney_p

    p, exact = mann_whitney_p(np.array([[1.0], [-2.0], [3.0]]), np.array([[2.0], [5.0], [3.0]]))
    assert list(p) == [1.0, 1.0, 1.0] and exact.dtype == bool and list(exact) == [False, False, False]
    assert _scipy_p([1.0], [2.0], "exact") == 1.0


def test_tied_point_of_one_against_two_uses_the_normal_approximation():
    """A = 1, B = 2, 2 (a tie: the approximation). By hand: U_A = 0, mean 1, |U - 1| - 0.5 = 0.5;
    sum t^3 - t = 6, sigma^2 = 2/12 * (4 - 6 / 6) = 0.5: p = 2 Phi(-0.5 / sqrt(0.5)) = 0.4795..."""
    s = _stats([[1.0], [2.0, 2.0]], [[2.0, 2.0], [1.0]])
    expected = 2 * stats.norm.cdf(-0.5 / math.sqrt(0.5))
    assert expected == pytest.approx(_scipy_p([1.0], [2.0, 2.0], "asymptotic"), rel=1e-12)
    assert s["p_value"] == pytest.approx([expected, expected], rel=1e-12)


def test_a_tie_in_a_later_row_of_a_block_is_found_whichever_row_holds_it():
    """Eight points of 3 v 4 samples in one block: each row in turn holds the one tie, between its two
    smallest samples (A's 1.0 and B's 1.0); every other row is untied (exact). Each p against scipy.
    The tied row by hand: U_A = 8 (5 and 6 each above B's 1, 2, 3, 4) + 1/2 (the tie) = 8.5 of 12."""
    base_a, base_b = [1.5, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0]
    sigma = math.sqrt(3 * 4 / 12 * (8 - 6 / (7 * 6)))
    by_hand = 2 * stats.norm.cdf(-(abs(8.5 - 6) - 0.5) / sigma)
    for tied_row in range(8):
        a = [list(base_a) for _ in range(8)]
        b = [list(base_b) for _ in range(8)]
        a[tied_row] = [1.0, 5.0, 6.0]
        expected = [by_hand if k == tied_row else _scipy_p(x, y, "exact") for k, (x, y) in enumerate(zip(a, b))]
        assert by_hand == pytest.approx(_scipy_p(a[tied_row], b[tied_row], "asymptotic"), rel=1e-12)
        assert _stats(a, b)["p_value"] == pytest.approx(expected, rel=1e-12), tied_row


def test_points_whose_a_counts_differ_while_b_counts_agree():
    """A's points hold 3, 5 and 3 samples, B's 4 each: each point's p and interval as its own
    samples give them (scipy; Bonett-Price written out)."""
    a = [[1.0, 1.2, 1.4], [2.0, 2.2, 2.4, 2.6, 2.9], [1.1, 1.3, 1.5]]
    b = [[1.3, 1.5, 1.6, 1.7], [2.1, 2.5, 2.7, 3.0], [1.0, 1.2, 1.35, 1.6]]
    s = _stats(a, b)
    assert list(s["n_a"]) == [3, 5, 3] and list(s["n_b"]) == [4, 4, 4]
    for k in range(3):
        assert s["p_value"][k] == pytest.approx(_scipy_p(a[k], b[k], "exact"), rel=1e-12), k
        low, high = _bonett_price(a[k], b[k], 0.95)
        assert (s["ci_low"][k], s["ci_high"][k]) == pytest.approx((low, high), rel=1e-12), k
    # and the other way round (A's counts agree, B's differ)
    s = _stats(b, a)
    for k in range(3):
        low, high = _bonett_price(b[k], a[k], 0.95)
        assert (s["ci_low"][k], s["ci_high"][k]) == pytest.approx((low, high), rel=1e-12), k
