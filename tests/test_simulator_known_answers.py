"""The pipeline simulator against timelines worked out by hand: overlapped F&B pairs with a nonzero
point-to-point latency (both of a pair's outputs leave at its end and land one hop later, or at
once on the pair's own rank), and the default weight-gradient cost (W = B / 2, I = B - W).

Schedules are written out action by action (`ir.Schedule`), small enough to follow every event;
costs are F = 1, B = 2 unless said otherwise, L the per-hop latency. In-process, no torch.
"""

import pytest

from hpcbench.pipeline.dualpipe import dualpipe
from hpcbench.pipeline.ir import Action, Schedule, input_key, validate
from hpcbench.pipeline.simulator import Costs, Span, closed_form_bubble, peak_activations, simulate


def _a(text: str) -> Action:
    """'1F0' -> Action("F", 1, 0); '1F1;1B0' -> the FB pair of the two."""
    if ";" in text:
        f, b = (_a(t) for t in text.split(";"))
        return Action("FB", pair=(f, b))
    return Action(text[1], int(text[0]), int(text[2:]))


def _schedule(stage_to_rank, programs, mbs=2, **kw) -> Schedule:
    actions = {r: [_a(t) for t in prog.split()] for r, prog in programs.items()}
    s = Schedule("hand", len(programs), len(stage_to_rank), mbs, dict(stage_to_rank), actions, **kw)
    validate(s)
    return s


def _spans(tl) -> dict[str, tuple[float, float]]:
    return {str(sp.action): (sp.start, sp.end) for sp in tl.spans}


# ---- a pair's outputs, bidirectional, on 2 ranks -----------------------------------------------------
# Two copies as in DualPipe on 2 ranks: copy 0 is stage 0 (rank 0) -> stage 1 (rank 1), copy 1 is
# stage 2 (rank 1) -> stage 3 (rank 0). Stage 2's forward costs 2 (the rest F = 1, B = 2), so rank 1
# is busy until t = 2 with 2F0 while 0F0's activation lands at 1 + L: for L < 1 rank 1 never waits,
# and its pair (2F1;1B0) runs [3, 7] (cost F(stage 2) + B = 2 + 2) whatever L is. Both its outputs
# go to rank 0: 2F1's activation for 3F1 and 1B0's gradient for 0B0, landing at 7 + L.
BIDI = {0: 0, 1: 1, 2: 1, 3: 0}
RANK1 = "2F0 1F0 2F1;1B0 1F1 1B1 2B0 2B1"
GRADIENT_FIRST = "0F0 0F1 3F0 3B0 0B0 3F1 3B1 0B1"   # rank 0 waits on the pair's 2nd output first
ACTIVATION_FIRST = "0F0 0F1 3F0 3B0 3F1 0B0 3B1 0B1"  # ... on its 1st output first


def _bidi(rank0: str, latency: float):
    s = _schedule(BIDI, {0: rank0, 1: RANK1}, first_stages=(0, 2), last_stages=(1, 3))
    return simulate(s, Costs(F=1, B=2, per_stage={2: {"F": 2}}, p2p_latency=latency))


def _bidi_by_hand(L: float, gradient_first: bool) -> dict[str, tuple[float, float]]:
    """Every span of `_bidi`, worked out step by step (valid for 0 <= L < 1)."""
    t = {
        # rank 1: 2F0 [0,2]; 1F0 needs 0F0's activation (1 + L <= 2): [2,3]; the pair [3,7];
        # 1F1 (activation at 2 + L): [7,8]; 1B1 (last stage, its own loss): [8,10];
        # 2B0 needs 3B0's gradient (5 + 2L, see below): [10,12]; 2B1 needs 3B1's: [12+2L, 14+2L]
        "2F0": (0, 2), "1F0": (2, 3), "(2F1;1B0)": (3, 7), "1F1": (7, 8), "1B1": (8, 10),
        "2B0": (10, 12),
        # rank 0: 0F0 [0,1]; 0F1 [1,2]; 3F0 needs 2F0's activation at 2 + L: [2+L, 3+L];
        # 3B0 [3+L, 5+L] (sends stage 2's gradient, landing 5 + 2L)
        "0F0": (0, 1), "0F1": (1, 2), "3F0": (2 + L, 3 + L), "3B0": (3 + L, 5 + L),
    }
    if gradient_first:
        # 0B0 waits for the pair's gradient: 7 + L (> 5 + L); 3F1's activation (7 + L) is there
        # when 0B0 ends
        t |= {"0B0": (7 + L, 9 + L), "3F1": (9 + L, 10 + L), "3B1": (10 + L, 12 + L)}
    else:
        # 3F1 waits for the pair's activation: 7 + L; 0B0's gradient is there when 3F1 ends
        t |= {"3F1": (7 + L, 8 + L), "0B0": (8 + L, 10 + L), "3B1": (10 + L, 12 + L)}
    # 0B1 needs 1B1's gradient (10 + L), rank 0 is free at 12 + L; 2B1 as above
    t |= {"0B1": (12 + L, 14 + L), "2B1": (12 + 2 * L, 14 + 2 * L)}
    return t


@pytest.mark.parametrize("gradient_first", [True, False], ids=["second-output", "first-output"])
@pytest.mark.parametrize("L", [0.0, 0.25, 0.5])
def test_both_outputs_of_an_overlapped_pair_land_one_hop_after_its_end(L, gradient_first):
    tl = _bidi(GRADIENT_FIRST if gradient_first else ACTIVATION_FIRST, L)
    expected = _bidi_by_hand(L, gradient_first)
    got = _spans(tl)
    assert got.keys() == expected.keys()
    for name, (start, end) in expected.items():
        assert got[name] == pytest.approx((start, end)), name
    assert tl.makespan == pytest.approx(14 + 2 * L)  # 2B1's end


@pytest.mark.parametrize("gradient_first", [True, False])
def test_a_latency_change_of_d_moves_what_waits_on_the_pair_by_exactly_d(gradient_first):
    # the pair itself does not move (rank 1 has slack for L < 1); what waits on one of its outputs
    # moves by the one hop
    rank0 = GRADIENT_FIRST if gradient_first else ACTIVATION_FIRST
    waits = "0B0" if gradient_first else "3F1"
    L, d = 0.25, 0.375
    before, after = _spans(_bidi(rank0, L)), _spans(_bidi(rank0, L + d))
    assert after["(2F1;1B0)"] == before["(2F1;1B0)"] == (3.0, 7.0)
    assert after[waits][0] - before[waits][0] == pytest.approx(d)
    assert before[waits][0] - before["(2F1;1B0)"][1] == pytest.approx(L)


def test_the_pairs_transfers_leave_at_its_end_and_take_one_hop():
    tl = _bidi(GRADIENT_FIRST, 0.5)
    pair = [t for t in tl.transfers if t.src_rank == 1 and t.start == 7.0]
    assert sorted((str(t.src_action), t.dst_rank, t.dst_key, t.end) for t in pair) == [
        ("1B0", 0, ("b", 0, 0), 7.5), ("2F1", 0, ("f", 3, 1), 7.5)]


# ---- a pair whose outputs go to two different ranks: 3 stages on 3 ranks ------------------------------
LINE3 = {0: "0F0 0F1 0B0 0B1", 1: "1F0 1F1;1B0 1B1", 2: "2F0 2B0 2F1 2B1"}


def _line3_by_hand(L: float) -> dict[str, tuple[float, float]]:
    return {
        "0F0": (0, 1), "0F1": (1, 2),
        "1F0": (1 + L, 2 + L),                  # 0F0's activation: 1 + L
        "2F0": (2 + 2 * L, 3 + 2 * L),          # 1F0's: 2 + 2L
        "2B0": (3 + 2 * L, 5 + 2 * L),          # last stage: at once
        "(1F1;1B0)": (5 + 3 * L, 8 + 3 * L),    # waits for 2B0's gradient (5 + 3L), costs F + B = 3
        "0B0": (8 + 4 * L, 10 + 4 * L),         # the pair's 2nd output (1B0 -> rank 0): 8 + 4L
        "2F1": (8 + 4 * L, 9 + 4 * L),          # the pair's 1st output (1F1 -> rank 2): 8 + 4L
        "2B1": (9 + 4 * L, 11 + 4 * L),
        "1B1": (11 + 5 * L, 13 + 5 * L),        # 2B1's gradient: 11 + 5L
        "0B1": (13 + 6 * L, 15 + 6 * L),        # 1B1's: 13 + 6L
    }


@pytest.mark.parametrize("L", [0.0, 0.5, 1.25])
def test_a_pair_sends_its_forward_and_backward_outputs_to_two_ranks(L):
    tl = simulate(_schedule({0: 0, 1: 1, 2: 2}, LINE3), Costs(F=1, B=2, p2p_latency=L))
    got = _spans(tl)
    for name, span in _line3_by_hand(L).items():
        assert got[name] == pytest.approx(span), name
    assert tl.makespan == pytest.approx(15 + 6 * L)
    assert tl.busy == {0: 6.0, 1: 6.0, 2: 6.0}


def test_in_a_chain_each_hop_adds_the_latency_change_once():
    # 0B0 sits at the end of 4 hops (0F0 -> 1F0 -> 2F0, 2B0 -> the pair -> 0B0); 2F1 too (the last
    # one being the pair's forward output): a latency change of d moves both by 4 d, 0B1 by 6 d
    s = _schedule({0: 0, 1: 1, 2: 2}, LINE3)
    d = 0.3
    a, b = (_spans(simulate(s, Costs(F=1, B=2, p2p_latency=L))) for L in (0.2, 0.2 + d))
    assert b["0B0"][0] - a["0B0"][0] == pytest.approx(4 * d)
    assert b["2F1"][0] - a["2F1"][0] == pytest.approx(4 * d)
    assert b["0B1"][0] - a["0B1"][0] == pytest.approx(6 * d)


# ---- a pair whose outputs stay on its own rank -----------------------------------------------------------
# stages 0 and 1 on rank 0, stage 2 on rank 1; rank 0's pair (0F1;1B0) hands 0F1's activation to its
# own 1F1 and 1B0's gradient to its own 0B0: no hop for either.
LOCAL = {0: "0F0 1F0 0F1;1B0 0B0 1F1 1B1 0B1", 1: "2F0 2B0 2F1 2B1"}


@pytest.mark.parametrize("L", [0.0, 0.5])
def test_a_pairs_output_for_its_own_rank_needs_no_hop(L):
    tl = simulate(_schedule({0: 0, 1: 0, 2: 1}, LOCAL), Costs(F=1, B=2, p2p_latency=L))
    expected = {
        "0F0": (0, 1), "1F0": (1, 2),                  # 0F0 -> 1F0 on the same rank: no hop
        "2F0": (2 + L, 3 + L), "2B0": (3 + L, 5 + L),  # 1F0's activation crosses: 2 + L
        "(0F1;1B0)": (5 + 2 * L, 8 + 2 * L),           # 2B0's gradient crosses back: 5 + 2L
        "0B0": (8 + 2 * L, 10 + 2 * L),                # the pair's gradient, at its end
        "1F1": (10 + 2 * L, 11 + 2 * L),
        "2F1": (11 + 3 * L, 12 + 3 * L), "2B1": (12 + 3 * L, 14 + 3 * L),
        "1B1": (14 + 4 * L, 16 + 4 * L), "0B1": (16 + 4 * L, 18 + 4 * L),
    }
    got = _spans(tl)
    for name, span in expected.items():
        assert got[name] == pytest.approx(span), name
    # only the four crossings of stage 1 -> 2 are transfers
    assert sorted(t.dst_key for t in tl.transfers) == [("b", 1, 0), ("b", 1, 1), ("f", 2, 0), ("f", 2, 1)]


# ---- DualPipe on 4 ranks: no action starts before its input has landed ----------------------------------

@pytest.mark.parametrize("L", [0.5, 3.0])
def test_dualpipe_never_starts_an_action_before_its_input_lands_and_pairs_outputs_bind(L):
    s = dualpipe(4, 8)
    tl = simulate(s, Costs(F=1, B=2, W=1, p2p_latency=L))
    start = {}
    for sp in tl.spans:
        for part in sp.action.parts():
            key = input_key(s, part)
            if key is not None:
                start[(sp.rank, key)] = sp.start
    pair_second = 0
    for t in tl.transfers:
        assert t.end - t.start == pytest.approx(L)
        consumer = start[(t.dst_rank, t.dst_key)]
        assert consumer >= t.end - 1e-12, t
        # transfers of an FB pair's backward half that a consumer had to wait for
        src = [sp for sp in tl.spans if sp.rank == t.src_rank and sp.end == t.start and sp.action.kind == "FB"]
        if src and src[0].action.pair[1] == t.src_action and consumer == pytest.approx(t.end):
            pair_second += 1
    assert pair_second > 0


# ---- the default weight-gradient cost: W = B / 2, I = B - W ----------------------------------------------
# ZB on 2 ranks, 1 microbatch: rank 0 "0F0 0I0 0W0", rank 1 "1F0 1I0 1W0". The makespan is
# F + F + I(stage 1) + I(stage 0) + W(stage 0): 0I0 waits for 1I0's gradient.
ZB2 = {0: "0F0 0I0 0W0", 1: "1F0 1I0 1W0"}


def _zb2(costs: Costs):
    return _spans_and_makespan(simulate(_schedule({0: 0, 1: 1}, ZB2, mbs=1), costs))


def _spans_and_makespan(tl):
    return _spans(tl), tl.makespan


def test_default_w_is_half_of_b_and_i_the_rest():
    # B = 4, W not given: W = 2, I = 2.  0F0 [0,1]; 1F0 [1,2]; 1I0 [2,4]; 1W0 [4,6];
    # 0I0 [4,6]; 0W0 [6,8]: makespan 8
    spans, makespan = _zb2(Costs(F=1, B=4))
    assert spans == {"0F0": (0, 1), "1F0": (1, 2), "1I0": (2, 4), "1W0": (4, 6), "0I0": (4, 6), "0W0": (6, 8)}
    assert makespan == 8
    assert (Costs(B=4).of("W", 0), Costs(B=4).of("I", 0)) == (2, 2)
    assert Costs().of("W", 3) == 1.0  # the defaults: B = 2


def test_given_w_leaves_i_as_b_minus_w():
    # B = 4, W = 1: I = 3.  1I0 [2,5]; 1W0 [5,6]; 0I0 [5,8]; 0W0 [8,9]: makespan 9
    spans, makespan = _zb2(Costs(F=1, B=4, W=1))
    assert spans["1I0"] == (2, 5) and spans["1W0"] == (5, 6)
    assert spans["0I0"] == (5, 8) and spans["0W0"] == (8, 9)
    assert makespan == 9


def test_default_w_follows_a_per_stage_b():
    # stage 1's B = 6: its W = 3, I = 3; stage 0 keeps B = 4: W = 2, I = 2.
    # 1I0 [2,5]; 1W0 [5,8]; 0I0 [5,7]; 0W0 [7,9]: makespan 9
    spans, makespan = _zb2(Costs(F=1, B=4, per_stage={1: {"B": 6}}))
    assert spans["1I0"] == (2, 5) and spans["1W0"] == (5, 8)
    assert spans["0I0"] == (5, 7) and spans["0W0"] == (7, 9)
    assert makespan == 9


@pytest.mark.parametrize("pp", [4, 8])
def test_dualpipe_bubble_with_the_default_w_is_the_papers(pp):
    # DeepSeek-V3's DualPipe bubble (PP/2 - 1) x (F&B + B - 3W) with F = 1, B = 2, F&B = F + B = 3
    # and the default W = B / 2 = 1: (PP/2 - 1) x 2 -> 2 for PP = 4, 6 for PP = 8
    tl = simulate(dualpipe(pp, 4 * pp), Costs(F=1, B=2))
    assert tl.max_bubble == pytest.approx((pp // 2 - 1) * 2.0)


# ---- 1F1B on 2 ranks, worked out by hand: the defaults, the hop, the dispatch gap, replayed costs ----------
# rank 0 "0F0 0F1 0B0 0B1", rank 1 "1F0 1B0 1F1 1B1" (PyTorch's 1F1B for 2 stages, 2 microbatches).
# With F = 1, B = 2 and no latency: 0F0 [0,1], 0F1 [1,2]; 1F0 [1,2], 1B0 [2,4], 1F1 [4,5], 1B1 [5,7];
# 0B0 waits for 1B0's gradient: [4,6]; 0B1 for 1B1's: [7,9]. The step is (m + p - 1)(F + B) = 9.
ONE_F_ONE_B = {0: "0F0 0F1 0B0 0B1", 1: "1F0 1B0 1F1 1B1"}
ONE_F_ONE_B_SPANS = {"0F0": (0, 1), "0F1": (1, 2), "1F0": (1, 2), "1B0": (2, 4), "1F1": (4, 5), "1B1": (5, 7),
                     "0B0": (4, 6), "0B1": (7, 9)}


def _one_f_one_b(costs: Costs):
    return simulate(_schedule({0: 0, 1: 1}, ONE_F_ONE_B), costs)


def test_default_costs_are_f_1_b_2_and_free_hops():
    tl = _one_f_one_b(Costs())
    assert _spans(tl) == ONE_F_ONE_B_SPANS
    assert tl.makespan == 9.0 and tl.busy == {0: 6.0, 1: 6.0}
    assert (Costs().of("F", 0), Costs().of("B", 0), Costs().of("W", 0), Costs().of("I", 0)) == (1.0, 2.0, 1.0, 1.0)
    assert Costs().transfer() == 0.0
    # a bandwidth alone moves nothing: no activation bytes were given
    assert Costs(p2p_bandwidth=4.0).transfer() == 0.0
    assert _spans(_one_f_one_b(Costs(p2p_bandwidth=4.0))) == ONE_F_ONE_B_SPANS


def test_the_hop_is_latency_plus_bytes_over_bandwidth():
    # 0.25 + 1 B / (4 B per unit) = 0.5 per hop
    assert Costs(p2p_latency=0.25, activation_bytes=1.0, p2p_bandwidth=4.0).transfer() == 0.5
    assert Costs(p2p_latency=0.0, activation_bytes=12.0, p2p_bandwidth=4.0).transfer() == 3.0


def test_three_microbatches_with_a_hop_by_hand():
    # m = 3: rank 0 "0F0 0F1 0B0 0F2 0B1 0B2", rank 1 "1F0 1B0 1F1 1B1 1F2 1B2", hop L = 0.5:
    # 1F0 [1+L, 2+L]; 1B0 [2+L, 4+L] (its gradient lands 4+2L); 1F1 [4+L, 5+L]; 1B1 [5+L, 7+L];
    # 0B0 [4+2L, 6+2L]; 0F2 [6+2L, 7+2L] (lands 7+3L); 0B1 [7+2L, 9+2L]; 1F2 [7+3L, 8+3L];
    # 1B2 [8+3L, 10+3L] (lands 10+4L); 0B2 [10+4L, 12+4L]
    L = 0.5
    s = _schedule({0: 0, 1: 1}, {0: "0F0 0F1 0B0 0F2 0B1 0B2", 1: "1F0 1B0 1F1 1B1 1F2 1B2"}, mbs=3)
    tl = simulate(s, Costs(p2p_latency=0.25, activation_bytes=1.0, p2p_bandwidth=4.0))
    assert _spans(tl) == {
        "0F0": (0, 1), "0F1": (1, 2), "0B0": (4 + 2 * L, 6 + 2 * L), "0F2": (6 + 2 * L, 7 + 2 * L),
        "0B1": (7 + 2 * L, 9 + 2 * L), "0B2": (10 + 4 * L, 12 + 4 * L),
        "1F0": (1 + L, 2 + L), "1B0": (2 + L, 4 + L), "1F1": (4 + L, 5 + L), "1B1": (5 + L, 7 + L),
        "1F2": (7 + 3 * L, 8 + 3 * L), "1B2": (8 + 3 * L, 10 + 3 * L)}
    assert tl.makespan == 12 + 4 * L
    # every crossing: the sender, the receiver, what, when it leaves and lands, the tensor it makes ready
    got = sorted((t.src_rank, t.dst_rank, str(t.src_action), t.start, t.end, t.dst_key) for t in tl.transfers)
    assert got == [
        (0, 1, "0F0", 1.0, 1 + L, ("f", 1, 0)), (0, 1, "0F1", 2.0, 2 + L, ("f", 1, 1)),
        (0, 1, "0F2", 7 + 2 * L, 7 + 3 * L, ("f", 1, 2)),
        (1, 0, "1B0", 4 + L, 4 + 2 * L, ("b", 0, 0)), (1, 0, "1B1", 7 + L, 7 + 2 * L, ("b", 0, 1)),
        (1, 0, "1B2", 10 + 3 * L, 10 + 4 * L, ("b", 0, 2))]
    assert [t.what for t in sorted(tl.transfers, key=lambda t: t.start)][:2] == [
        "activation of 0F0", "activation of 0F1"]
    assert sorted(t.what for t in tl.transfers if t.src_rank == 1)[0] == "gradient of 1B0"


def test_dispatch_is_a_gap_between_a_ranks_actions_not_busy_time():
    # d = 0.5 after every action but before a rank's first: 0F0 [0,1], 0F1 [1.5,2.5]; 1F0 [1,2],
    # 1B0 [2.5,4.5], 1F1 [5,6], 1B1 [6.5,8.5]; 0B0 (gradient at 4.5, rank free at 3) [4.5,6.5];
    # 0B1 (gradient at 8.5) [8.5,10.5]
    tl = _one_f_one_b(Costs(dispatch=0.5))
    assert _spans(tl) == {"0F0": (0, 1), "0F1": (1.5, 2.5), "1F0": (1, 2), "1B0": (2.5, 4.5), "1F1": (5, 6),
                          "1B1": (6.5, 8.5), "0B0": (4.5, 6.5), "0B1": (8.5, 10.5)}
    assert tl.makespan == 10.5 and tl.busy == {0: 6.0, 1: 6.0}


def test_a_replayed_action_takes_its_measured_time_and_the_rest_their_costs():
    # 1B0 measured at 5: 1B0 [2,7], 1F1 [7,8], 1B1 [8,10]; 0B0 [7,9]; 0B1 [10,12]
    tl = _one_f_one_b(Costs(per_action={"1B0": 5.0}))
    assert _spans(tl) == {"0F0": (0, 1), "0F1": (1, 2), "1F0": (1, 2), "1B0": (2, 7), "1F1": (7, 8), "1B1": (8, 10),
                          "0B0": (7, 9), "0B1": (10, 12)}
    assert tl.makespan == 12.0 and tl.busy == {0: 6.0, 1: 9.0}
    # idle = makespan - busy: 6 and 3; bubble ratios 1/2 and 1/4
    assert (tl.idle(0), tl.idle(1)) == (6.0, 3.0)
    assert (tl.bubble_ratio(0), tl.bubble_ratio(1)) == (0.5, 0.25)
    assert tl.max_bubble == 6.0 and tl.mean_bubble_ratio == 0.375
    assert tl.kind_time == {"F": 4.0, "B": 11.0}


def test_per_stage_costs_and_the_kind_totals():
    # stage 1's F = 3: 1F0 [1,4], 1B0 [4,6], 1F1 [6,9], 1B1 [9,11]; 0B0 [6,8]; 0B1 [11,13]
    tl = _one_f_one_b(Costs(per_stage={1: {"F": 3}}))
    assert _spans(tl) == {"0F0": (0, 1), "0F1": (1, 2), "1F0": (1, 4), "1B0": (4, 6), "1F1": (6, 9), "1B1": (9, 11),
                          "0B0": (6, 8), "0B1": (11, 13)}
    assert tl.kind_time == {"F": 8.0, "B": 8.0}
    assert tl.busy == {0: 6.0, 1: 10.0} and tl.makespan == 13.0
    assert (tl.idle(0), tl.idle(1)) == (7.0, 3.0)


def test_costs_of_each_kind_per_stage():
    c = Costs(F=1, B=4, per_stage={1: {"B": 6}, 2: {"W": 1}, 3: {"I": 5}})
    assert [c.of(k, 0) for k in "FBIW"] == [1, 4, 2, 2]   # W = B/2, I = B - W
    assert [c.of(k, 1) for k in "FBIW"] == [1, 6, 3, 3]   # from stage 1's own B
    assert [c.of(k, 2) for k in "FBIW"] == [1, 4, 3, 1]   # I = B - its own W
    assert [c.of(k, 3) for k in "FBIW"] == [1, 4, 5, 2]
    assert [Costs(B=4, W=1, I=2).of(k, 0) for k in "IW"] == [2, 1]


def test_an_overlapped_pairs_cost():
    f, b, i = Action("F", 0, 1), Action("B", 1, 0), Action("I", 1, 0)
    assert Costs(F=1, B=2).pair(f, b) == 3.0                           # F + B: no overlap gain
    assert Costs(F=1, B=2, per_stage={1: {"B": 4}}).pair(f, b) == 5.0  # the backward's own stage
    assert Costs(F=1, B=2).pair(f, i) == 2.0                           # F + I (I = B - B/2)
    assert Costs(F=1, B=2, FB=2.5).pair(f, b) == 2.5


def test_kind_totals_count_a_pair_once_as_fb():
    tl = simulate(_schedule({0: 0, 1: 1, 2: 2}, LINE3), Costs(F=1, B=2))
    assert tl.kind_time == {"F": 5.0, "B": 10.0, "FB": 3.0}
    tl = simulate(_schedule({0: 0, 1: 1, 2: 2}, LINE3), Costs(F=1, B=2, FB=2.5))
    assert tl.kind_time == {"F": 5.0, "B": 10.0, "FB": 2.5}
    assert tl.spans[[str(sp.action) for sp in tl.spans].index("(1F1;1B0)")].end - 5.0 == 2.5  # 2B0 ends at 5


# ---- closed forms (DeepSeek-V3 Table 2), F = 1, B = 2, W = 0.5, F&B = 2.5 -----------------------------------

@pytest.mark.parametrize("name,pp,bubble", [
    ("1f1b", 4, 9.0),       # (PP-1)(F+B) = 3 x 3
    ("gpipe", 4, 9.0),
    ("zb1p", 4, 6.0),       # (PP-1)(F+B-2W) = 3 x 2
    ("dualpipe", 4, 3.0),   # (PP/2-1)(F&B+B-3W) = 1 x 3
    ("dualpipe", 8, 9.0),   # 3 x 3
    ("dualpipev", 8, 9.0),
    ("interleaved_1f1b", 4, None),
])
def test_closed_form_bubbles_by_hand(name, pp, bubble):
    # stage 1's costs differ: the closed forms take the uniform per-stage costs, stage 0's
    costs = Costs(F=1, B=2, W=0.5, FB=2.5, per_stage={1: {"B": 10, "W": 3}})
    assert closed_form_bubble(name, pp, costs) == bubble


def test_closed_form_overlapped_pair_defaults_to_f_plus_b():
    # F&B = F + B = 3: DualPipe (PP/2-1)(3 + 2 - 1.5) = 3.5 at PP = 4, 10.5 at PP = 8
    assert closed_form_bubble("dualpipe", 4, Costs(F=1, B=2, W=0.5)) == 3.5
    assert closed_form_bubble("dualpipev", 8, Costs(F=1, B=2, W=0.5)) == 10.5


# ---- activation memory -------------------------------------------------------------------------------------

def test_peak_activations_by_hand():
    # an F holds its activation until its B, or its W when split (I keeps it); a pair allocates its F
    # before its B frees: rank 0 "0F0 0F1 0B0 0F2 0B1 0B2" peaks at 2; rank 1 of LINE3 "1F0 (1F1;1B0)
    # 1B1" at 2; an I/W split rank "0F0 0I0 0F1 0W0 ..." at 2 (the I frees nothing)
    spans = [Span(0, _a(t), float(k), float(k + 1)) for k, t in enumerate("0F0 0F1 0B0 0F2 0B1 0B2".split())]
    spans += [Span(1, _a(t), float(k), float(k + 1)) for k, t in enumerate("1F0 1F1;1B0 1B1".split())]
    spans += [Span(2, _a(t), float(k), float(k + 1)) for k, t in enumerate("2F0 2I0 2F1 2W0 2I1 2F2 2W1".split())]
    spans += [Span(3, _a(t), float(k), float(k + 1)) for k, t in enumerate("3F0 3F1 3F2;3B0 3B1 3B2".split())]
    # a free of one: after 4B0, two more forwards reach 3 live
    spans += [Span(4, _a(t), float(k), float(k + 1)) for k, t in enumerate("4F0 4F1 4B0 4F2 4F3 4B1 4B2 4B3".split())]
    assert peak_activations(spans) == {0: 2, 1: 2, 2: 2, 3: 3, 4: 3}


def test_the_simulators_peak_activations_and_span_order():
    tl = simulate(_schedule({0: 0, 1: 1, 2: 2}, LINE3), Costs(F=1, B=2))
    assert tl.peak_activations == {0: 2, 1: 2, 2: 1}
    assert peak_activations(tl.spans) == tl.peak_activations
    zb = simulate(_schedule({0: 0, 1: 1}, ZB2, mbs=1), Costs(F=1, B=4))
    assert zb.peak_activations == {0: 1, 1: 1}
    s = _schedule({0: 0, 1: 1}, {0: "0F0 0F1 0B0 0F2 0B1 0B2", 1: "1F0 1B0 1F1 1B1 1F2 1B2"}, mbs=3)
    tl = simulate(s, Costs(p2p_latency=0.5))
    assert tl.peak_activations == {0: 2, 1: 1}
    # each action once; a rank's spans in its own order, one after another
    assert len(tl.spans) == 12 and len({(sp.rank, str(sp.action)) for sp in tl.spans}) == 12
    for rank, actions in s.actions.items():
        mine = [sp for sp in tl.spans if sp.rank == rank]
        assert [sp.action for sp in mine] == actions
        assert all(a.end <= b.start for a, b in zip(mine, mine[1:]))


def test_spans_and_transfers_read_as_lists():
    tl = _one_f_one_b(Costs())
    want = {Span(int(t[0]), _a(t), float(a), float(b)) for t, (a, b) in ONE_F_ONE_B_SPANS.items()}
    assert set(tl.spans) == want and len(tl.spans) == len(want)
    assert tl.spans == list(tl.spans) and not (tl.spans == list(tl.spans)[::-1])
    assert repr(tl.spans) == repr(list(tl.spans)) and repr(tl.spans).startswith("[Span(rank=0")
    assert len(tl.transfers) == 4 and tl.transfers == list(tl.transfers)


# ---- edge shapes: an idle rank, an empty schedule, one microbatch both ways, a forward with no producer ----

def test_a_rank_without_actions_is_idle_for_the_whole_step():
    # 1F1B on ranks 0 and 2, rank 1 holds no stage: F = 1/16, B = 1/8, the step (2 + 1)(3/16) = 9/16
    s = Schedule("gap", 3, 2, 2, {0: 0, 1: 2}, {0: [_a(t) for t in "0F0 0F1 0B0 0B1".split()], 1: [],
                                                  2: [_a(t) for t in "1F0 1B0 1F1 1B1".split()]})
    validate(s)
    tl = simulate(s, Costs(F=0.0625, B=0.125))
    assert tl.makespan == 0.5625 and tl.busy == {0: 0.375, 1: 0.0, 2: 0.375}
    assert tl.idle(1) == 0.5625 and tl.bubble_ratio(1) == 1.0
    assert tl.peak_activations == {0: 2, 2: 1}
    assert {sp.rank for sp in tl.spans} == {0, 2} and len(tl.spans) == 8
    assert sorted((t.src_rank, t.dst_rank) for t in tl.transfers) == [(0, 2), (0, 2), (2, 0), (2, 0)]


def test_a_schedule_without_actions_takes_no_time():
    tl = simulate(Schedule("empty", 1, 1, 0, {0: 0}, {0: []}), Costs())
    assert (tl.makespan, tl.busy, list(tl.spans), list(tl.transfers), tl.peak_activations, tl.kind_time) == (
        0.0, {0: 0.0}, [], [], {}, {})


def test_one_microbatch_each_way_on_two_ranks_by_hand():
    # BIDI with one microbatch: rank 0 "0F0 3F0 3B0 0B0", rank 1 "2F0 1F0 1B0 2B0", stage 0's F = 2, hop
    # L = 0.5. 0F0 [0,2], 2F0 [0,1]; 3F0 waits for 2F0 (1+L) and for rank 0: [2,3]; 1F0 for 0F0: [2+L, 3+L];
    # 3B0 and 1B0 (last stages: their own loss) [3,5] and [3+L, 5+L]; 2B0 waits for 3B0's gradient (5+L):
    # [5+L, 7+L]; 0B0 for 1B0's (5+2L): [5+2L, 7+2L]. 3F0 hands nothing on (a last stage).
    L = 0.5
    s = _schedule(BIDI, {0: "0F0 3F0 3B0 0B0", 1: "2F0 1F0 1B0 2B0"}, mbs=1, first_stages=(0, 2), last_stages=(1, 3))
    tl = simulate(s, Costs(F=1, B=2, per_stage={0: {"F": 2}}, p2p_latency=L))
    assert _spans(tl) == {"0F0": (0, 2), "2F0": (0, 1), "3F0": (2, 3), "1F0": (2 + L, 3 + L), "3B0": (3, 5),
                          "1B0": (3 + L, 5 + L), "2B0": (5 + L, 7 + L), "0B0": (5 + 2 * L, 7 + 2 * L)}
    assert tl.makespan == 7 + 2 * L


def test_a_pair_written_backward_first_still_allocates_before_it_frees():
    # LINE3's rank 1 with its pair written (1B0;1F1): 1F1's activation is live before 1B0 frees 1F0's
    tl = simulate(_schedule({0: 0, 1: 1, 2: 2}, {0: "0F0 0F1 0B0 0B1", 1: "1F0 1B0;1F1 1B1",
                                                 2: "2F0 2B0 2F1 2B1"}), Costs(F=1, B=2))
    assert tl.peak_activations == {0: 2, 1: 2, 2: 1} == peak_activations(tl.spans)
    assert tl.kind_time == {"F": 5.0, "B": 10.0, "FB": 3.0}


def test_closed_forms_take_stage_0s_own_costs():
    # stage 0's W = 0.25 (its B = 2): ZB1P (PP-1)(F+B-2W) = 3 x 2.5; DualPipe (PP/2-1)(F&B+B-3W) = 1 x 3.75
    costs = Costs(F=1, B=2, W=0.5, FB=2.5, per_stage={0: {"W": 0.25}})
    assert closed_form_bubble("zb1p", 4, costs) == 7.5
    assert closed_form_bubble("dualpipe", 4, costs) == 3.75
    costs = Costs(F=1, B=2, W=0.5, per_stage={0: {"F": 2, "B": 3}})  # W stays the given 0.5
    assert closed_form_bubble("1f1b", 4, costs) == 15.0  # 3 x (2 + 3)
    assert closed_form_bubble("zb1p", 4, costs) == 12.0  # 3 x (2 + 3 - 1)
