"""The straggler decision rule at its boundaries, on [world, iters] tables built by hand.

Every table here is lateness relative to the others (the `own` input), mostly 0 for the healthy
ranks, so a rank's excess over the median rank is its own value exactly (no rounding), and each
boundary of `measure.stragglers`' documented rule is hit exactly:
  1. slowest in at least half of the iterations (min_share 0.5),
  2. binomial tail P(hits or more | iterations, 1/world) at most alpha = 1e-3,
  3. median excess *exceeds* the margin
        max(4 x 1.4826 x MAD of the other ranks' median excesses, floor_s, 5 % x median sample),
     floor_s = 2 ms on CPU, 20 us on CUDA.
The candidate is the rank with the largest median excess; ties: the one most often slowest.
All in-process, numpy only.
"""

import numpy as np
import pytest

from hpcbench.measure.stragglers import Rule, analyze

MS = 1e-3
US = 1e-6
CPU = Rule()  # the defaults are the CPU rule


def _late(world: int, iters: int, rank: int, value: float) -> np.ndarray:
    """Every rank 0 s late except `rank`, `value` s late in every iteration."""
    own = np.zeros((world, iters))
    own[rank] = value
    return own


# ---- Rule.for_device -------------------------------------------------------------------------------

def test_for_device_picks_the_floor_by_device_kind_and_keeps_the_other_defaults():
    cuda, cpu = Rule.for_device("cuda"), Rule.for_device("cpu")
    assert cuda.floor_s == pytest.approx(20 * US, rel=1e-12)
    assert cpu.floor_s == pytest.approx(2 * MS, rel=1e-12)
    # anything that is not CUDA gets the CPU floor
    assert Rule.for_device("mps").floor_s == pytest.approx(2 * MS, rel=1e-12)
    for r in (cuda, cpu):
        assert (r.min_share, r.alpha, r.k_mad, r.rel_floor) == (0.5, 1e-3, 4.0, 0.05)


@pytest.mark.parametrize("excess_us,named_on_cuda,named_on_cpu", [
    (15, False, False),    # below both floors
    (25, True, False),     # above 20 us, below 2 ms
    (1900, True, False),   # still below 2 ms
    (2100, True, True),    # above both
])
def test_the_device_floor_is_the_binding_margin_when_ranks_agree(excess_us, named_on_cuda, named_on_cpu):
    # world 4, 20 iterations, rank 3 late by `excess_us` in every one, the others 0: the others'
    # median excesses are all 0 (MAD 0) and the median sample is 0 (60 of 80 samples are 0), so the
    # margin is the floor alone: 20 us on CUDA, 2 ms on CPU.
    own = _late(4, 20, 3, excess_us * US)
    cuda = analyze(own, Rule.for_device("cuda"))
    cpu = analyze(own, Rule.for_device("cpu"))
    assert cuda.margin_s == pytest.approx(20 * US) and cpu.margin_s == pytest.approx(2 * MS)
    assert cuda.candidate == cpu.candidate == 3
    assert cuda.straggler_rank == (3 if named_on_cuda else None)
    assert cpu.straggler_rank == (3 if named_on_cpu else None)


# ---- the candidate and its tie-breaks ----------------------------------------------------------------

def test_ties_on_median_excess_go_to_the_rank_slowest_more_often_even_at_a_higher_index():
    # world 4, ranks 0 and 3 never late. Per iteration (ms): rank 1 late by a, rank 2 by b, with
    #   a = 1 2 5 8 9,  b = 5 9 8 1 2   (the same five numbers: both medians are 5 ms)
    # The others' median for rank 1 is median(0, b, 0) = 0, so rank 1's excess is a exactly, and
    # rank 2's is b. Rank 2 is slowest where b > a: iterations 0, 1, 2 (3 of 5); rank 1 in 3, 4.
    # Repeated 4 times: 20 iterations, rank 2 slowest in 12 (60 %), rank 1 in 8 (40 %).
    a = np.array([1, 2, 5, 8, 9]) * MS
    b = np.array([5, 9, 8, 1, 2]) * MS
    own = np.zeros((4, 20))
    own[1], own[2] = np.tile(a, 4), np.tile(b, 4)
    rep = analyze(own, CPU)
    assert rep.rank_excess_s[1] == rep.rank_excess_s[2] == 5 * MS  # an exact tie
    assert rep.rank_slowest_share == [0.0, 0.4, 0.6, 0.0]
    assert rep.candidate == 2
    # and it is named: 12 of 20 at world 4 (the docstring's own example: p = 9.4e-4 <= 1e-3);
    # the others' median excesses: ranks 0 and 3: median over iterations of -min(a, b) =
    # -(median of 1,1,2,2,5 x4) = -2 ms; rank 1: 5 ms -> [-2, 5, -2]: median -2, MAD 0; the median
    # sample is 0.5 ms (40 of 80 are 0, the next is 1 ms): margin = max(0, 2 ms, 25 us) = 2 ms < 5 ms
    assert rep.p_value == pytest.approx(9.35391579e-4, rel=1e-6)
    assert rep.margin_s == pytest.approx(2 * MS)
    assert rep.straggler_rank == 2


def test_a_tie_on_median_excess_the_other_way_round_goes_to_the_lower_index():
    # the same table with ranks 1 and 2 swapped: now rank 1 is slowest more often
    a = np.array([1, 2, 5, 8, 9]) * MS
    b = np.array([5, 9, 8, 1, 2]) * MS
    own = np.zeros((4, 20))
    own[1], own[2] = np.tile(b, 4), np.tile(a, 4)
    rep = analyze(own, CPU)
    assert rep.rank_excess_s[1] == rep.rank_excess_s[2] == 5 * MS
    assert rep.rank_slowest_share == [0.0, 0.6, 0.4, 0.0]
    assert rep.candidate == 1 and rep.straggler_rank == 1


def test_the_candidate_is_the_largest_median_excess_not_the_most_often_slowest():
    # world 4, ranks 0 and 3 never late, 20 iterations (ms):
    #   9 iterations  rank 1: 2, rank 2: 1    -> rank 1 slowest; excesses 2 and 1
    #   2 iterations  rank 1: 9, rank 2: 8    -> rank 1 slowest; excesses 9 and 8
    #   9 iterations  rank 1: -10, rank 2: 10 -> rank 2 slowest; excesses -10 - median(0, 10, 0) = -10
    #                                            and 10 - median(0, -10, 0) = 10
    # rank 1: slowest in 11 (55 %), its excesses sorted -10 x9, 2 x9, 9 x2: median (10th, 11th) = 2 ms
    # rank 2: slowest in 9 (45 %), its excesses sorted 1 x9, 8 x2, 10 x9: median = 8 ms
    own = np.zeros((4, 20))
    own[1] = np.array([2] * 9 + [9] * 2 + [-10] * 9) * MS
    own[2] = np.array([1] * 9 + [8] * 2 + [10] * 9) * MS
    rep = analyze(own, CPU)
    assert rep.rank_slowest_share == [0.0, 0.55, 0.45, 0.0]
    assert rep.rank_excess_s[1] == pytest.approx(2 * MS) and rep.rank_excess_s[2] == pytest.approx(8 * MS)
    assert rep.candidate == 2
    assert rep.straggler_rank is None  # 45 % < 50 %
    assert "most suspect: rank 2" in rep.evidence


def test_equal_shares_go_to_the_larger_median_excess_at_the_higher_index():
    # world 4, 20 iterations: rank 1 late 3 ms in iterations 0-9, rank 2 late 4 ms in 10-19.
    # Both slowest in 10 (50 %). rank 1's excesses: 3 x10, 0 - median(0, 4, 0) = 0 x10 -> median 1.5 ms;
    # rank 2's: 0 x10, 4 x10 -> 2 ms.
    own = np.zeros((4, 20))
    own[1, :10] = 3 * MS
    own[2, 10:] = 4 * MS
    rep = analyze(own, CPU)
    assert rep.rank_slowest_share == [0.0, 0.5, 0.5, 0.0]
    assert rep.rank_excess_s[1] == pytest.approx(1.5 * MS) and rep.rank_excess_s[2] == pytest.approx(2 * MS)
    assert rep.candidate == 2


# ---- rule 1: at least half ---------------------------------------------------------------------------

def _slowest_in(hits: int) -> np.ndarray:
    """World 8, 20 iterations: rank 0 late 5 ms in every iteration; it is slowest in the first `hits`.
    Each of the other iterations is taken by one of ranks 1..7 (7.5 ms there, 0 elsewhere), in turn,
    so none of them is slowest more than twice and each one's median excess is 0."""
    own = np.zeros((8, 20))
    own[0] = 5 * MS
    for j, it in enumerate(range(hits, 20)):
        own[1 + j % 7, it] = 7.5 * MS
    return own


def test_a_rank_slowest_in_exactly_half_of_the_iterations_is_named():
    # rank 0's excess is 5 ms in every iteration: where another rank is at 7.5 ms the median of the
    # other seven is still 0. The others' median excesses are all 0 (MAD 0); the median sample is 0:
    # margin = floor = 2 ms < 5 ms. Slowest in 10 of 20 = 50 %, "at least half";
    # chance 1/8: P(X >= 10 | 20, 1/8) = 5.2e-5 <= 1e-3.
    rep = analyze(_slowest_in(10), CPU)
    assert rep.rank_slowest_share[0] == 0.5
    assert rep.rank_excess_s == pytest.approx([5 * MS] + [0.0] * 7)
    assert rep.p_value == pytest.approx(5.18349726e-5, rel=1e-6)
    assert rep.margin_s == pytest.approx(2 * MS)
    assert rep.straggler_rank == 0


def test_a_rank_slowest_in_just_under_half_is_not_named():
    # 9 of 20 = 45 %: the chance test alone would pass (P(X >= 9 | 20, 1/8) = 3.4e-4), and so would
    # the margin; only "at least half" fails
    rep = analyze(_slowest_in(9), CPU)
    assert rep.candidate == 0 and rep.rank_slowest_share[0] == 0.45
    assert rep.p_value == pytest.approx(3.39896040e-4, rel=1e-6)
    assert rep.rank_excess_s[0] == pytest.approx(5 * MS) and rep.margin_s == pytest.approx(2 * MS)
    assert rep.straggler_rank is None
    assert "< 50%" in rep.evidence


# ---- rule 3: the margin --------------------------------------------------------------------------

def test_a_median_excess_exactly_at_the_floor_is_not_named_one_ulp_above_is():
    # the margin is max(0 (MAD), 2 ms, 5 % x 0 (median sample)) = 2 ms exactly; the rule wants the
    # excess to *exceed* it
    at = analyze(_late(4, 20, 1, 2 * MS), CPU)
    assert at.margin_s == 2 * MS and at.rank_excess_s[1] == 2 * MS
    assert at.straggler_rank is None and "<= margin" in at.evidence
    above = analyze(_late(4, 20, 1, np.nextafter(2 * MS, 1.0)), CPU)
    assert above.straggler_rank == 1 and "> margin" in above.evidence


def test_cuda_floor_exactly_at_margin_is_not_named():
    cuda = Rule.for_device("cuda")
    at = analyze(_late(4, 20, 2, 20 * US), cuda)
    assert at.margin_s == pytest.approx(20 * US) and at.straggler_rank is None
    assert analyze(_late(4, 20, 2, 21 * US), cuda).straggler_rank == 2


def _with_samples(excess: float, world: int = 4, sample_s: float = 0.125):
    """Rank 1 late by `excess` in every iteration of 20; every sample (duration) `sample_s`."""
    return analyze(_late(world, 20, 1, excess), CPU, samples=np.full((world, 20), sample_s))


def test_the_relative_floor_binds_when_samples_are_long():
    # median sample 125 ms: 5 % of it is 6.25 ms, above the 2 ms floor and the MAD term (0)
    assert _with_samples(6.0 * MS).margin_s == pytest.approx(6.25 * MS)
    assert _with_samples(6.0 * MS).straggler_rank is None   # 6.0 < 6.25 (a 4 % floor, 5 ms, would name it)
    assert _with_samples(6.5 * MS).straggler_rank == 1      # 6.5 > 6.25 (a 6 % floor, 7.5 ms, would not)
    assert _with_samples(6.2 * MS).straggler_rank is None
    assert _with_samples(6.3 * MS).straggler_rank == 1


def test_exactly_at_the_relative_floor_is_not_named_one_ulp_above_is():
    # 0.05 x 0.125 = 0.00625: the float of 0.05 divided by 8, which is the float of 0.00625
    at = _with_samples(0.00625)
    assert at.margin_s == 0.00625 and at.rank_excess_s[1] == 0.00625
    assert at.straggler_rank is None
    assert _with_samples(np.nextafter(0.00625, 1.0)).straggler_rank == 1


def test_the_relative_floor_uses_the_median_of_own_when_no_samples_are_given():
    # every rank 200 ms, rank 1 `e` more: the median of the 80 values is 200 ms -> margin 10 ms
    def rep(e):
        own = np.full((4, 20), 0.2)
        own[1] += e
        return analyze(own, CPU)
    assert rep(9 * MS).margin_s == pytest.approx(10 * MS)
    assert rep(9 * MS).straggler_rank is None
    assert rep(11 * MS).straggler_rank == 1


def _spread(c0_ms: float):
    """World 5, 20 iterations, each rank a constant: c = [c0, 0, 1, 2, 3] ms."""
    return analyze(np.repeat(np.array([[c0_ms], [0.0], [1.0], [2.0], [3.0]]) * MS, 20, axis=1), CPU)


def test_the_mad_term_of_the_margin_leaves_the_candidate_out():
    # excess = c_r - median of the other four (the mean of the middle two):
    #   rank 1: 0 - median(c0, 1, 2, 3) = -2.5;  rank 2: 1 - median(c0, 0, 2, 3) = -1.5
    #   rank 3: 2 - median(c0, 0, 1, 3) = 0;     rank 4: 3 - median(c0, 0, 1, 2) = 1.5   (c0 > 3)
    #   rank 0: c0 - median(0, 1, 2, 3) = c0 - 1.5
    # others: [-2.5, -1.5, 0, 1.5]: median -0.75, |deviations| 1.75 0.75 0.75 2.25 -> MAD 1.25 ms
    # margin = 4 x 1.4826 x 1.25 ms = 7.413 ms (the floor 2 ms and 5 % of the 2 ms median sample are
    # smaller). Had rank 0 been counted, [e0, -2.5, -1.5, 0, 1.5] would give MAD 1.5 ms, 8.8956 ms.
    below, above = _spread(8.85), _spread(8.95)  # rank 0's excess 7.35 ms and 7.45 ms
    assert below.rank_excess_s == pytest.approx([7.35 * MS, -2.5 * MS, -1.5 * MS, 0.0, 1.5 * MS])
    assert below.margin_s == pytest.approx(7.413 * MS) and above.margin_s == pytest.approx(7.413 * MS)
    assert below.straggler_rank is None
    assert above.straggler_rank == 0


def test_a_full_tie_goes_to_the_lower_rank():
    # ranks 1 and 2 mirror each other: 3 ms late in iterations 0-9 and 10-19 respectively. Both are
    # slowest in 10 of 20 and both have the median excess (3 x10, 0 x10) -> 1.5 ms: the stable order
    # keeps the lower rank, so the report does not depend on how the sort breaks a tie
    own = np.zeros((4, 20))
    own[1, :10] = 3 * MS
    own[2, 10:] = 3 * MS
    rep = analyze(own, CPU)
    assert rep.rank_slowest_share == [0.0, 0.5, 0.5, 0.0]
    assert rep.rank_excess_s[1] == rep.rank_excess_s[2] == 1.5 * MS
    assert rep.candidate == 1


# ---- rule 2: more often than chance ---------------------------------------------------------------

def test_two_ranks_need_ten_iterations_as_documented():
    # world 2, rank 1 late 5 ms in every iteration: P(10 of 10 | 1/2) = 2^-10 = 9.77e-4 <= 1e-3,
    # P(9 of 9) = 2^-9 = 1.95e-3 > 1e-3
    ten, nine = analyze(_late(2, 10, 1, 5 * MS), CPU), analyze(_late(2, 9, 1, 5 * MS), CPU)
    assert ten.p_value == 2.0 ** -10 and ten.straggler_rank == 1
    assert nine.p_value == 2.0 ** -9 and nine.straggler_rank is None


def test_a_p_value_exactly_at_alpha_is_enough():
    # "at most alpha": with alpha = 2^-10 exactly, 10 of 10 at world 2 (p = 2^-10) passes
    own = _late(2, 10, 1, 5 * MS)
    assert analyze(own, Rule(alpha=2.0 ** -10)).straggler_rank == 1
    assert analyze(own, Rule(alpha=np.nextafter(2.0 ** -10, 0.0))).straggler_rank is None
