"""The pipeline simulator against timelines worked out by hand: overlapped F&B pairs with a nonzero
point-to-point latency (both of a pair's outputs leave at its end and land one hop later, or at
once on the pair's own rank), and the default weight-gradient cost (W = B / 2, I = B - W).

Schedules are written out action by action (`ir.Schedule`), small enough to follow every event;
costs are F = 1, B = 2 unless said otherwise, L the per-hop latency. In-process, no torch.
"""

import pytest

from hpcbench.pipeline.dualpipe import dualpipe
from hpcbench.pipeline.ir import Action, Schedule, input_key, validate
from hpcbench.pipeline.simulator import Costs, simulate


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
