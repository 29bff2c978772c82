"""The what-if family: FLOP conventions against published figures, the validation anchors,
infeasible layouts, measured inputs feeding the model end to end, and the CLI's exits."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hpcbench.benchmarks.whatif import Config, Scenario, evaluate, run, specs
from hpcbench.benchmarks.whatif.anchors import TOLERANCE, validation_table
from hpcbench.benchmarks.whatif.costs import LayerCoster, split_layers
from hpcbench.benchmarks.whatif.flops import FULL, CAUSAL, activated_params, meg21_per_sequence, model_flops_per_token
from hpcbench.benchmarks.whatif.rates import Rates
from hpcbench.api.errors import UserError


def _spec(kind: str, name: str, **over):
    return replace(specs.load(kind, name), **over)


def _scenario(model="deepseek_v3", cluster="h800", parallel="deepseek_v3", m=None, c=None, p=None) -> Scenario:
    return Scenario(_spec("model", model, **(m or {})), _spec("cluster", cluster, **(c or {})),
                    _spec("parallel", parallel, **(p or {})))


# ---- FLOP conventions -------------------------------------------------------------------------

def test_deepseek_flops_match_isca_table_2_and_table_4():
    v3 = specs.load("model", "deepseek_v3")
    causal, full = (model_flops_per_token(v3, 4096, conv) for conv in (CAUSAL, FULL))
    assert round(causal / 1e9) == 250  # ISCA Table 2, MTP excluded
    tokens_per_s_gpu = 272.80e9 / 86400 / 2048  # ISCA Table 4: tokens/day on 2,048 GPUs
    assert round(tokens_per_s_gpu * causal / 1e12) == 385  # published TFLOPS (causal)
    assert round(tokens_per_s_gpu * full / 1e12) == 432  # published TFLOPS (non-causal)
    assert round(tokens_per_s_gpu * full / 989.4e12, 3) == 0.437  # 43.73 % MFU against the BF16 peak
    assert model_flops_per_token(v3, 4096, CAUSAL, mtp=True) > causal + 9e9  # MTP adds a layer and a head
    # 37B activated parameters (V3 sec. 1) = the GEMM weights a token meets + the 0.93B embedding
    assert 36.5e9 < activated_params(v3) + 129280 * 7168 < 38e9


def test_meg21_equation_3_and_training_time():
    for name in [n for n in specs.names("model") if n.startswith("meg21_")]:
        m = specs.load("model", name)
        general = model_flops_per_token(m, 2048, FULL, recompute=True) * 2048
        assert general == pytest.approx(meg21_per_sequence(2048, m.layers, m.hidden, m.vocab), rel=1e-12)
    # MEG21 sec. 5.1: GPT-3 175B on 300B tokens, 1,024 GPUs at 140 TFLOP/s: "34 days"
    gpt3 = replace(specs.load("model", "gpt3_175b"), vocab=51200)
    days = 300e9 * model_flops_per_token(gpt3, 2048, FULL, recompute=True) / (1024 * 140e12) / 86400
    assert 34 <= days < 35


@pytest.mark.parametrize(("model", "seq", "tokens_per_s", "published"),
                         [("gpt3_175b", 2048, 825, 888), ("llama3_70b", 8192, 1524, 734),
                          ("llama3_8b", 8192, 12273, 711)])
def test_nemo_model_tflops_are_full_attention_without_recompute(model, seq, tokens_per_s, published):
    m = specs.load("model", model)
    assert round(tokens_per_s * model_flops_per_token(m, seq, FULL) / 1e12) == published


# ---- pieces with hand-computed answers --------------------------------------------------------

def test_split_layers_balances_the_head():
    # 61 equal layers over 16 chunks, the last also carrying 3.8 layers' worth of head + MTP
    assert split_layers([1.0] * 61, 16, 0.0, 3.8) == [4] * 15 + [1]
    assert split_layers([1.0] * 8, 4, 0.0, 0.0) == [2, 2, 2, 2]


def test_node_limited_all_to_all():
    s = _scenario()
    coster = LayerCoster(s.model, s.cluster, s.parallel, Rates(s.cluster))
    forward, backward = coster._a2a_s()
    # EP64 = 8 nodes, a token's 8 experts on <= 4 nodes: 4 (1 - 0.75^8) = 3.5995 nodes reached,
    # 7/8 of them remote = 3.1496 IB crossings of 4,096 tokens; FP8 dispatch rows 7,392 B, BF16
    # combine 14,336 B, at 50 GB/s (network-bound), plus 3.7 us latency each
    assert forward == pytest.approx(4096 * 3.14956 * (7392 + 14336) / 50e9 + 2 * 3.7e-6, rel=1e-4)
    assert backward == pytest.approx(2 * (4096 * 3.14956 * 14336 / 50e9 + 3.7e-6), rel=1e-4)
    assert coster.a2a_link == "network"


# ---- validation -------------------------------------------------------------------------------

def test_validation_anchors_within_tolerance(capsys):
    rows = validation_table()
    with capsys.disabled():
        print("\nanchor | published | predicted | error")
        for r in rows:
            print(f"{r['anchor']} | {r['published']:.2f} | {r['predicted']:.2f} | {r['error']:+.1%}")
    for r in rows:
        if r["group"] in TOLERANCE:
            assert abs(r["error"]) <= TOLERANCE[r["group"]], r
    phases = [r for r in rows if r["group"] == "phase"]
    assert len(phases) == 6 and all(r["predicted"] > 0 for r in phases)


def test_deepseek_row_reports_every_part():
    row = evaluate(_scenario(), Rates(specs.load("cluster", "h800")))
    assert row["status"] == "ok" and row["verdict"] == "fits"
    parts = sum(row[k] for k in ("phase_1f_s", "phase_bubble_s", "phase_1b_s", "phase_1w_s", "phase_fnb_s"))
    assert parts == pytest.approx(row["pipeline_s"], rel=1e-9)  # the phases tile the pipeline's span
    assert row["step_s"] == pytest.approx(row["pipeline_s"] + row["optimizer_phase_s"])
    assert row["exposed_a2a_network_s"] > 0 and row["a2a_bound_by"] == "network"
    assert "gemm_fp8" in row["assumed"] and not row["measured"]
    assert sum(row["stage_layers"]) == 61


def test_memory_over_the_gpu_is_an_infeasible_verdict():
    row = evaluate(_scenario(c={"hbm_GB": 40.0}), Rates(specs.load("cluster", "h800")))
    assert row["status"] == "ok" and not row["memory_fits"]
    assert row["verdict"].startswith("infeasible: needs") and "> 40 GB" in row["verdict"]


@pytest.mark.parametrize(("over", "words"), [
    ({"dp": 100}, "not the 2048 GPUs"),
    ({"layer_split": specs.LayerSplit("even")}, "do not divide the 61 layers"),
    ({"ep": 48}, "does not divide the 256 experts"),
    ({"global_batch": 3840}, "DualPipe needs an even number of microbatches >= 2 x ranks = 32"),
])
def test_layouts_that_cannot_run_are_skipped_rows(over, words):
    row = evaluate(_scenario(p=over), Rates(specs.load("cluster", "h800")))
    assert row["status"] == "skipped" and words in row["reason"]


def test_unknown_names_and_values():
    with pytest.raises(UserError, match=r"no such model \(available: deepseek_v3, gpt3_175b"):
        specs.load("model", "gpt5")
    with pytest.raises(UserError, match=r"whatif.parallel.schedule='2f2b' \(available: gpipe, 1f1b"):
        specs.load("parallel", {**specs._read("parallel", "deepseek_v3"), "schedule": "2f2b"})
    with pytest.raises(UserError, match="unknown key"):
        specs.load("cluster", {**specs._read("cluster", "h800"), "nvlink": 1})


# ---- the CLI -----------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_cli_single_infeasible_run_exits_2_and_sweep_records_it(cli, tmp_path):
    single = cli("benchmark=whatif", "whatif.parallel.pp=7")
    assert single.returncode == 2
    assert single.stderr.strip().splitlines()[-1] == (
        "hpcbench: error: whatif: infeasible: tp x pp x cp = 7 does not divide the 2048 GPUs")
    sweep = cli("-m", "benchmark=whatif", "whatif.parallel.pp=7,16", env={"HPCBENCH_RUN_ID": "sweep"})
    assert sweep.returncode == 0, sweep.stderr
    rows = [json.loads(line) for job in ("0", "1")
            for line in (tmp_path / "results" / "sweep" / job / "rows.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["skipped", "ok"] and "7 does not divide" in rows[0]["reason"]
    unknown = cli("benchmark=whatif", "whatif.cluster=b300")
    assert unknown.returncode == 2 and "no such cluster (available: a100, h100, h200, h800)" in unknown.stderr


@pytest.mark.subprocess
def test_costs_from_measured_runs_end_to_end(cli, tmp_path):
    """A tiny GEMM run and a collectives run made here through the CLI feed a what-if run."""
    gemm = cli("benchmark=gemm", "gemm.shapes=custom", "gemm.custom=[[64,64,64],[128,128,128]]",
               "gemm.dtypes=[bf16]", "gemm.backends=[torch]", env={"HPCBENCH_RUN_ID": "gemm"})
    assert gemm.returncode == 0, gemm.stderr
    coll = cli("benchmark=collectives", "collectives.collectives=[all_reduce,reduce_scatter,all_gather]",
               "collectives.min_bytes=1K", "collectives.max_bytes=4M", "collectives.iters=3",
               "collectives.warmup_iters=1", "dist.nproc=2", env={"HPCBENCH_RUN_ID": "coll"})
    assert coll.returncode == 0, coll.stderr  # up to 4 MiB: an idle gloo sweep below that can be latency-bound only (no fit)
    runs = [str(tmp_path / "results" / "gemm"), str(tmp_path / "results" / "coll")]
    layout = {**specs._read("parallel", "meg21_1_7b"), "gpus": 8, "tp": 2, "global_batch": 16}
    cfg = Config(model="meg21_1_7b", cluster="a100", parallel=layout, costs_from=runs, allow_other_device=False)
    ctx = type("Ctx", (), {"set_total": lambda self, n: None, "device": type("D", (), {"fallback": True})()})()
    with pytest.raises(UserError, match="was measured on .* not a A100"):
        list(run(cfg, ctx))
    row, = run(replace(cfg, allow_other_device=True), ctx)
    assert row["status"] == "ok", row.get("reason")
    assert "gemm_bf16 (gemm)" in row["measured"] and "tp_collective (coll)" in row["measured"]
    assert "dp_collective" in row["measured"] and "gemm_bf16" not in row["assumed"]
    assert "attention" in row["assumed"] and row["fallback"] is True
    published = evaluate(_scenario("meg21_1_7b", "a100", "meg21_1_7b", p={"gpus": 8, "tp": 2, "global_batch": 16}),
                         Rates(specs.load("cluster", "a100")))
    assert row["step_s"] > published["step_s"]  # CPU GEMMs are far slower than an A100's


# ---- the report plots ----------------------------------------------------------------------------

def test_report_plots_stack_each_configurations_phases_and_draw_the_step_over_bandwidth(tmp_path, monkeypatch):
    import pandas as pd
    from matplotlib.figure import Figure

    from hpcbench.benchmarks.whatif.report import bandwidth_sweep, step_breakdown

    # the step's phases bottom to top, as the legend must name them (DeepSeek's breakdown, then the optimizer)
    PHASES = {"phase_1f_s": "1F (warm-up forwards)", "phase_bubble_s": "bubble", "phase_1b_s": "1B (backwards alone)",
              "phase_1w_s": "1W (weight gradients alone)", "phase_fnb_s": "F&B (overlapped pairs)",
              "optimizer_phase_s": "optimizer (exposed DP + Adam)"}

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    points = [("dualpipe", 400), ("dualpipe", 200), ("1f1b", 400), ("1f1b", 200)]  # bandwidth not in order
    rows = []
    for r, (run, named) in enumerate((("sweep", lambda j: f"sweep/{j}"), ("base", lambda j: "base"))):
        for j, (schedule, nvlink) in enumerate(points):
            phases = {col: 1.0 + i + 10 * j + 100 * r for i, col in enumerate(PHASES)}
            phases["phase_1w_s"] = None if schedule == "1f1b" else phases["phase_1w_s"]  # no W phase: nothing stacked
            rows.append({"run": named(j), "model": "deepseek_v3", "cluster": "h800", "schedule": schedule,
                         "nvlink_GBps": nvlink, "step_s": 50.0 + j + 1000 / nvlink + 7 * r, **phases})
    df = pd.DataFrame(rows)
    p = step_breakdown(df, tmp_path)
    (fig,) = figures
    (ax,) = fig.axes
    groups = [f"schedule={s} nvlink_GBps={n}" for s, n in points]
    assert [t.get_text() for t in ax.get_xticklabels()] == groups
    # a Hydra sweep's jobs (sweep/0 ... sweep/3) are one series, "sweep"
    assert p.series == [f"{run} · {name}" for run in ("sweep", "base") for name in PHASES.values()]
    stacks = {}
    for label, bars in zip(p.series, ax.containers):
        for b in bars.patches:
            stacks[label, round(b.get_x() + b.get_width() / 2)] = (b.get_y(), b.get_height())
    for r, run in enumerate(("sweep", "base")):
        for j in range(len(points)):
            row = rows[4 * r + j]
            bottom = 0.0
            for col, name in PHASES.items():
                value = row[col] or 0.0
                assert stacks[f"{run} · {name}", j] == pytest.approx((bottom, value)), (run, j, name)
                bottom += value
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(PHASES.values())

    figures.clear()
    p = bandwidth_sweep(df, tmp_path)
    (fig,) = figures
    (ax,) = fig.axes
    assert ax.get_xlabel() == "nvlink GB/s per GPU" and ax.get_ylabel() == "predicted step (s)"
    drawn = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()}
    want = {}
    for r, run in enumerate(("sweep", "base")):
        for schedule, offset in (("dualpipe", 0), ("1f1b", 2)):  # jobs 0, 1 and 2, 3: 400 then 200 GB/s
            want[f"{run} · {schedule}"] = [[200.0, 50.0 + offset + 1 + 5.0 + 7 * r],
                                           [400.0, 50.0 + offset + 2.5 + 7 * r]]
    assert drawn == want and p.series == list(want)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(want)
