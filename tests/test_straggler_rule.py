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

import dataclasses

import numpy as np
import pytest

from hpcbench.measure.stragglers import (Rule, analyze, binomial_tail, columns, spikes, straggler_columns, verdict,
                                       with_verdict)

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


# ---- spikes: above the rank's median by more than spike_k = 5 robust deviations ----------------------

def test_spikes_use_five_robust_deviations_above_the_median():
    # one rank, 20 samples (ms): 99 x4, 100 x8, 101 x4 and 103, 105, 108, 110.
    # median (10th, 11th of the sorted 20) = 100; |deviations| 0 x8, 1 x8, 3, 5, 8, 10: MAD 1 ms.
    # limit = 100 + max(5 x 1.4826 x 1 = 7.413, floor 2) = 107.413 ms: 108 and 110 are spikes
    # (a factor 2.5 would put the limit at 103.7065 (3 spikes); 0 at the 2 ms floor, 102 (4 spikes))
    row = np.array([99] * 4 + [100] * 8 + [101] * 4 + [103, 105, 108, 110]) * MS
    assert spikes(row[None, :], CPU) == [2]
    assert analyze(np.zeros((1, 20)), CPU, samples=row[None, :]).spikes_per_rank == [2]
    # 107.4 ms is under the limit, 107.42 ms over it
    assert spikes((np.r_[row[:-2], 107.4 * MS, 107.42 * MS])[None, :], CPU) == [1]


def test_a_sample_exactly_at_the_spike_limit_is_no_spike():
    # MAD 0 (19 equal samples): the limit is the median + the 2 ms floor; "above" is strict
    at = np.r_[np.full(19, 0.1), 0.1 + 2 * MS]
    assert spikes(at[None, :], CPU) == [0]
    assert spikes(np.r_[np.full(19, 0.1), np.nextafter(0.1 + 2 * MS, 1.0)][None, :], CPU) == [1]


# ---- the binomial tail -------------------------------------------------------------------------------

def test_binomial_tail_is_a_probability():
    # P(X >= 1 | 73, 1/2) = 1 - 2^-73, which is 1.0 in float64; the terms' float sum is 1 + 2 ulp
    assert binomial_tail(1, 73, 0.5) == 1.0
    assert binomial_tail(2, 61, 0.5) == 1.0
    # a certain event: P(X >= 3 | 5, 1) = 1; P(X >= 1 | 4, 0) = 0
    assert binomial_tail(3, 5, 1.0) == 1.0
    assert binomial_tail(1, 4, 0.0) == 0.0
    # P(X >= 4 | 4, 1/4) = 1/256 exactly; P(X >= 5 | 4, .) = 0 (more hits than trials)
    assert binomial_tail(4, 4, 0.25) == 1 / 256
    assert binomial_tail(5, 4, 0.25) == 0.0


# ---- one rank alone ----------------------------------------------------------------------------------

def test_a_world_of_one_names_no_one_and_its_margin_is_the_floor():
    # no other rank: its excess is 0 in every iteration, the MAD of no others is 0, the median
    # sample 10 ms (5 %: 0.5 ms): margin = the 2 ms floor; chance is not tested (p = 1)
    rep = analyze(np.full((1, 20), 10 * MS), CPU)
    assert rep.margin_s == 2 * MS
    assert rep.rank_excess_s == [0.0] and rep.rank_slowest_share == [1.0]
    assert rep.p_value == 1.0 and rep.straggler_rank is None and rep.candidate == 0
    assert rep.excess_per_iter_s == [0.0] * 20


# ---- per-iteration excess over the median of the others ----------------------------------------------

def test_excess_is_taken_per_iteration_against_that_iteration_s_other_ranks():
    # world 3, 4 iterations (ms); with two others their median is their mean:
    #   rank 0: 1 2 3 4    excess -1   -1   2.5 -1    median -1
    #   rank 1: 4 0 0 8    excess 3.5  -4  -2    5    median (-2 + 3.5)/2 = 0.75
    #   rank 2: 0 6 1 2    excess -2.5  5  -0.5 -4    median (-2.5 - 0.5)/2 = -1.5
    # slowest per iteration 1, 2, 0, 1 with excesses 3.5, 5, 2.5, 5
    own = np.array([[1, 2, 3, 4], [4, 0, 0, 8], [0, 6, 1, 2]]) * MS
    rep = analyze(own, CPU)
    assert rep.slowest_per_iter == [1, 2, 0, 1]
    assert rep.excess_per_iter_s == pytest.approx(np.array([3.5, 5, 2.5, 5]) * MS, rel=1e-12)
    assert rep.rank_excess_s == pytest.approx(np.array([-1, 0.75, -1.5]) * MS, rel=1e-12)
    assert rep.rank_slowest_share == [0.25, 0.5, 0.25]
    assert rep.candidate == 1


# ---- float32 input is read as float64 ----------------------------------------------------------------

def test_float32_tables_are_computed_in_float64():
    # 1 + 2^-23 and 2^-24 are float32 numbers; their difference 1 + 2^-24 is not (float32 arithmetic
    # would round it to 1): world 2, the excess of rank 0 over rank 1 is 1 + 2^-24 exactly
    own = np.array([[1 + 2 ** -23] * 10, [2 ** -24] * 10], dtype=np.float32)
    rep = analyze(own, CPU)
    assert rep.rank_excess_s == [1 + 2 ** -24, -(1 + 2 ** -24)]
    # float32 samples 1 and 1 + 2^-23: their median (the mean of the middle two) is 1 + 2^-24, so
    # the relative floor is 5 % of that (float32 would make it 5 % of 1)
    samples = np.array([[1, 1 + 2 ** -23] * 5] * 2, dtype=np.float32)
    assert analyze(np.zeros((2, 10)), CPU, samples=samples).margin_s == 0.05 * (1 + 2 ** -24)


# ---- the evidence line -------------------------------------------------------------------------------

def test_evidence_line_of_a_named_rank_with_its_node():
    # world 4, rank 2 late 5 ms in all 20 iterations: p = 0.25^20 = 9.09e-13; margin 2 ms (floor)
    nodes = ["gpu-b", "gpu-a", "gpu-b", "gpu-a"]
    rep = analyze(_late(4, 20, 2, 5 * MS), CPU, nodes=nodes)
    assert rep.straggler_rank == 2 and rep.straggler_node == "gpu-b"
    assert rep.evidence == ("rank 2 on gpu-b: slowest in 20/20 iterations (100%); chance 25%, p=9e-13; "
                            "median +5 ms over the median rank (> margin 2 ms) [duration]")
    # per node (in order of first appearance): gpu-b holds ranks 0 and 2, gpu-a ranks 1 and 3;
    # gpu-b has the slowest rank in every iteration, gpu-a in none; the median of its ranks'
    # median excesses: gpu-b median(0, 5) = 2.5 ms, gpu-a median(0, 0) = 0
    assert rep.node_of_rank == nodes
    assert rep.nodes == ["gpu-b", "gpu-a"]
    assert rep.node_slowest_share == [1.0, 0.0]
    assert rep.node_excess_s == pytest.approx([2.5 * MS, 0.0])


def test_evidence_line_when_chance_explains_it():
    # world 2, 9 iterations: p = 2^-9 = 0.00195 > 1e-3
    rep = analyze(_late(2, 9, 1, 5 * MS), CPU, basis="lateness")
    assert rep.evidence == ("no straggler (most suspect: rank 1): slowest in 9/9 iterations (100%); "
                            "chance 50%, p=0.002 (> 0.001); median +5 ms over the median rank (> margin 2 ms) "
                            "[lateness]")
    assert rep.node_of_rank is None and rep.nodes is None and rep.node_excess_s is None


# ---- the row's columns ---------------------------------------------------------------------------

def test_columns_leave_excess_and_share_empty_when_no_one_is_named():
    none = columns(analyze(_late(2, 9, 1, 5 * MS), CPU))
    assert none["straggler_rank"] is None and none["straggler_excess_s"] is None
    assert none["straggler_share"] is None
    assert none["straggler_p_value"] == 2.0 ** -9 and none["straggler_margin_s"] == 2 * MS
    named = columns(analyze(_late(2, 10, 1, 5 * MS), CPU))
    assert named["straggler_rank"] == 1 and named["straggler_excess_s"] == 5 * MS
    assert named["straggler_share"] == 1.0


@dataclasses.dataclass(frozen=True)
class _Loop:
    """The fields of `rank_timing.RankTimes` that straggler_columns reads (importing rank_timing
    would import torch: seconds, for a test of a few microseconds)."""
    per_rank: np.ndarray  # [world, iters] sample durations
    own: np.ndarray | None  # [world, iters] what each rank is answerable for
    own_basis: str = "duration"
    first_call_s: np.ndarray | None = None
    nodes: list[str] | None = None


def test_straggler_columns_take_the_loops_iterations_together():
    # loop 1, a collective: every rank's sample 100 ms, rank 2 arrived 6 ms late (its lateness 6 ms,
    # the others' 0); loop 2, work alone: rank 2 takes 106 ms, the others 100 (own = the durations).
    # Together 20 iterations, rank 2 slowest in all, 6 ms over the median rank in each.
    # The margin is 5 % of the median *sample* (100 ms) = 5 ms (the own values' median would be 53 ms).
    loop1 = _Loop(np.full((4, 10), 0.1), _late(4, 10, 2, 6 * MS), "lateness", np.array([0.5, 0.2, 0.2, 0.2]),
                  ["a", "a", "b", "b"])
    table2 = np.full((4, 10), 0.1)
    table2[2] = 0.106
    loop2 = _Loop(table2, table2)
    no_own = dataclasses.replace(loop1, own=None)
    cols = straggler_columns("cpu", None, no_own, loop1, loop2)
    assert cols["straggler_rank"] == 2 and cols["straggler_node"] == "b"
    assert cols["straggler_basis"] == "lateness+duration"
    assert cols["straggler_evidence"].endswith("[lateness+duration]")
    assert cols["straggler_excess_s"] == pytest.approx(6 * MS, rel=1e-9)
    assert cols["straggler_share"] == 1.0
    assert cols["straggler_margin_s"] == pytest.approx(5 * MS, rel=1e-12)
    assert cols["straggler_p_value"] == pytest.approx(0.25 ** 20, rel=1e-12)
    assert cols["rank_excess_s"] == pytest.approx([0, 0, 6 * MS, 0], abs=1e-12)
    assert cols["rank_slowest_share"] == [0.0, 0.0, 1.0, 0.0]
    assert cols["straggler_slowest_per_iter"] == [2] * 20
    assert cols["straggler_excess_per_iter_s"] == pytest.approx([6 * MS] * 20, rel=1e-9)
    # samples per rank are the 20 durations: rank 2's median (100 + 106) / 2 = 103 ms, MAD 3 ms:
    # no spikes anywhere
    assert cols["spikes_per_rank"] == [0, 0, 0, 0]
    # the first call and the nodes are the first loop's
    assert cols["first_call_s_per_rank"] == [0.5, 0.2, 0.2, 0.2]
    assert cols["first_call_ratio_per_rank"] == pytest.approx([5.0, 2.0, 0.2 / 0.103, 2.0], rel=1e-12)
    assert cols["node_of_rank"] == ["a", "a", "b", "b"]
    assert cols["straggler_nodes"] == ["a", "b"]
    assert cols["node_slowest_share"] == [0.0, 1.0]
    assert cols["node_excess_s"] == pytest.approx([0.0, 3 * MS], abs=1e-12)
    # one basis twice is named once
    assert straggler_columns("cpu", loop2, loop2)["straggler_basis"] == "duration"


def test_straggler_columns_of_no_usable_loop_are_empty_and_the_floor_follows_the_device():
    assert straggler_columns("cpu") == {} and straggler_columns("cuda", None) == {}
    assert straggler_columns("cpu", _Loop(np.full((4, 20), 1 * MS), None)) == {}
    # 0.1 ms samples (5 %: 5 us), rank 1 1 ms late: over the 20 us CUDA floor, under the 2 ms CPU floor
    late = _Loop(np.full((4, 20), 0.1 * MS), _late(4, 20, 1, 1 * MS), "lateness")
    cuda, cpu = straggler_columns("cuda", late), straggler_columns("cpu", late)
    assert cuda["straggler_margin_s"] == pytest.approx(20 * US) and cuda["straggler_rank"] == 1
    assert cpu["straggler_margin_s"] == pytest.approx(2 * MS) and cpu["straggler_rank"] is None
    assert cpu["straggler_basis"] == "lateness" and cpu["first_call_s_per_rank"] is None
    assert cpu["node_of_rank"] is None and cpu["spikes_per_rank"] == [0, 0, 0, 0]


# ---- the verdict under a family's table --------------------------------------------------------------

def _named(rank, excess_ms, share, node=None):
    return {"straggler_rank": rank, "straggler_node": node, "straggler_excess_s": excess_ms * MS,
            "straggler_share": share, "straggler_evidence": f"rank {rank}"}


def test_verdict_names_the_rank_named_most_often_and_lists_the_others():
    # rank 2 named in 3 points (excess 4, 6, 5 ms: median 5; shares 0.8, 0.9, 1.0: median 90 %),
    # ranks 3 and 0 once each; one point names no one, one row has no straggler report at all
    rows = [_named(2, 4, 0.8, "n2"), _named(3, 9, 0.6, "n3"), _named(2, 6, 0.9, "n2"), _named(0, 7, 0.7),
            _named(2, 5, 1.0, "n2"), {"straggler_rank": None, "straggler_evidence": "no straggler"},
            {"status": "failed"}]
    assert verdict(rows) == ("straggler: rank 2 on n2 in 3 of 6 points (median +5 ms over the median rank, "
                             "slowest in 90% of iterations); also named: rank 0, rank 3")


def test_verdict_with_two_ranks_named_lists_the_other_one():
    rows = [_named(1, 3, 0.6), _named(0, 8, 0.7), _named(1, 5, 0.8)]
    assert verdict(rows) == ("straggler: rank 1 in 2 of 3 points (median +4 ms over the median rank, "
                             "slowest in 70% of iterations); also named: rank 0")


def test_verdict_reads_ranks_from_a_frame_float_and_nan():
    # rows from a pandas frame: a rank column with missing values is float, None is NaN
    rows = [_named(2.0, 5, 1.0), {**_named(float("nan"), 1, 0.5), "straggler_evidence": "no straggler"}]
    assert verdict(rows) == ("straggler: rank 2 in 1 of 2 points (median +5 ms over the median rank, "
                             "slowest in 100% of iterations)")
    assert verdict(rows[1:]) is None


def test_with_verdict_puts_the_line_under_the_table_only_when_a_rank_is_named():
    from rich.console import Group
    from rich.text import Text

    table = Text("the table")
    rows = [_named(1, 5, 1.0)]
    out = with_verdict(table, rows)
    assert isinstance(out, Group) and len(out.renderables) == 2 and out.renderables[0] is table
    line = out.renderables[1]
    assert isinstance(line, Text) and line.plain == verdict(rows) and str(line.style) == "bold yellow"
    assert with_verdict(table, [{"straggler_rank": None, "straggler_evidence": "x"}]) is table
