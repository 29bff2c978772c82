"""The array form behind the fast simulator (ir.Program, DualPipe built as arrays, validate on
arrays), the bare pass the simulator target compares against, and the ratio runs that let
`hpcbench compare` gate the tools' own speed. Nothing here is timed."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcbench.core.cli import main as cli
from hpcbench.pipeline.ir import (
    NO_PART,
    Action,
    Schedule,
    from_program,
    program_of,
    validate,
)
from hpcbench.pipeline.schedules import SCHEDULES, build, requirement
from hpcbench.pipeline.simulator import (
    Costs,
    Deadlock,
    _Simulation,
    peak_activations,
    simulate,
)
from hpcbench.results import load_run

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _plain(s: Schedule) -> Schedule:
    """The same schedule held as plain Action lists (what torch's schedules are)."""
    return Schedule(s.name, s.num_ranks, s.num_stages, s.num_microbatches, s.stage_to_rank,
                    {r: list(s.actions[r]) for r in s.actions}, s.params_per_rank, s.first_stages, s.last_stages)


def test_dualpipe_on_two_ranks_is_the_eight_step_program_by_hand():
    s = build("dualpipe", 2, 4)  # PP = 2, n = 2 per copy; copy 1's stages 2, 3 sit on ranks 1, 0
    # rank 0 (h = 0, a middle rank): step 2 F0 F1; step 4 (first pair not overlapped) F0, B1, (F1;B0);
    # step 6 B1 then, zero-bubble from there, I0; step 8 its W
    assert [str(a) for a in s.actions[0]] == ["0F0", "3F0", "0F1", "3B0", "(3F1;0B0)", "3B1", "0I1", "0W1"]
    assert [str(a) for a in s.actions[1]] == ["2F0", "1F0", "2F1", "1B0", "(1F1;2B0)", "1B1", "2I1", "2W1"]
    assert s.program is not None and len(s.program) == 16


def test_a_program_schedule_reads_like_a_dict_of_action_lists():
    s = build("dualpipe", 4, 8)
    assert list(s.actions) == [0, 1, 2, 3] and len(s.actions) == 4
    assert s.actions[2] is s.actions[2]  # decoded once, then kept
    assert dict(s.actions)[1] == s.actions[1]
    with pytest.raises(KeyError):
        s.actions[4]
    with pytest.raises(TypeError):
        s.actions[0] = []  # read-only: the Program is the truth
    pair = next(a for a in s.actions[0] if a.kind == "FB")
    assert pair.pair[0].kind == "F" and pair.pair[1].kind == "B"
    assert all(type(a.stage) is int and type(a.mb) is int for r in s.actions for a in s.compute_actions(r))


@pytest.mark.parametrize("name", SCHEDULES)
def test_encoding_a_schedule_and_decoding_it_gives_the_same_actions(name):
    s = build(name, 4, 16)
    p = program_of(_plain(s))
    assert [p.decode(int(p.offsets[i]), int(p.offsets[i + 1])) for i in range(4)] == [s.actions[r] for r in range(4)]
    assert ((p.kind2 == NO_PART) == (p.stage2 == NO_PART)).all()


def _broken(s: Schedule, **columns) -> Schedule:
    """`s` with some of its Program's columns replaced (the generator's arrays, corrupted)."""
    p = dataclasses.replace(s.program, **columns)
    return from_program(s.name, s.num_ranks, s.num_stages, s.num_microbatches, s.stage_to_rank, p,
                        first_stages=s.first_stages, last_stages=s.last_stages)


def test_validate_on_arrays_names_the_first_violation_as_the_walk_does():
    s = build("dualpipe", 4, 8)
    validate(s)
    p = s.program
    # rank 0's first two rows swapped is fine (both forwards) ...
    kind, stage, mb = p.kind.copy(), p.stage.copy(), p.mb.copy()
    # ... a forward's microbatch repeated is not
    mb[1] = mb[0] = 0
    stage[1] = stage[0]
    with pytest.raises(ValueError, match="appears twice"):
        validate(_broken(s, stage=stage, mb=mb))
    # a backward moved before its forward on the same rank
    rows = np.arange(int(p.offsets[0]), int(p.offsets[1]))
    first_b = rows[p.kind[rows] == 1][0]
    kind, stage, mb = p.kind.copy(), p.stage.copy(), p.mb.copy()
    for col, src in ((kind, p.kind), (stage, p.stage), (mb, p.mb)):
        col[rows[0]], col[first_b] = src[first_b], src[rows[0]]
    for col in (p.kind2, p.stage2, p.mb2):
        assert col[rows[0]] == NO_PART  # neither row is a pair: swapping the first columns is the whole swap
    with pytest.raises(ValueError, match="rank 0: .*before its forward"):
        validate(_broken(s, kind=kind, stage=stage, mb=mb))
    # an action on a rank its stage does not live on
    stage = p.stage.copy()
    stage[rows[0]] = 1  # stage 1 lives on rank 1
    with pytest.raises(ValueError, match="lives on rank 1"):
        validate(_broken(s, stage=stage))


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("ranks,mbs", [(2, 8), (4, 16), (6, 12)])
def test_the_simulator_reads_generated_and_encoded_schedules_alike(name, ranks, mbs):
    if requirement(name, ranks, mbs):
        pytest.skip(requirement(name, ranks, mbs))
    s = build(name, ranks, mbs)
    costs = Costs(F=1.3, B=2.7, W=0.9, p2p_latency=0.11, dispatch=0.013)
    a, b = simulate(s, costs), simulate(_plain(s), costs)
    assert (a.makespan, a.busy, a.peak_activations) == (b.makespan, b.busy, b.peak_activations)
    assert [(x.rank, str(x.action), x.start, x.end) for x in a.spans] == \
           [(x.rank, str(x.action), x.start, x.end) for x in b.spans]
    assert [(t.src_rank, t.dst_rank, str(t.src_action), t.start, t.end, t.dst_key) for t in a.transfers] == \
           [(t.src_rank, t.dst_rank, str(t.src_action), t.start, t.end, t.dst_key) for t in b.transfers]
    # the arrays' peak activations agree with the walk over the spans
    assert a.peak_activations == peak_activations(list(a.spans))


def test_a_replayed_step_overrides_single_actions_and_pairs():
    s = build("dualpipe", 2, 4)
    # rank 0 runs 0F0 3F0 0F1 3B0 (3F1;0B0) 3B1 0I1 0W1: every one 1 ms but the pair (5) and 0F0 (2)
    base = simulate(s, Costs(F=1, B=1, W=0.5, FB=1))
    replay = simulate(s, Costs(F=1, B=1, W=0.5, FB=1, per_action={"(3F1;0B0)": 5.0, "0F0": 2.0}))
    rank0 = {str(x.action): x.end - x.start for x in replay.spans if x.rank == 0}
    assert rank0["(3F1;0B0)"] == 5.0 and rank0["0F0"] == 2.0 and rank0["3F0"] == 1.0
    assert replay.busy[0] == base.busy[0] + 4.0 + 1.0


def test_a_deadlock_in_a_generated_schedule_is_reported():
    s = build("dualpipe", 2, 4)
    p = s.program
    kind = p.kind.copy()
    kind[0] = 1  # rank 0 starts with 0B0: it needs a gradient rank 1 can only send after 0F0's activation
    with pytest.raises(Deadlock, match="rank 0 at 0B0"):
        simulate(_broken(s, kind=kind), Costs())


def _bare_pass():
    sys.path.insert(0, str(SCRIPTS))
    try:
        from pipeline_targets import bare_pass
    finally:
        sys.path.remove(str(SCRIPTS))
    return bare_pass


def _keys(schedule):
    sim = _Simulation(schedule, Costs())
    return (sim.in1, sim.in2, sim.out1, sim.out2, sim.dst1, sim.dst2, sim.offsets, sim.num_keys)


def test_the_bare_pass_visits_every_action_of_a_schedule_that_finishes_and_stops_at_a_deadlock():
    bare_pass = _bare_pass()
    for name in ("1f1b", "dualpipe", "dualpipev"):
        s = build(name, 4, 16)
        assert bare_pass(*_keys(s)) == sum(len(a) for a in s.actions.values())
    good = build("1f1b", 2, 2)
    stuck = dict(good.actions)
    stuck[0] = [Action("F", 0, 0), Action("B", 0, 0), Action("F", 0, 1), Action("B", 0, 1)]
    stuck[1] = [Action("F", 1, 1), Action("B", 1, 1), Action("F", 1, 0), Action("B", 1, 0)]
    # rank 0 runs 0F0 and stops at 0B0; rank 1 cannot start: one action visited of eight
    assert bare_pass(*_keys(Schedule("bad", 2, 2, 2, good.stage_to_rank, stuck))) == 1


def test_ratio_runs_let_compare_gate_a_tool_slowing_down(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPTS))
    try:
        from compare_target import write_ratio_run
    finally:
        sys.path.remove(str(SCRIPTS))
    rng = np.random.default_rng(0)
    steady = [2.0 + 0.02 * x for x in rng.standard_normal(6)]
    old = write_ratio_run(tmp_path / "a", "simulate", [("dualpipe 64x1024", steady), ("dualpipe 1024x4096", [1.7])])
    new = write_ratio_run(tmp_path / "b", "simulate",
                          [("dualpipe 64x1024", [1.5 * r for r in steady]), ("dualpipe 1024x4096", [1.7])])
    df = load_run(old)
    assert list(df["case"]) == ["dualpipe 64x1024", "dualpipe 1024x4096"] and df["median_s"].iloc[1] == 1.7
    assert df.attrs["metadata"]["params"] == {"tool_speed": ["tool", "case"]}
    assert cli(["compare", str(old), str(old), "--fail-on-regression", "10"]) == 0
    assert cli(["compare", str(old), str(new), "--fail-on-regression", "10"]) == 1  # 50 % slower against its floor
    out = capsys.readouterr().out
    assert "slower" in out and "too few samples" in out  # one repetition of the large case cannot be tested


@pytest.mark.parametrize("name", ["dualpipe", "dualpipev", "1f1b", "zb1p"])
def test_time_per_kind_equals_the_spans_it_replaces(name):
    from hpcbench.pipeline.schedules import build
    from hpcbench.pipeline.simulator import Costs, simulate

    tl = simulate(build(name, 4, 8), Costs(F=1.0, B=2.0, W=0.8, FB=2.4))
    by_kind: dict = {}
    for span in tl.spans:
        by_kind[span.action.kind] = by_kind.get(span.action.kind, 0.0) + span.end - span.start
    assert tl.kind_time == pytest.approx(by_kind) and set(tl.kind_time) == set(by_kind)
