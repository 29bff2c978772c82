"""scripts/gpu_acceptance.py: its logic on the CPU (--dry-run), and its verdicts on known numbers."""

import importlib.util
import json
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO

from hpcbench.results import load_run
from hpcbench.results.writer import RunWriter

spec = importlib.util.spec_from_file_location("gpu_acceptance", REPO / "scripts" / "gpu_acceptance.py")
acceptance = sys.modules["gpu_acceptance"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(acceptance)

NEW_TARGETS = {
    "grouped FP8 block-scaled (Triton), DeepSeek-V3 contiguous 4×8192×4096×7168",
    "FP8 block-scaled fprop+dgrad+wgrad over BF16, Llama-3-70B layers at M=16384",
    "MAMF BF16 (best shape near the published best)",
    "MAMF FP8 (best shape near the published best)",
    "fingerprint wall time",
}
NEW_STEPS = {"grouped_gemm DeepSeek-V3 contiguous", "gemm fprop+dgrad+wgrad llama3_70b", "mamf near the published best",
             "fingerprint"}


def _run(root, name, rows, benchmark="gemm"):
    w = RunWriter(root / name)
    w.write_metadata({"schema_version": 2, "run_id": name, "status": "complete", "params": {benchmark: ["M", "kernel"]}})
    for r in rows:
        w.append({"schema_version": 2, "benchmark": benchmark, "status": "ok", **r})
    w.close()
    return root / name


def _rows(*rows):
    return pd.DataFrame([{"status": "ok", **r} for r in rows])


def test_targets_are_judged_on_the_runs_own_numbers(tmp_path):
    at = {"M": 8192, "N": 8192, "K": 8192}
    square = _run(tmp_path, "gemm-square", [
        {**at, "kernel": "torch_bf16", "tflops": 780.0}, {**at, "kernel": "triton_bf16", "tflops": 800.0},
        {**at, "kernel": "torch_fp8_tensor", "tflops": 1400.0}, {**at, "kernel": "triton_fp8_tensor", "tflops": 1460.0}])
    ds = _run(tmp_path, "gemm-deepseek_v3", [
        {"M": 4096, "N": n, "K": 7168, "kernel": "triton_fp8_block", "tflops": t} for n, t in ((1536, 1100.0),
                                                                                              (4096, 1250.0),
                                                                                              (7168, 1300.0))])
    grouped = _run(tmp_path, "grouped", [{**acceptance.GROUPED_POINT, "kernel": "triton_fp8", "tflops": 1150.0}],
                   benchmark="grouped_gemm")
    runs = {"square": square, "deepseek_v3": ds, "grouped": grouped}
    rows = {r["target"]: r for r in acceptance.targets(runs, gpu=True)}
    bf16 = rows["Triton BF16 vs cuBLAS"]
    assert bf16["verdict"] == "PASS" and bf16["ratio"] == pytest.approx(800 / 780)
    fp8 = rows["Triton FP8 per-tensor vs torch._scaled_mm"]
    assert fp8["verdict"] == "FAIL" and fp8["ratio"] == pytest.approx(1460 / 1400)  # 1.043 < 1.05
    assert rows["FP8/BF16 (Triton per-tensor / Triton BF16)"]["ratio"] == pytest.approx(1460 / 800)
    assert rows["FP8/BF16 (Triton per-tensor / Triton BF16)"]["verdict"] == "PASS"  # 1.825 >= 1.8
    block = rows["block-scaled FP8, DeepSeek-V3 shapes at M=4096 (median)"]
    assert block["TFLOP/s"] == 1250.0 and block["verdict"] == "PASS"
    assert rows[next(t for t in NEW_TARGETS if t.startswith("grouped"))]["verdict"] == "PASS"  # read from its run
    # runs never made (passes, mamf, fingerprint) are n/a, and a CPU judges nothing
    assert {rows[t]["verdict"] for t in NEW_TARGETS if not t.startswith("grouped")} == {"n/a"}
    assert {r["verdict"] for r in acceptance.targets(runs, gpu=False)} == {"n/a"}


def test_grouped_fp8_needs_1100_tflops_at_deepseeks_contiguous_point():
    point = acceptance.GROUPED_POINT
    assert point == {"layout": "contiguous", "G": 4, "M": 8192, "N": 4096, "K": 7168}
    passed = acceptance.grouped_target(_rows({**point, "kernel": "triton_bf16", "tflops": 700.0},
                                             {**point, "kernel": "triton_fp8", "tflops": 1150.0}))
    assert passed["verdict"] == "PASS" and passed["TFLOP/s"] == 1150.0 and passed["ratio"] == pytest.approx(1150 / 700)
    failed = acceptance.grouped_target(_rows({**point, "kernel": "triton_fp8", "tflops": 1099.0}))
    assert failed["verdict"] == "FAIL" and failed["ratio"] is None  # no BF16 row: no ratio, still judged
    # another point, a failed check (no speed), no run at all: nothing to judge
    other = _rows({**point, "G": 8, "M": 4096, "kernel": "triton_fp8", "tflops": 1300.0},
                  {**point, "kernel": "triton_fp8", "status": "failed", "tflops": None})
    assert acceptance.grouped_target(other)["verdict"] == "n/a"
    assert acceptance.grouped_target(None)["verdict"] == "n/a"


def _pass_rows(shapes, bf16_ms, fp8_e2e_ms, fp8_gemm_ms=0.1):
    rows, i = [], 0
    for M, N, K in shapes:
        for p in ("fprop", "dgrad", "wgrad"):
            at = {"M": M, "N": N, "K": K, "pass": p}
            rows.append({**at, "kernel": "triton_bf16", "median_s": bf16_ms[i] / 1e3})
            # the GEMM alone is faster than BF16 everywhere: the target must read the end-to-end time
            rows.append({**at, "kernel": "triton_fp8_block", "median_s": fp8_gemm_ms / 1e3,
                         "e2e_median_s": fp8_e2e_ms[i] / 1e3})
            i += 1
    return rows


def test_the_training_step_speedup_is_summed_bf16_time_over_summed_fp8_time_with_casts():
    shapes = [(1024, 2048, 512), (1024, 512, 4096)]
    bf16 = [3, 3, 3, 1, 1, 1]  # ms per (shape, pass): 12 in all
    # 8 ms in all: 1.5x; the first shape, most of the time, is 9 / 7 = 1.29x alone: each pass weighs its time
    rows = _pass_rows(shapes, bf16, [2.5, 2.5, 2.0, 0.3, 0.3, 0.4])
    passed = acceptance.passes_target(_rows(*rows), shapes)
    assert passed["verdict"] == "PASS" and passed["ratio"] == pytest.approx(12 / 8)
    flops = 3 * 2 * (1024 * 2048 * 512 + 1024 * 512 * 4096)  # every pass of a layer is 2MNK
    assert passed["TFLOP/s"] == pytest.approx(flops / 8e-3 / 1e12)
    failed = acceptance.passes_target(_rows(*_pass_rows(shapes, bf16, [3, 3, 2, 0.6, 0.6, 0.8])), shapes)
    assert failed["verdict"] == "FAIL" and failed["ratio"] == pytest.approx(12 / 10)
    # one (shape, pass) without its FP8 end-to-end time: a partial sum would judge another mix, so n/a
    partial = [r for r in rows if not (r["kernel"] == "triton_fp8_block" and r["pass"] == "wgrad" and r["N"] == 512)]
    assert acceptance.passes_target(_rows(*partial), shapes)["verdict"] == "n/a"
    assert acceptance.passes_target(_rows(*rows), [*shapes, (1024, 64, 64)])["verdict"] == "n/a"  # a shape not run
    assert acceptance.passes_target(None, shapes)["verdict"] == "n/a"


def test_the_passes_run_uses_the_llama3_70b_layers_at_16384_tokens():
    assert acceptance.passes_shapes(False) == [(16384, 10240, 8192), (16384, 8192, 8192), (16384, 57344, 8192),
                                               (16384, 8192, 28672)]


def test_mamf_is_judged_within_three_percent_of_the_published_best():
    lo, hi = {"M": 2048, "N": 2048, "K": 12032}, {"M": 2048, "N": 2048, "K": 13312}
    summary = {"record": "summary", "dtype": "bf16", "best_tflops": 900.0}  # a derived row: not a point
    df = _rows({**lo, "record": "point", "dtype": "bf16", "tflops": 760.0},
               {**hi, "record": "point", "dtype": "bf16", "tflops": 771.0}, summary,
               {**hi, "record": "point", "dtype": "fp8", "tflops": 1409.0})
    bf16 = acceptance.mamf_target(df, "bf16")
    assert bf16["verdict"] == "PASS" and bf16["TFLOP/s"] == 771.0  # 771 >= 0.97 x 794.5 = 770.665
    assert bf16["ratio"] == pytest.approx(771 / 794.5)
    fp8 = acceptance.mamf_target(df, "fp8")
    assert fp8["verdict"] == "FAIL" and fp8["ratio"] == pytest.approx(1409 / 1453.4)  # < 0.97 x 1453.4 = 1409.798
    cold = _rows({**hi, "record": "point", "dtype": "bf16", "tflops": 770.0})
    assert acceptance.mamf_target(cold, "bf16")["verdict"] == "FAIL"
    assert acceptance.mamf_target(_rows(summary), "bf16")["verdict"] == "n/a"
    assert acceptance.mamf_target(None, "fp8")["verdict"] == "n/a"


def test_the_mamf_figures_are_the_anchors_of_an_h200():
    from hpcbench import anchors

    for dtype, value in acceptance.MAMF_ANCHORS.items():
        assert anchors.match(f"mamf_{dtype}_tflops", "NVIDIA H200").value == value


def test_the_fingerprint_passes_when_it_ends_with_its_summary_within_three_minutes():
    judge = acceptance.fingerprint_target
    assert judge("ok", 150.0, 200.0, 9)["verdict"] == "PASS"
    assert judge("ok", 181.0, 200.0, 9)["verdict"] == "FAIL"
    assert judge("timeout", 200.0, 200.0, 0)["verdict"] == "FAIL"  # stopped after more than 3 minutes
    assert judge("timeout", 120.0, 120.0, 0)["verdict"] == "n/a"  # stopped early by the budget: unknown
    assert judge("failed", 30.0, 200.0, 0)["verdict"] == "n/a"
    assert judge("ok", 30.0, 200.0, 0)["verdict"] == "n/a"  # no summary lines
    assert judge(None, 0.0, None, 0)["verdict"] == "n/a"
    assert judge("ok", 150.0, 200.0, 9)["seconds"] == 150.0


def test_every_step_keeps_its_slot_and_the_whole_fits_nine_and_a_half_minutes(tmp_path):
    slots = sum(slot for slot, _ in acceptance.STEPS.values())
    assert acceptance.BUDGET_S <= 9.5 * 60 and slots + acceptance.TAIL_S <= acceptance.BUDGET_S
    assert all(slot <= cap for slot, cap in acceptance.STEPS.values())
    assert acceptance.STEPS["fingerprint"][0] >= acceptance.FINGERPRINT_MAX_S  # a slow fingerprint is a FAIL, not n/a
    acc = acceptance.Acceptance(tmp_path, True, {})
    first, second = list(acceptance.STEPS)[:2]
    # nothing ran yet: the first step gets 570 - (555 - 40) - 15 = 40 s, its slot
    assert acc.limit_for(first) == pytest.approx(40, abs=1)
    # it ended after 10 s: the second gets its 35 s and the 30 s the first left unused
    acc.steps.append(acceptance.Step(first, "ok", 10.0))
    acc.started = time.monotonic() - 10
    assert acc.limit_for(second) == pytest.approx(65, abs=1)
    # with every slot used up, a step still starts (10 s) rather than not at all
    acc.started = time.monotonic() - 560
    assert acc.limit_for(second) == 10.0


def test_a_step_stopped_at_its_limit_takes_the_processes_it_started_with_it(tmp_path):
    beat = tmp_path / "beat"
    child = f"import time\nwhile True:\n    open({str(beat)!r}, 'a').write('.')\n    time.sleep(0.05)"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    with open(tmp_path / "log", "w") as log:
        t0 = time.monotonic()
        assert acceptance._run_group([sys.executable, "-c", parent], {}, log, limit=4.0) is None
        assert time.monotonic() - t0 < 10
        assert acceptance._run_group([sys.executable, "-c", "raise SystemExit(3)"], {}, log, limit=30.0) == 3
    size = beat.stat().st_size
    time.sleep(0.5)
    assert beat.stat().st_size == size > 0  # the child that outlived its parent beats no more


def test_every_run_goes_into_one_parquet_with_a_run_column(tmp_path):
    a = _run(tmp_path, "gemm-square", [{"M": 8, "kernel": "triton_bf16", "tflops": 1.0}])
    b = _run(tmp_path, "mamf", [{"M": 8, "dtype": "bf16", "tflops": 2.0}, {"M": 16, "dtype": "bf16", "tflops": 3.0}],
             benchmark="mamf")
    out = tmp_path / "runs.parquet"
    assert acceptance.export_runs({"square": a, "mamf": b, "never": tmp_path / "missing"}, out) == 3
    df = load_run(out)
    assert sorted(df["run"]) == ["gemm-square", "mamf", "mamf"]
    meta = df.attrs["metadata"]
    assert set(meta["runs"]) == {"gemm-square", "mamf"} and meta["params"]["mamf"] == ["run", "M", "kernel"]


@pytest.mark.slow
def test_the_dry_run_is_green_on_the_cpu_and_leaves_at_most_eight_files(tmp_path):
    out = tmp_path / "acceptance"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_acceptance.py"), "--dry-run", "--out", str(out),
                        "--skip", "compile-kernels"], check=False, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["dry_run"] and not summary["gpu"]
    assert {t["verdict"] for t in summary["targets"]} == {"n/a"}  # a CPU never passes a GPU target
    assert NEW_TARGETS <= {t["target"] for t in summary["targets"]}
    steps = {s["name"]: s["status"] for s in summary["steps"]}
    assert {steps[name] for name in [*NEW_STEPS, "multi-rank families"]} == {"ok"}
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())
    assert {"summary.md", "summary.json", "log.txt", "runs.parquet"} <= set(files)
    runs = load_run(out / "runs.parquet")
    assert set(runs["run"]) == {"grouped", "gemm-passes", "mamf", "fingerprint", "multirank", "gemm-square"}
    passes = runs[(runs["run"] == "gemm-passes") & (runs["status"] == "ok")]
    assert set(passes["pass"]) == {"fprop", "dgrad", "wgrad"} and passes["e2e_median_s"].notna().any()
    assert set(runs.loc[runs["run"] == "grouped", "kernel"]) == {"triton_bf16", "triton_fp8"}
    # the fingerprint's summary, every line with its anchor columns, in the summary files
    assert len(summary["fingerprint"]) == 9 and "% anchor" in (out / "summary.md").read_text()
    assert summary["accumulation"]["calc_diff_by_K"]
