"""The node fingerprint: its suite end to end on 2 gloo ranks through the CLI (one run shared by the
assertions), `show` and `compare` of it, the verdict logic against a fake anchor, and how a line
says why it has no value."""

import json
import shutil
import types

import pytest
from conftest import run_cli

from hpcbench.benchmarks.fingerprint import lines as L
from hpcbench.benchmarks.fingerprint.verdict import (
    ABOVE,
    BELOW,
    FAILED,
    NO_ANCHOR,
    OK,
    SKIPPED,
    judge,
    verdict,
)
from hpcbench.api.errors import UserError
from hpcbench.results import load_run

METRICS = {m.name for m in L.METRICS}

# the fingerprint's suite at smoke sizes (every family's own smoke overrides), the GEMM line's shape among gemm's
SMALL = ["benchmark=fingerprint", "gemm.shapes=custom", "gemm.custom=[[48,40,160]]",
         "fingerprint.gemm_shape.cpu=[48,40,160]",
         "collectives.collectives=[all_reduce,all_to_all]", "collectives.min_bytes=64", "collectives.max_bytes=4K",
         "collectives.step_factor=64", "collectives.iters=3",
         "overlap.comm_sizes=[16K,64K]", "overlap.gemm_mnk=[128,128,128]", "overlap.iters=3", "overlap.warmup_iters=1",
         "pipeline.width=16", "pipeline.steps=2", "pipeline.warmup_steps=0",
         "moe_alltoall.tokens_per_rank=[32]", "moe_alltoall.hidden=[128]", "moe_alltoall.iters=3",
         "fingerprint.copy_bytes.cpu=1M", "fingerprint.all_reduce_bytes.cpu=256K", "fingerprint.iters=4",
         "dist.nproc=2"]
COPY_BYTES, REDUCE_BYTES = 1 << 20, 256 << 10


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One fingerprint run, shared by the end-to-end assertions."""
    where = tmp_path_factory.mktemp("fingerprint")
    out = run_cli(*SMALL, cwd=where, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = (where / "results").iterdir()
    df = load_run(run_dir)
    return types.SimpleNamespace(dir=run_dir, df=df, stdout=out.stdout, where=where,
                                 lines={r["metric"]: r for r in df[df.benchmark == "fingerprint"].to_dict("records")},
                                 rows=lambda name: df[df.benchmark == name].to_dict("records"))


@pytest.mark.subprocess
@pytest.mark.world
def test_suite_runs_every_family_then_the_summary(run):
    assert run.df.attrs["metadata"]["suite"] == ["gemm", "collectives", "overlap", "pipeline", "moe_alltoall",
                                                 "fingerprint"]
    assert list(run.df.benchmark.drop_duplicates()) == run.df.attrs["metadata"]["suite"]
    assert set(run.lines) == METRICS and len(run.lines) == 9
    # the summary table is the last thing printed
    assert run.stdout.rstrip().splitlines()[-1].startswith("└")
    assert run.stdout.rindex("Node fingerprint") > run.stdout.rindex("MoE dispatch / combine")


@pytest.mark.subprocess
@pytest.mark.world
def test_every_line_has_a_value_or_a_reason_and_no_anchor_on_the_cpu(run):
    for metric, r in run.lines.items():
        if r["status"] == "ok":
            assert r["value"] == r["value"] and r["value"] is not None, metric  # not NaN
        else:
            assert r["reason"], metric
        assert r["verdict"] == (NO_ANCHOR if r["status"] == "ok" else r["status"]), metric
        assert r["fallback"] and r["world_size"] == 2
    # every family ran on 2 ranks: nothing is skipped
    assert {m for m, r in run.lines.items() if r["status"] != "ok"} == set()


@pytest.mark.subprocess
@pytest.mark.world
def test_hbm_copy_is_checked_and_counts_read_plus_write(run):
    r = run.lines["hbm_copy_GBps"]
    assert r["wrong"] == 0 and "bitwise" in r["check"]
    assert r["copy_bytes"] == COPY_BYTES and r["bytes_moved"] == 2 * COPY_BYTES == 2_097_152
    assert r["value"] == pytest.approx(2_097_152 / r["median_s"] / 1e9)
    assert len(r["per_rank_GBps"]) == 2 and r["value"] == min(r["per_rank_GBps"])  # the slowest device
    assert r["slowest_rank"] == r["per_rank_GBps"].index(min(r["per_rank_GBps"]))
    assert len(r["samples_s"]) == r["n_samples"] >= 3 and r["timing_method"] == "perf_counter"


@pytest.mark.subprocess
@pytest.mark.world
def test_all_reduce_line_is_the_busbw_of_an_exact_point(run):
    r = run.lines["all_reduce_busbw_GBps"]
    assert r["wrong"] == 0 and r["anchor_config"]["bytes"] == REDUCE_BYTES and r["n_samples"] == 4
    # 2 ranks: busbw = algbw x 2(2-1)/2 = algbw; nccl-tests' time is the rank-averaged median
    assert r["value"] == pytest.approx(r["algbw_GBps"])
    assert r["algbw_GBps"] == pytest.approx(REDUCE_BYTES / (r["time_us"] * 1e-6) / 1e9)
    assert r["anchor_config"] == {"ranks": 2, "bytes": REDUCE_BYTES, "nccl_algo": "default", "placement": "in_place",
                                  "dtype": "float32"}


@pytest.mark.subprocess
@pytest.mark.world
def test_lines_are_read_from_the_other_families_rows(run):
    gemm = [g for g in run.rows("gemm") if (g["M"], g["N"], g["K"]) == (48, 40, 160) and g["status"] == "ok"]
    for dtype in ("bf16", "fp8"):
        best = max((g for g in gemm if g["dtype"] == dtype), key=lambda g: g["tflops"])
        line = run.lines[f"matmul_{dtype}_tflops"]
        assert line["value"] == best["tflops"] and best["kernel"] in line["source"]
        assert line["samples_s"] == best["samples_s"] and line["anchor_config"]["kernel"] == best["kernel"]
        assert (line["anchor_config"]["M"], line["anchor_config"]["N"], line["anchor_config"]["K"]) == (48, 40, 160)
    pipe = {p["schedule"]: p for p in run.rows("pipeline")}
    assert set(pipe) == {"1f1b", "dualpipe"}
    assert run.lines["pipeline_bubble_1f1b"]["value"] == pipe["1f1b"]["bubble_ratio"]
    assert run.lines["pipeline_bubble_dualpipe"]["predicted"] == pipe["dualpipe"]["predicted_bubble_ratio"]
    over = max(run.rows("overlap"), key=lambda o: o["comm_bytes"])
    assert over["comm_bytes"] == 64 << 10 and run.lines["overlap_hidden_fraction"]["value"] == over["hidden_fraction"]
    moe = {m["phase"]: m for m in run.rows("moe_alltoall")}
    assert run.lines["moe_dispatch_GBps"]["value"] == moe["dispatch"]["logical_GBps"]
    assert run.lines["moe_combine_GBps"]["value"] == moe["combine"]["logical_GBps"]
    # the preset's anchored recipe, the configuration conf/anchors.yaml's rows rule matches on
    d = run.lines["moe_dispatch_GBps"]["anchor_config"]
    assert (d["ranks"], d["dispatch_dtype"], d["layout"], d["top_k"], d["num_experts"]) == (2, "fp8", "per_rank", 8, 256)


@pytest.mark.subprocess
@pytest.mark.world
def test_show_prints_the_summary(run, capsys):
    from hpcbench.core.cli import main

    assert main(["show", str(run.dir), "--benchmark", "fingerprint"]) == 0
    shown = capsys.readouterr().out
    assert "Node fingerprint" in shown and "tolerance 10 %" in shown
    for m in L.METRICS:
        assert m.label in shown
    assert shown.count("no anchor") == 9


@pytest.mark.subprocess
@pytest.mark.world
def test_compare_joins_fingerprints_on_the_metric(run, tmp_path, capsys):
    """B: the same run with its rows in reverse order and the copy's times doubled."""
    from hpcbench.core.cli import main

    b = tmp_path / "b"
    shutil.copytree(run.dir, b)
    (b / "rows.arrow").unlink(missing_ok=True)  # the log is the truth; the columnar copy would be read first
    rows = [json.loads(x) for x in (b / "rows.jsonl").read_text().splitlines()]
    for r in rows:
        if r.get("metric") == "hbm_copy_GBps":
            r["samples_s"] = [2 * s for s in r["samples_s"]]
            r["median_s"] *= 2
    (b / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    capsys.readouterr()
    assert main(["compare", str(run.dir), str(b), "--format", "json", "--benchmark", "fingerprint"]) == 0
    points = {p["point"]: p for p in json.loads(capsys.readouterr().out)["points"]}
    # the rates carry their source's time samples; the fractions (hidden share, bubbles) have none
    timed = {"hbm_copy_GBps", "all_reduce_busbw_GBps", "matmul_bf16_tflops", "matmul_fp8_tflops",
             "moe_dispatch_GBps", "moe_combine_GBps"}
    assert set(points) == {f"metric={m}" for m in timed}
    assert points["metric=hbm_copy_GBps"]["ratio"] == pytest.approx(2.0)
    assert points["metric=hbm_copy_GBps"]["verdict"] == "slower"
    assert {p["verdict"] for k, p in points.items() if k != "metric=hbm_copy_GBps"} <= {"no change", "too few samples"}
    assert all(p["ratio"] == pytest.approx(1.0) for k, p in points.items() if k != "metric=hbm_copy_GBps")


# ---- verdicts against a fake anchor ---------------------------------------------------------------

def test_verdict_against_the_tolerance():
    assert verdict(100.0, 10) == OK and verdict(90.0, 10) == OK  # exactly at the tolerance: ok
    assert verdict(89.9, 10) == BELOW and verdict(120.0, 10) == OK
    assert verdict(None, 10) == NO_ANCHOR
    assert verdict(110.0, 10, higher_is_better=False) == OK and verdict(110.1, 10, higher_is_better=False) == ABOVE
    assert verdict(50.0, 10, higher_is_better=False) == OK


class _FakeAnchors:
    """hpcbench.models.anchors' interface with one anchor: all_reduce on 8 ranks, 8 GiB, on an "H200"."""

    Anchor = types.SimpleNamespace

    def __init__(self):
        self.asked = []
        self.anchor = types.SimpleNamespace(metric="all_reduce_busbw_GBps", hardware="H200", config={"ranks": 8},
                                            value=400.0, unit="GB/s", source="a paper", note="ring")

    def match(self, metric, device_name, **config):
        self.asked.append((metric, device_name, config))
        ok = metric == self.anchor.metric and "H200" in (device_name or "") and config.get("ranks") == 8
        return self.anchor if ok else None

    @staticmethod
    def pct_of_anchor(value, anchor):
        return 100.0 * value / anchor.value


@pytest.fixture
def fake_anchors(monkeypatch):
    from hpcbench.models import anchors

    fake = _FakeAnchors()
    monkeypatch.setattr(anchors, "match", fake.match)
    monkeypatch.setattr(anchors, "pct_of_anchor", fake.pct_of_anchor)
    return fake


def test_judge_ok_below_and_no_anchor(fake_anchors):
    def on(device, value, ranks, tolerance=10):
        return judge("all_reduce_busbw_GBps", value, device, False, {"ranks": ranks, "bytes": 1 << 33}, tolerance)

    ok = on("NVIDIA H200", 380.0, 8)
    assert (ok.verdict, ok.pct_of_anchor, ok.anchor_value, ok.anchor_source) == (OK, 95.0, 400.0, "a paper")
    assert (on("NVIDIA H200", 340.0, 8).verdict, on("NVIDIA H200", 340.0, 8).pct_of_anchor) == (BELOW, 85.0)
    assert on("NVIDIA H200", 340.0, 8, tolerance=20).verdict == OK  # the tolerance is the config's
    other = on("NVIDIA H200", 340.0, 4)  # another configuration: nothing shown
    assert other.verdict == NO_ANCHOR and other.anchor_value is None and other.pct_of_anchor is None
    assert on("NVIDIA A100-SXM4-80GB", 340.0, 8).verdict == NO_ANCHOR
    assert fake_anchors.asked[0] == ("all_reduce_busbw_GBps", "NVIDIA H200", {"ranks": 8, "bytes": 1 << 33})


def test_judge_never_holds_the_cpu_fallback_or_a_missing_value_against_an_anchor(fake_anchors):
    cpu = judge("all_reduce_busbw_GBps", 380.0, "NVIDIA H200", True, {"ranks": 8}, 10)
    assert cpu.verdict == NO_ANCHOR and cpu.anchor_value is None and "CPU fallback" in cpu.anchor_note
    assert judge("all_reduce_busbw_GBps", None, "NVIDIA H200", False, {"ranks": 8}, 10).verdict == SKIPPED
    assert fake_anchors.asked == []


def test_summary_row_of_a_gpu_line_carries_its_anchor(fake_anchors):
    from hpcbench.benchmarks.fingerprint import summary_row

    cfg = types.SimpleNamespace(tolerance_pct=10.0)
    ctx = types.SimpleNamespace(device=types.SimpleNamespace(name="NVIDIA H200", fallback=False), world=None)
    line = L.Line(L.ALL_REDUCE, "ok", 300.0, source="x", config={"ranks": 8, "bytes": 1 << 33})
    row = summary_row(line, cfg, ctx)
    assert (row["verdict"], row["pct_of_anchor"], row["anchor_value"]) == (BELOW, 75.0, 400.0)
    assert row["world_size"] == 8 and row["anchor_config"] == {"ranks": 8, "bytes": 1 << 33}
    failed = summary_row(L.Line(L.ALL_REDUCE, "failed", reason="3 wrong elements"), cfg, ctx)
    assert failed["verdict"] == FAILED and failed["anchor_value"] is None


# ---- lines without a value say why ----------------------------------------------------------------

def _gemm(kernel, dtype, status="ok", tflops=None, **kw):
    return {"benchmark": "gemm", "M": 8, "N": 8, "K": 8, "kernel": kernel, "dtype": dtype, "pass": "fprop",
            "status": status, "tflops": tflops, "samples_s": [1e-3], "median_s": 1e-3, **kw}


def test_matmul_line_takes_the_fastest_ok_kernel_at_the_shape():
    rows = [_gemm("torch_bf16", "bf16", tflops=1.0), _gemm("triton_bf16", "bf16", tflops=3.0),
            _gemm("triton_bf16", "bf16", tflops=9.0, M=16),  # another shape: not this line's
            _gemm("torch_fp8_tensor", "fp8", "failed", reason="calc_diff 0.5 > tolerance 0.002")]
    best = L.matmul(L.MATMUL_BF16, "bf16", rows, (8, 8, 8))
    assert (best.status, best.value, best.config["kernel"]) == ("ok", 3.0, "triton_bf16")
    fp8 = L.matmul(L.MATMUL_FP8, "fp8", rows, (8, 8, 8))
    assert fp8.status == "failed" and fp8.value is None and "calc_diff 0.5" in fp8.reason
    absent = L.matmul(L.MATMUL_BF16, "bf16", rows, (4096, 4096, 4096))
    assert absent.status == "skipped" and "4096x4096x4096" in absent.reason
    dgrad = L.matmul(L.MATMUL_BF16, "bf16", [_gemm("torch_bf16", "bf16", tflops=5.0, **{"pass": "dgrad"})], (8, 8, 8))
    assert dgrad.status == "skipped"  # only the forward GEMM is the matmul line


def test_one_rank_lines_are_skips_with_the_reason():
    pipe = [{"schedule": "1f1b", "status": "ok", "bubble_ratio": 0.0, "world_size": 1}]
    line = L.bubble(L.BUBBLE_1F1B, "1f1b", pipe)
    assert line.status == "skipped" and "1 rank" in line.reason and line.value is None
    assert L.bubble(L.BUBBLE_DUALPIPE, "dualpipe", pipe).status == "skipped"
    moe = [{"phase": "dispatch", "status": "ok", "logical_GBps": 5.0, "world_size": 1, "tokens_per_rank": 8}]
    assert "1 rank" in L.moe(L.MOE_DISPATCH, "dispatch", moe).reason
    assert "is overlap in the suite" in L.hidden_fraction([]).reason


def test_latest_keeps_the_last_row_of_a_repeated_point():
    rows = [{"benchmark": "pipeline", "schedule": "1f1b", "bubble_ratio": 0.5},
            {"benchmark": "pipeline", "schedule": "1f1b", "bubble_ratio": 0.25},
            {"benchmark": "unknown", "schedule": "1f1b"}]
    assert L.latest(rows, {"pipeline": ("schedule",)}) == {"pipeline": [rows[1]]}


def test_bad_values_are_one_line_errors():
    from hpcbench.core.testing import family_config

    for override, words in (("fingerprint.tolerance_pct=100", "tolerance_pct"),
                            ("fingerprint.copy_bytes.cuda=3", "whole number of float32"),
                            ("fingerprint.all_reduce_bytes.cpu=lots", "is not a size"),
                            ("fingerprint.gemm_shape.cuda=[8192,8192]", "[M, N, K]")):
        with pytest.raises(UserError, match=words.replace("[", r"\[")):
            family_config("fingerprint", [override])


def test_fleet_subcommand_is_the_fingerprint_familys(monkeypatch):
    from hpcbench.api import registry
    from hpcbench.analysis import fleet_cli

    seen = []
    monkeypatch.setattr(fleet_cli, "main", lambda argv: seen.append(argv) or 7)
    assert registry.get("fingerprint").commands["fleet"](["a", "b"]) == 7 and seen == [["a", "b"]]
