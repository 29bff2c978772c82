"""Pipeline schedules: the representation, the simulator's closed forms, the executor's gradient
parity (in-process at one rank; on gloo at 2 and 4 ranks), synthetic-mode agreement with the
simulator, timelines, `hpcbench simulate`, bad input and a hung rank."""

import json
import time

import pytest
import torch
import torch.distributed as dist

from hpcbench.pipeline.clocks import Synthetic
from hpcbench.pipeline.executor import ActionRecord, Executor, StepResult
from hpcbench.pipeline.ir import (
    Action,
    Schedule,
    input_key,
    message_plan,
    output_key,
    prerequisite,
    validate,
)
from hpcbench.pipeline.model import ModelSpec, batch, build_chunks, reference
from hpcbench.pipeline.schedules import SCHEDULES, build, model_chunks, requirement
from hpcbench.pipeline.simulator import Costs, Deadlock, closed_form_bubble, simulate
from hpcbench.pipeline.trace import chrome_trace, measured_timeline, write_gantt
from hpcbench.results import load_run

SHAPES = [(2, 4), (2, 8), (4, 8), (4, 16), (6, 12), (8, 32)]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("ranks,mbs", SHAPES)
def test_every_schedule_runs_each_microbatch_once_per_stage_and_never_deadlocks(name, ranks, mbs):
    if requirement(name, ranks, mbs):
        pytest.skip(requirement(name, ranks, mbs))
    s = build(name, ranks, mbs)  # build() validates: F once, B or I+W once, per stage and microbatch
    computes = [a for r in s.actions for a in s.compute_actions(r)]
    per_copy = s.num_microbatches
    assert len([a for a in computes if a.kind == "F"]) == s.num_stages * per_copy
    assert per_copy * s.copies == mbs
    tl = simulate(s, Costs(F=1, B=2, W=1))
    assert len(tl.spans) == sum(len(a) for a in s.actions.values())
    # every message a rank sends is consumed exactly once by the rank holding the next stage
    sent = [key for msgs in message_plan(s).values() for _, key in msgs]
    assert len(sent) == len(set(sent))


@pytest.mark.parametrize("pp", [2, 4, 8, 16])
@pytest.mark.parametrize("costs", [Costs(F=1, B=2, W=1), Costs(F=1.5, B=2.5, W=1.0, FB=3.1),
                                   Costs(F=1, B=2, W=1, FB=2.0)])
def test_simulator_reproduces_the_dualpipe_papers_closed_forms(pp, costs):
    for name, ranks in (("1f1b", pp), ("zb1p", pp), ("dualpipe", pp), ("dualpipev", pp // 2)):
        s = build(name, ranks, 4 * pp)
        tl = simulate(s, costs)
        stages_pp = s.num_stages if name == "dualpipev" else ranks
        expected = closed_form_bubble(name, stages_pp, costs)
        # the paper's bubble is the idle time of the worst rank (every rank, for 1F1B and ZB1P)
        assert tl.max_bubble == pytest.approx(expected, abs=1e-9), name


def test_simulator_predicts_activation_memory():
    assert simulate(build("1f1b", 4, 16), Costs()).peak_activations == {0: 4, 1: 3, 2: 2, 3: 1}
    assert simulate(build("gpipe", 4, 16), Costs()).peak_activations[0] == 16
    assert max(simulate(build("dualpipe", 8, 32), Costs()).peak_activations.values()) == 8 + 1
    assert max(simulate(build("dualpipev", 4, 16), Costs()).peak_activations.values()) == 8 + 1


def test_simulator_time_is_continuous_and_counts_point_to_point():
    s = build("1f1b", 2, 2)
    tl = simulate(s, Costs(F=1, B=2, p2p_latency=0.25))
    # rank 1 starts its first forward when the activation lands: 1 + 0.25
    first = min((sp for sp in tl.spans if sp.rank == 1), key=lambda sp: sp.start)
    assert first.start == pytest.approx(1.25)
    assert all(t.end - t.start == pytest.approx(0.25) for t in tl.transfers)


def test_a_deadlocking_order_is_reported_with_the_stuck_actions():
    good = build("1f1b", 2, 2)
    actions = dict(good.actions)
    # rank 0 insists on the backward of microbatch 1 before sending microbatch 1's activation
    actions[0] = [Action("F", 0, 0), Action("B", 0, 1), Action("F", 0, 1), Action("B", 0, 0)]
    bad = Schedule("bad", 2, 2, 2, good.stage_to_rank, actions)
    with pytest.raises(ValueError, match="before its forward"):
        validate(bad)
    actions[0] = [Action("F", 0, 0), Action("B", 0, 0), Action("F", 0, 1), Action("B", 0, 1)]
    actions[1] = [Action("F", 1, 1), Action("B", 1, 1), Action("F", 1, 0), Action("B", 1, 0)]
    with pytest.raises(Deadlock, match="rank 0 at 0B0.*rank 1 at 1F1"):
        simulate(Schedule("bad", 2, 2, 2, good.stage_to_rank, actions), Costs())


@pytest.mark.parametrize("name", SCHEDULES)
def test_simulator_executor_and_trace_follow_the_one_dependency_rule(name):
    s = build(name, 4, 16)
    tl = simulate(s, Costs(F=1, B=2, W=1, p2p_latency=0.1))
    planned = {key for msgs in message_plan(s).values() for _, key in msgs}  # what the executor sends
    assert {t.dst_key for t in tl.transfers} == planned
    records = {r: [ActionRecord(r, str(sp.action), sp.action.kind, sp.action.stage, sp.action.mb, sp.start, sp.end, 0.0)
                   for sp in tl.spans if sp.rank == r] for r in s.actions}
    assert {t.dst_key for t in measured_timeline(s, records).transfers} == planned


def test_the_rule_at_dualpipes_four_pipeline_ends():
    s = build("dualpipe", 4, 8)  # copy 0: stages 0..3 on ranks 0..3; copy 1: stages 4..7 on ranks 3..0
    assert (s.first_stages, s.last_stages, s.copies) == ((0, 4), (3, 7), 2)
    assert input_key(s, Action("F", 4, 1)) is None and input_key(s, Action("F", 5, 1)) == ("f", 5, 1)
    assert output_key(s, Action("F", 3, 0)) is None and output_key(s, Action("F", 6, 0)) == ("f", 7, 0)
    assert input_key(s, Action("B", 7, 2)) is None and output_key(s, Action("B", 4, 2)) is None
    assert output_key(s, Action("I", 1, 2)) == ("b", 0, 2) and output_key(s, Action("W", 1, 2)) is None
    assert prerequisite(Action("B", 1, 2)) == ("F", 1, 2) and prerequisite(Action("W", 1, 2)) == ("I", 1, 2)


def test_an_overlapped_pair_cannot_hold_the_backward_of_its_own_forward():
    good = build("1f1b", 1, 2)
    pair = Action("FB", pair=(Action("F", 0, 1), Action("B", 0, 1)))
    bad = Schedule("bad", 1, 1, 2, good.stage_to_rank, {0: [Action("F", 0, 0), pair, Action("B", 0, 0)]})
    with pytest.raises(ValueError, match=r"rank 0: 0B1 before its forward"):
        validate(bad)


def test_shapes_a_schedule_cannot_use_say_what_would_work():
    assert "even number of ranks" in requirement("dualpipe", 3, 12)
    assert ">= 2 x ranks = 8" in requirement("dualpipe", 4, 6)
    assert "at least 2 x ranks = 8" in requirement("dualpipev", 4, 6)
    with pytest.raises(ValueError, match="available: gpipe, 1f1b"):
        build("2f2b", 4, 8)


def _one_rank_parity(name: str, overlap: bool = True, synthetic=None):
    s = build(name, 1, 4)
    spec = ModelSpec(layers=2 * model_chunks(s), width=16)
    chunks = build_chunks(spec, model_chunks(s), torch.device("cpu"))
    ex = Executor(s, spec, chunks, 0, torch.device("cpu"), overlap=overlap, synthetic=synthetic)
    xs, ys = batch(spec, 4, torch.device("cpu"))
    res = ex.step(xs, ys)
    ex.overlap.close()
    loss, ref = reference(spec, chunks, 4, torch.device("cpu"))
    got = ex.grads_by_chunk()
    assert sum(res.losses.values()) == pytest.approx(float(loss), rel=1e-5)
    for c, grads in enumerate(ref):
        for g, r in zip(got[c], grads):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    return res


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n != "dualpipe"])
def test_executor_matches_the_single_process_reference_on_one_rank(name):
    res = _one_rank_parity(name)
    assert all(r.end >= r.start and r.blocked >= 0 for r in res.records)


def test_overlapped_pairs_really_run_concurrently():
    durations = {"F": 0.02, "B": 0.04, "I": 0.02, "W": 0.02}
    pairs = {}
    for overlap in (True, False):
        res = _one_rank_parity("dualpipev", overlap=overlap, synthetic=Synthetic(durations, torch.device("cpu")))
        pairs[overlap] = [r.end - r.start for r in res.records if r.kind == "FB"]
    assert pairs[True] and len(pairs[True]) == len(pairs[False])
    # concurrent: about max(F, B) = 40 ms; one after the other: F + B = 60 ms. Sleeps never end
    # early, only late (a busy machine stretched one overlapped pair to 85 ms): the fastest pair of
    # each mode tells them apart, as no sequential pair can take under 60 ms
    assert min(pairs[True]) < 0.055 < min(pairs[False])


def test_trace_is_valid_chrome_json_with_flows_and_the_gantt_is_a_png(tmp_path, monkeypatch):
    s = build("dualpipe", 4, 8)
    tl = simulate(s, Costs(F=1, B=2, W=1, FB=2.5, p2p_latency=0.1))
    trace = json.loads(json.dumps(chrome_trace(tl, "dualpipe", unit_s=1e-3)))
    events = trace["traceEvents"]
    assert {e["ph"] for e in events} == {"M", "X", "s", "f"}
    assert {e["pid"] for e in events} == {0, 1, 2, 3}
    compute = [e for e in events if e["ph"] == "X" and e["tid"] == 0]
    comm = [e for e in events if e["ph"] == "X" and e["tid"] == 1]
    assert len(compute) == len(tl.spans) and len(comm) == len(tl.transfers) > 0
    assert all(e["dur"] >= 0 and isinstance(e["ts"], float) for e in compute + comm)
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == ends.keys() and all(ends[i]["ts"] >= starts[i]["ts"] for i in starts)
    assert compute[0]["dur"] == pytest.approx(1000.0)  # 1 ms forward, in microseconds
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    timelines = {"dualpipe": tl, "1f1b": simulate(build("1f1b", 4, 8), Costs())}
    png = write_gantt(timelines, tmp_path / "g.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # a panel per schedule: a bar per span, on its rank's row, from its start to its end (ms)
    (fig,) = figures
    assert len(fig.axes) == 2
    for ax, (name, t) in zip(fig.axes, timelines.items()):
        assert ax.get_title(loc="left") == (f"{name}: step {t.makespan * 1e3:.3g} ms, "
                                            f"bubble {t.mean_bubble_ratio:.1%}")
        bars = sorted((round(b.get_y() + b.get_height() / 2), b.get_x(), b.get_width()) for b in ax.patches)
        want = sorted((sp.rank, sp.start * 1e3, (sp.end - sp.start) * 1e3) for sp in t.spans)
        assert len(bars) == len(want) and bars == [pytest.approx(w) for w in want]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["rank 0", "rank 1", "rank 2", "rank 3"]


def test_measured_timeline_links_each_send_to_its_receive():
    res = _one_rank_parity("interleaved_1f1b")
    tl = measured_timeline(build("interleaved_1f1b", 1, 4), {0: res.records})
    assert tl.makespan == pytest.approx(res.records[-1].end)
    assert tl.transfers == []  # both stages on one rank: handed over locally, nothing on the wire


def test_simulate_cli_writes_traces_and_chart_and_rejects_bad_input(tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    from hpcbench.core.cli import main

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    out = tmp_path / "sim"
    assert main(["simulate", "--schedule", "1f1b,dualpipe", "--ranks", "4", "--microbatches", "16",
                 "--F", "1", "--B", "2", "--W", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dualpipe" in printed and "closed form" in printed
    for f in ("1f1b.json", "dualpipe.json"):
        assert json.loads((out / f).read_text())["traceEvents"]
    assert (out / "gantt.png").stat().st_size > 10_000
    # the chart draws what the traces hold: per schedule, a bar per compute event on its rank (ms; µs in the trace)
    (fig,) = figures
    for ax, name in zip(fig.axes, ("1f1b", "dualpipe"), strict=True):
        assert ax.get_title(loc="left").startswith(f"{name}: step ")
        events = json.loads((out / f"{name}.json").read_text())["traceEvents"]
        want = sorted((e["pid"], e["ts"] / 1e3, e["dur"] / 1e3) for e in events if e["ph"] == "X" and e["tid"] == 0)
        bars = sorted((round(b.get_y() + b.get_height() / 2), b.get_x(), b.get_width()) for b in ax.patches)
        assert len(bars) == len(want) > 0 and bars == [pytest.approx(w) for w in want]
    for bad, message in ((["--schedule", "nope"], "unknown pipeline schedule 'nope'"),
                         (["--schedule", "dualpipe", "--microbatches", "6"], ">= 2 x ranks = 8 (got 6)"),
                         (["--schedule", "1f1b", "--F", "-1"], "--F must be positive")):
        argv = ["simulate", "--ranks", "4", "--microbatches", "16", "--out", str(out), *bad]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    # without --out: beside the runs (results_root), never a folder of its own where it was started
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--schedule", "1f1b", "--ranks", "2", "--microbatches", "4"]) == 0
    assert main(["simulate", "--schedule", "zb1p", "--ranks", "2", "--microbatches", "4",
                 "--results-root", "elsewhere"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "results", "sim"]
    ((default,), (chosen,)) = ((tmp_path / "results").iterdir(), (tmp_path / "elsewhere").iterdir())
    assert default.name.startswith("simulate-") and (default / "1f1b.json").is_file()
    assert chosen.name.startswith("simulate-") and (chosen / "zb1p.json").is_file()


@pytest.fixture
def one_rank_world():
    """A real one-rank gloo process group in this process, for run() without launching ranks."""
    from hpcbench.runtime.device import resolve_device
    from hpcbench.runtime.distributed import World

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    device = resolve_device("cpu")
    yield World(0, 1, 0, 1, "gloo", device, dist.group.WORLD)
    dist.destroy_process_group()


def _run(cfg, world, tmp_path):
    from hpcbench.benchmarks import pipeline
    from hpcbench.core.runner import RunContext
    from hpcbench.measure.timing import TimingPolicy

    ctx = RunContext(device=world.device, run_id="t", timing=TimingPolicy(), world=world, run_dir=tmp_path)
    return list(pipeline.run(cfg, ctx))


def _rendered(renderable) -> str:
    from rich.console import Console

    console = Console(record=True, width=250)
    console.print(renderable)
    return console.export_text()


def _reference_loss(spec: ModelSpec, microbatches: int) -> float:
    """The whole model's loss on the whole batch in one process (the model does not depend on how it is cut)."""
    return float(reference(spec, build_chunks(spec, 1, torch.device("cpu")), microbatches, torch.device("cpu"))[0])


def test_benchmark_skips_what_a_shape_cannot_run_and_measures_the_rest(one_rank_world, tmp_path, monkeypatch):
    from pathlib import Path

    from matplotlib.figure import Figure

    from hpcbench.benchmarks import pipeline
    from hpcbench.core.testing import family_config

    figures, save = {}, Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, *a, **kw: (figures.setdefault(Path(path).name, fig),
                                                                       save(fig, path, *a, **kw))[1])

    cfg = family_config("pipeline", ["pipeline.schedules=[1f1b,dualpipev,dualpipe]", "pipeline.microbatches=4",
                                     "pipeline.layers=3", "pipeline.traces=true"])
    assert (cfg.width, cfg.steps, cfg.warmup_steps) == (16, 2, 0)  # the smoke size
    rows = {r["schedule"]: r for r in _run(cfg, one_rank_world, tmp_path)}
    assert rows["dualpipe"]["status"] == "skipped" and "even number of ranks" in rows["dualpipe"]["reason"]
    # 3 layers do not split into DualPipeV's 2 stages on one rank; 1F1B's single stage is fine
    assert rows["dualpipev"]["status"] == "skipped" and "layers could be 2, 4" in rows["dualpipev"]["reason"]
    ok = rows["1f1b"]
    assert ok["status"] == "ok" and ok["grad_max_rel_err"] < 1e-4 and ok["step_ms"] > 0
    want = _reference_loss(ModelSpec(width=16, layers=3, microbatch_size=4), 4)
    assert ok["reference_loss"] == pytest.approx(want, rel=1e-6) and ok["loss"] == pytest.approx(want, rel=1e-4)
    assert ok["peak_activations_per_rank"] == ok["predicted_peak_activations_per_rank"] == [1]
    assert ok["closed_form_bubble_ms"] == 0  # 1F1B's (PP-1)(F+B) at PP = 1
    assert ok["n_samples"] == 2 and len(ok["samples_s"]) == 2 and ok["median_s"] == pytest.approx(ok["step_ms"] / 1e3)
    assert ok["timing_method"] == "perf_counter" and ok["min_s"] <= ok["median_s"] <= ok["max_s"]
    text = _rendered(pipeline.table(list(rows.values()), fallback=True))
    assert "Pipeline schedules: 1 ranks (gloo), 4 microbatches of 4, mlp width 16, 3 layers" in text
    assert "CPU fallback" in text
    line = next(ln for ln in text.splitlines() if "1f1b" in ln)
    assert " ok " in line and f"{ok['step_ms']:.2f}" in line and f"{ok['bubble_ratio']:.1%}" in line
    assert "1 (1)" in line and f"{ok['grad_max_rel_err']:.1e}" in line
    assert any("dualpipe" in ln and "skipped: dualpipe: DualPipe needs an even number" in ln for ln in text.splitlines())
    assert (tmp_path / "traces" / "pipeline-1f1b-measured.json").exists()
    assert (tmp_path / "pipeline-gantt-measured.png").exists()
    # the charts draw the traces' compute spans, measured and simulated: a panel for the one measured schedule
    for kind in ("measured", "simulated"):
        (ax,) = figures[f"pipeline-gantt-{kind}.png"].axes
        assert ax.get_title(loc="left").startswith("1f1b: step ")
        events = json.loads((tmp_path / "traces" / f"pipeline-1f1b-{kind}.json").read_text())["traceEvents"]
        want = sorted((e["pid"], e["ts"] / 1e3, e["dur"] / 1e3) for e in events if e["ph"] == "X" and e["tid"] == 0)
        bars = sorted((round(b.get_y() + b.get_height() / 2), b.get_x(), b.get_width()) for b in ax.patches)
        assert len(bars) == len(want) == 2 * 4 and bars == [pytest.approx(w) for w in want]  # F and B of 4 microbatches


def test_table_prints_integers_read_back_as_floats_as_integers():
    """`hpcbench show` reads rows through pandas, where integer columns with gaps become floats."""
    from hpcbench.benchmarks import pipeline

    row = {"schedule": "1f1b", "status": "ok", "model": "mlp", "width": 64.0, "layers": 8.0, "world_size": 2.0,
           "backend": "gloo", "microbatches": 8.0, "microbatch_size": 4.0, "synthetic": False, "step_ms": 12.345,
           "samples_per_s": 2592.0, "bubble_ratio": 0.2, "predicted_bubble_ratio": 0.25,
           "closed_form_bubble_ms": float("nan"), "measured_idle_ms": 3.0, "peak_activations_per_rank": [2.0, 1.0],
           "predicted_peak_activations_per_rank": [2, 1], "blocked_ms_per_rank": [0.5, 1.5],
           "fb_overlap_efficiency": None, "grad_max_rel_err": 1e-7, "torch_runtime_step_ms": float("nan")}
    text = _rendered(pipeline.table([row], fallback=False))
    assert "Pipeline schedules: 2 ranks (gloo), 8 microbatches of 4, mlp width 64, 8 layers" in text
    assert ".0" not in text.splitlines()[0] and "nan" not in text and "CPU fallback" not in text
    assert "12.35" in text and "20.0%" in text and "25.0%" in text and " / 3.00" in text and "2 (2)" in text


def _synthetic_steps(schedule, costs: Costs, steps: int = 3) -> list[dict[int, StepResult]]:
    """Executor results as if every action took exactly its simulated time (no latency, no jitter):
    a rank's idle time before an action is time blocked on its input."""
    tl = simulate(schedule, costs)
    records: dict[int, list] = {r: [] for r in schedule.actions}
    for sp in sorted(tl.spans, key=lambda sp: sp.start):
        a, recs = sp.action, records[sp.rank]
        blocked = sp.start - (recs[-1].end if recs else 0.0)
        recs.append(ActionRecord(sp.rank, str(a), a.kind, a.stage if a.kind != "FB" else -1,
                                 a.mb if a.kind != "FB" else -1, sp.start, sp.end, blocked))
    return [{r: StepResult(recs, {}, 0, 0) for r, recs in records.items()} for _ in range(steps)]


@pytest.mark.parametrize("ranks,mbs", [(2, 8), (4, 16)])
def test_summary_of_fixed_duration_1f1b_steps_gives_the_closed_form_bubble(ranks, mbs):
    """1F1B with every stage's F = 6 ms and B = 12 ms: each rank idles (PP-1)(F+B), and the step
    lasts (microbatches + PP-1)(F+B)."""
    from types import SimpleNamespace

    from hpcbench.benchmarks.pipeline.common import Setup
    from hpcbench.benchmarks.pipeline.summary import summarise

    f, b = 0.006, 0.012
    schedule = build("1f1b", ranks, mbs)
    spec = ModelSpec(width=16, layers=ranks, microbatch_size=4)
    ctx = SimpleNamespace(device=SimpleNamespace(torch_device=torch.device("cpu")))
    setup = Setup(SimpleNamespace(overlap=True), ctx, spec, mbs, None, 0.0, True)
    row, _, _ = summarise(setup, "1f1b", schedule, _synthetic_steps(schedule, Costs(F=f, B=b)), None)
    idle_ms = (ranks - 1) * (f + b) * 1e3
    assert row["closed_form_bubble_ms"] == pytest.approx(idle_ms)
    assert row["measured_idle_ms"] == pytest.approx(idle_ms)
    assert row["step_ms"] == pytest.approx((mbs + ranks - 1) * (f + b) * 1e3)
    assert row["bubble_ratio"] == pytest.approx((ranks - 1) / (mbs + ranks - 1))
    assert row["predicted_bubble_ratio"] == pytest.approx(row["bubble_ratio"])
    assert row["replay_bubble_ratio"] == pytest.approx(row["bubble_ratio"])
    assert row["samples_per_s"] == pytest.approx(mbs * 4 / ((mbs + ranks - 1) * (f + b)))
    assert row["measured_costs_ms"]["0"] == pytest.approx({"F": 6.0, "B": 12.0})
    assert row["n_samples"] == 3 and row["timing_method"] == "perf_counter"
    assert row["predicted_peak_activations_per_rank"] == [ranks - r for r in range(ranks)]


def test_benchmark_rejects_unknown_schedules_and_models():
    from hpcbench.api.errors import UserError
    from hpcbench.core.testing import family_config

    with pytest.raises(UserError, match=r"^pipeline\.schedules\[0\]='foo' \(available: gpipe, 1f1b"):
        family_config("pipeline", ["pipeline.schedules=[foo]"])
    with pytest.raises(UserError, match=r"^pipeline\.model='cnn' \(available: mlp, transformer\)$"):
        family_config("pipeline", ["pipeline.model=cnn"])
    with pytest.raises(UserError, match="W_ms < B_ms"):
        family_config("pipeline", ["pipeline.synthetic.enabled=true", "pipeline.synthetic.W_ms=30"])
    with pytest.raises(UserError, match="pipeline.schedules is empty"):
        family_config("pipeline", ["pipeline.schedules=[]"])
    with pytest.raises(UserError, match=r"^pipeline\.steps=0: use a number >= 1$"):
        family_config("pipeline", ["pipeline.steps=0"])
    with pytest.raises(UserError, match=r"^pipeline\.batch_p2p='maybe' \(available: auto, true, false\)$"):
        family_config("pipeline", ["pipeline.batch_p2p=maybe"])


def test_yaml_defaults_fill_every_field():
    from hpcbench.core.testing import family_config

    cfg = family_config("pipeline", smoke=False)
    assert [str(s) for s in cfg.schedules] == list(SCHEDULES)
    assert (cfg.width, cfg.steps, cfg.model, cfg.synthetic.enabled, cfg.synthetic.B_ms) == (0, 5, "mlp", False, 20.0)
    assert (cfg.dtype, cfg.batch_p2p, cfg.rtol) == ("auto", "auto", 0)


def test_batch_p2p_takes_the_words_yaml_and_the_command_line_read_as_booleans():
    from hpcbench.benchmarks.pipeline.common import batch_p2p
    from hpcbench.core.testing import family_config

    # Hydra reads pipeline.batch_p2p=true as a boolean; the Choice takes it as the word
    assert family_config("pipeline", ["pipeline.batch_p2p=true"]).batch_p2p == "true"
    assert family_config("pipeline", ["pipeline.batch_p2p=false"]).batch_p2p == "false"
    assert [batch_p2p("auto", "nccl"), batch_p2p("auto", "gloo"), batch_p2p("true", "gloo"),
            batch_p2p("false", "nccl")] == [True, False, True, False]


def test_auto_sizes_make_cuda_actions_compute_bound_and_leave_the_cpu_ones_small():
    from hpcbench.benchmarks.pipeline.common import model_spec
    from hpcbench.core.testing import family_config

    cfg = family_config("pipeline", smoke=False)
    cuda, cpu = model_spec(cfg, 2, "cuda"), model_spec(cfg, 2, "cpu")
    assert (cuda.width, cuda.microbatch_size, cuda.dtype, cuda.layers) == (4096, 4096, "bfloat16", 8)
    assert (cpu.width, cpu.microbatch_size, cpu.dtype) == (64, 4, "float32")
    # a transformer's microbatch is 4096 tokens too: 256 samples of seq = 16
    assert model_spec(family_config("pipeline", ["pipeline.model=transformer"], smoke=False), 2, "cuda").microbatch_size == 256
    # explicit values win over auto
    spec = model_spec(family_config("pipeline", ["pipeline.dtype=float32", "pipeline.width=1024"], smoke=False), 2, "cuda")
    assert (spec.width, spec.dtype) == (1024, "float32")


def test_cuda_table_title_gives_the_per_action_compute_and_warns_when_dispatch_dominates():
    from hpcbench.benchmarks import pipeline

    def rows(f_ms: float) -> list[dict]:
        return [{"schedule": "1f1b", "status": "ok", "model": "mlp", "width": 4096, "layers": 8, "world_size": 2,
                 "backend": "nccl", "batch_p2p": True, "dtype": "bfloat16", "microbatches": 8,
                 "microbatch_size": 4096, "synthetic": False, "timing_method": "cuda_event",
                 "measured_costs_ms": {"0": {"F": f_ms, "B": 2 * f_ms}, "1": {"F": f_ms, "B": 2 * f_ms}},
                 "peak_activations_per_rank": [2, 1], "predicted_peak_activations_per_rank": [2, 1],
                 "blocked_ms_per_rank": [0.1, 0.2]}]

    text = _rendered(pipeline.table(rows(3.0), fallback=False))
    assert "Pipeline schedules: 2 ranks (nccl, batched p2p), 8 microbatches of 4096, mlp width 4096, 8 layers, bfloat16" in text
    assert "per-action compute ~ 4.5 ms" in text and "host dispatch dominates" not in text
    text = _rendered(pipeline.table(rows(0.02), fallback=False))
    assert "host dispatch dominates (shortest action 20 us < 50 us): bubble and overlap numbers are not the GPU's" in text


@pytest.mark.subprocess
@pytest.mark.world
def test_every_schedule_matches_the_reference_on_two_gloo_ranks(cli, tmp_path):
    out = cli("benchmark=pipeline", "pipeline.model=transformer", "pipeline.width=16", "pipeline.seq=8",
              "pipeline.steps=1", "pipeline.warmup_steps=0")
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    df = load_run(run_dir)
    assert sorted(df.schedule) == sorted(SCHEDULES) and (df.status == "ok").all(), df[["schedule", "reason"]]
    assert (df.grad_max_rel_err < 1e-4).all() and (df.world_size == 2).all()
    # 8 layers (4 x ranks) of transformer blocks, 8 microbatches (4 x ranks) of 4 samples
    want = _reference_loss(ModelSpec(kind="transformer", width=16, layers=8, seq=8, microbatch_size=4), 8)
    assert df.reference_loss.to_numpy() == pytest.approx([want] * len(df), rel=1e-6)
    assert df.loss.to_numpy() == pytest.approx([want] * len(df), rel=1e-4)
    assert "Pipeline schedules: 2 ranks (gloo)" in out.stdout
    on_torch = df[df.schedule != "dualpipe"]  # torch's runtime runs the schedules torch ships
    assert (on_torch.torch_runtime_grad_max_rel_err < 1e-4).all() and (on_torch.torch_runtime_step_ms > 0).all()
    assert df[df.schedule == "dualpipe"].torch_runtime_step_ms.isna().all()
    for name in SCHEDULES:
        trace = json.loads((run_dir / "traces" / f"pipeline-{name}-measured.json").read_text())
        assert any(e["ph"] == "s" for e in trace["traceEvents"])  # sends between the two ranks


@pytest.mark.subprocess
@pytest.mark.world
def test_synthetic_stages_on_four_ranks_agree_with_the_simulator(cli, tmp_path):
    # every schedule at 4 ranks (gradient parity included), 16 microbatches of fixed-duration stages
    out = cli("benchmark=pipeline", "dist.nproc=4", "pipeline.microbatches=16", "pipeline.width=16",
              "pipeline.synthetic.enabled=true", "pipeline.synthetic.F_ms=6", "pipeline.synthetic.B_ms=12",
              "pipeline.synthetic.W_ms=6", "pipeline.steps=2", "pipeline.warmup_steps=0", "pipeline.traces=false",
              timeout=400)
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    df = load_run(run_dir).set_index("schedule")
    assert (df.status == "ok").all() and (df.world_size == 4).all() and (df.grad_max_rel_err < 1e-4).all()
    # 1F1B on 4 ranks, F = 6 ms and B = 12 ms per stage: each rank idles (PP-1)(F+B) = 54 ms of a
    # (16 + PP-1)(F+B) step. The closed form is fed the measured mean F and B, which a loaded
    # machine stretches (a sleep never ends early, often late: 6.5-7.6 ms for F with both cores busy)
    assert df.loc["1f1b", "configured_bubble_ratio"] == pytest.approx(3 / 19)
    costs = df.loc["1f1b", "measured_costs_ms"].values()
    f, b = (sum(c[k] for c in costs) / len(costs) for k in ("F", "B"))
    assert 6 <= f < 12 and 12 <= b < 24, (f, b)
    assert df.loc["1f1b", "closed_form_bubble_ms"] == pytest.approx(3 * (f + b), rel=1e-9)
    for name in ("1f1b", "dualpipev"):
        row = df.loc[name]
        seen = (name, row.bubble_ratio, row.replay_bubble_ratio, row.predicted_bubble_ratio)
        # The simulator replaying each measured step -- every action with its own measured duration,
        # the mean hop latency and dispatch gap seen in the schedule -- absorbs what a loaded machine
        # does to the actions themselves (late wake-ups from the synthetic sleeps, slower
        # bookkeeping). What is left: the dependency model, plus how unevenly the hops and the
        # ranks' exits from the pre-step barrier fall. That measured <= 3.8 points (1F1B) and
        # <= 2.5 (DualPipeV) over 4 runs on 2 cores with both kept busy by spin loops (where the
        # mean-cost prediction was off by up to 7.6 points), < 1 point when idle. A dependency the
        # executor got wrong costs whole actions (F = 6 ms, B = 12 ms, >= 1.3 points of the step
        # per rank each time, and it recurs every microbatch), far beyond 6 points.
        assert abs(row.bubble_ratio - row.replay_bubble_ratio) < 0.06, seen
        # The mean-cost prediction may differ from it further only by what the spread of the
        # measured action durations moves the simulated bubble (replay - prediction): the run's own jitter.
        assert abs(row.bubble_ratio - row.predicted_bubble_ratio) < 0.06 + abs(
            row.replay_bubble_ratio - row.predicted_bubble_ratio), seen
        assert row.bubble_ratio >= row.configured_bubble_ratio - 0.02, seen  # overheads only add idle time
        # the benchmark's own target is 3 points against the prediction (scripts/pipeline_targets.py:
        # longer stages, more steps, a quiet machine)
    assert df.loc["dualpipev", "fb_overlap_efficiency"] > 0.5  # pairs ran concurrently


@pytest.mark.subprocess
@pytest.mark.world
def test_a_hung_rank_stops_the_pipeline_naming_rank_and_action(cli, tmp_path):
    t0 = time.monotonic()
    # 10 s: building the schedule imports torch's pipelining package (no progress mark inside),
    # which takes seconds on a loaded 2-core machine with both ranks importing at once
    out = cli("benchmark=pipeline", "pipeline.schedules=[1f1b]", "pipeline.width=16", "dist.timeout_s=10",
              env={"HPCBENCH_INJECT_FAULT": "hang:1:1F2"}, timeout=120)
    assert out.returncode == 1, out.stderr
    assert time.monotonic() - t0 < 60
    assert "Traceback" not in out.stderr
    assert "no progress for 10 s" in out.stderr and "rank 1: starting 1F2" in out.stderr
    assert "from rank 1" in out.stderr  # rank 0 waiting on what rank 1 never sent
    from hpcbench.results.reader import read_jsonl, read_metadata

    (run,) = (tmp_path / "results").iterdir()
    meta, rows = read_metadata(run), read_jsonl(run / "rows.jsonl", [])
    assert meta["status"] == "error" and "no progress for 10 s" in meta["error"]
    # rank 0 records the hang with the counts of what it stored, as any other end of a run
    assert meta["points"] == {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}


def _rendezvous_run(schedule) -> list[str]:
    """Runs the batched plan under the strictest rules a backend may apply (NCCL's, executed on
    the host): a rank stops at each group until it is complete, and a group completes only when
    the groups holding the other ends of its messages (and theirs, transitively) are all being
    waited on at once. Returns the ranks stuck at the end, with where: empty when it finishes."""
    from hpcbench.pipeline.p2p import BatchPlan

    plans = {r: BatchPlan.of(schedule, r, batched=True) for r in schedule.actions}
    items: dict[int, list] = {r: [] for r in plans}  # ("group", ops) | ("action", action)
    where: dict[tuple[int, tuple], int] = {}  # (rank, key) -> index of the rank's item holding it
    for r, plan in plans.items():
        actions = schedule.actions[r]
        for k in range(len(actions) + 1):
            for _, ops in plan.groups.get(k, ()):
                where.update({(r, op[1]): len(items[r]) for op in ops})
                items[r].append(("group", ops))
            if k < len(actions):
                items[r].append(("action", actions[k]))
    pos, received = dict.fromkeys(plans, 0), {r: set() for r in plans}

    def component(r: int) -> set[tuple[int, int]] | None:
        """The groups that must be waited on together with rank r's current one; None if one is not yet."""
        todo, seen = [(r, pos[r])], set()
        while todo:
            rank, i = todo.pop()
            if (rank, i) in seen:
                continue
            if pos[rank] != i:
                return None
            seen.add((rank, i))
            todo += [(op[2], where[(op[2], op[1])]) for op in items[rank][i][1]]
        return seen

    moved = True
    while moved:
        moved = False
        for r, plan in plans.items():
            while pos[r] < len(items[r]):
                kind, what = items[r][pos[r]]
                if kind == "action":
                    needed = {input_key(schedule, a) for a in what.parts()} & plan.source.keys()
                    if not needed <= received[r]:
                        break
                    pos[r] += 1
                else:
                    together = component(r)
                    if together is None:
                        break
                    for rank, i in together:
                        received[rank] |= {op[1] for op in items[rank][i][1] if op[0] == "recv"}
                        pos[rank] += 1
                moved = True
    return [f"rank {r} at {items[r][pos[r]]}" for r in plans if pos[r] < len(items[r])]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("ranks,mbs", SHAPES)
def test_batched_point_to_point_plan_cannot_deadlock_even_under_nccls_rules(name, ranks, mbs):
    if requirement(name, ranks, mbs):
        pytest.skip(requirement(name, ranks, mbs))
    from hpcbench.pipeline.p2p import BatchPlan

    schedule = build(name, ranks, mbs)
    assert _rendezvous_run(schedule) == []
    for r in schedule.actions:  # each rank posts its groups in tau order, one group per tau
        groups = BatchPlan.of(schedule, r, batched=True).groups
        taus = [tau for k in sorted(groups) for tau, _ in groups[k]]
        assert taus == sorted(taus) and len(set(taus)) == len(taus)


# ---- point-to-point: the batched path, and a backend that coalesces the batch into one Work ------

class _CoalescedWork:
    """What NCCL returns from batch_isend_irecv: one Work for the whole batch, complete when every
    op of the batch is."""

    def __init__(self, works):
        self.works, self.done = works, False

    def wait(self, timeout=None):
        if not self.done:  # a second wait on a gloo recv Work would wait for another message
            self.done = all(w.wait() for w in self.works)
        return True

    def is_completed(self):
        return self.done or all(w.is_completed() for w in self.works)


def _nccl_like(real):
    """batch_isend_irecv as on NCCL: ONE Work for the whole batch, and (stricter than gloo) a
    batch starts only once the rank's previous one is complete, as on NCCL's one stream."""
    last = []

    def batch_isend_irecv(ops):
        if last:
            last.pop().wait()
        last.append(_CoalescedWork(real(ops)))
        return [last[-1]]

    return batch_isend_irecv


def _p2p_rank(rank: int, world_size: int, init_file: str, out_dir: str, mbs: int) -> None:
    """One gloo rank: every schedule one step with unbatched, batched and coalesced-batched
    point-to-point (same model, same batch); losses and gradients saved per mode."""
    from datetime import timedelta

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    real = dist.batch_isend_irecv
    device = torch.device("cpu")
    spec = ModelSpec(width=16, layers=4 * world_size)
    xs, ys = batch(spec, mbs, device)
    out = {}
    try:
        for mode in ("unbatched", "batched", "coalesced"):
            dist.batch_isend_irecv = _nccl_like(real) if mode == "coalesced" else real
            for name in SCHEDULES:
                schedule = build(name, world_size, mbs)
                ex = Executor(schedule, spec, build_chunks(spec, model_chunks(schedule), device), rank, device,
                              use_batch_p2p=mode != "unbatched")
                try:
                    res = ex.step(xs, ys)  # an exception ends this rank; the parent then stops the other
                finally:
                    ex.overlap.close()
                out[(mode, name)] = (res.losses, ex.grads_by_chunk())
                dist.barrier()
    finally:
        dist.batch_isend_irecv = real
    torch.save(out, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def _check_p2p_modes(tmp_path, world_size: int, mbs: int) -> None:
    """Runs `_p2p_rank` on `world_size` gloo ranks; every mode passes the parity check and gives
    the unbatched path's numbers."""
    import torch.multiprocessing as mp

    mp.start_processes(_p2p_rank, args=(world_size, str(tmp_path / "init"), str(tmp_path), mbs), nprocs=world_size,
                       start_method="spawn")
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]
    spec = ModelSpec(width=16, layers=4 * world_size)
    for name in SCHEDULES:
        chunks = build_chunks(spec, model_chunks(build(name, world_size, mbs)), torch.device("cpu"))
        ref_loss, ref_grads = reference(spec, chunks, mbs, torch.device("cpu"))
        combined = {}
        for mode in ("unbatched", "batched", "coalesced"):
            losses, grads = {}, {}
            for got in per_rank:
                ls, gs = got[(mode, name)]
                losses.update(ls)
                for c, g in gs.items():
                    grads[c] = [a + b for a, b in zip(grads[c], g)] if c in grads else g
            assert sorted(losses) == list(range(mbs)), (mode, name)
            assert sum(losses.values()) == pytest.approx(float(ref_loss), rel=1e-5), (mode, name)
            for c, ref in enumerate(ref_grads):  # the parity check
                for g, r in zip(grads[c], ref):
                    torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6, msg=f"{mode} {name} chunk {c}")
            combined[mode] = (losses, grads)
        # the same computation, whatever carried the messages: the same numbers, bit for bit
        for mode in ("batched", "coalesced"):
            assert combined[mode][0] == combined["unbatched"][0], (mode, name)
            for c, gs in combined["unbatched"][1].items():
                assert all(torch.equal(a, b) for a, b in zip(combined[mode][1][c], gs)), (mode, name, c)


@pytest.mark.world
def test_batched_and_coalesced_point_to_point_match_the_unbatched_path_on_two_gloo_ranks(tmp_path):
    """NCCL returns one Work for a whole batch_isend_irecv, gloo one per op. Pairing Works with
    ops one to one raised KeyError ('b', 0, 0) on NCCL's shape at the first step; waiting on a
    whole batch (its sends too) before the receives it holds deadlocked interleaved 1F1B until
    the batches were ordered alike on every rank (p2p.BatchPlan)."""
    _check_p2p_modes(tmp_path, 2, 8)


def test_report_plot_bars_are_each_runs_bubble_ratio_and_idle_time_beside_their_models(tmp_path, monkeypatch):
    import math

    import pandas as pd
    from matplotlib.figure import Figure

    from hpcbench.benchmarks.pipeline.report import pipeline_bubble

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    closed = {"gpipe": 3.0, "1f1b": 2.5, "zbv": None, "dualpipev": 1.0}  # zbv: no closed form
    rows = [{"run": run, "schedule": s, "microbatches": 8, "world_size": 4, "bubble_ratio": 0.3 - 0.05 * i + 0.01 * r,
             "predicted_bubble_ratio": 0.28 - 0.05 * i, "measured_idle_ms": 3.0 - 0.5 * i + r,
             "closed_form_bubble_ms": c}
            for r, run in enumerate(("run-a", "run-b")) for i, (s, c) in enumerate(closed.items())]
    df = pd.DataFrame(rows)
    p = pipeline_bubble(df, tmp_path)
    (fig,) = figures
    ax_ratio, ax_ms = fig.axes
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(closed)
    assert ax_ratio.get_ylabel() == "bubble ratio (%)" and ax_ms.get_ylabel() == "idle time per step (ms, worst rank)"

    def tops(container):
        return {round(b.get_x() + b.get_width() / 2): b.get_y() + b.get_height() for b in container.patches}

    panels = ((ax_ratio, "bubble_ratio", "predicted_bubble_ratio", "simulator", 100),
              (ax_ms, "measured_idle_ms", "closed_form_bubble_ms", "closed form", 1))
    for ax, measured, model, model_name, scale in panels:
        bars = {c.get_label(): tops(c) for c in ax.containers}
        want = {}
        for run, d in df.groupby("run"):
            want[f"{run} · measured"] = {i: v * scale for i, v in enumerate(d[measured])}
            want[f"{run} · {model_name}"] = {i: v * scale for i, v in enumerate(d[model]) if not math.isnan(v)}
        assert bars.keys() == want.keys()
        for label in want:
            assert bars[label] == pytest.approx(want[label]), label
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(want)
    assert 2 not in tops(ax_ms.containers[1])  # no closed form for zbv: no bar, not a zero one
    assert len(p.series) == 2 * 4
