"""scripts/gpu_acceptance.py: its logic on the CPU (--dry-run), and its verdicts on known numbers."""

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import REPO
from hpcbench.results import RunWriter

spec = importlib.util.spec_from_file_location("gpu_acceptance", REPO / "scripts" / "gpu_acceptance.py")
acceptance = sys.modules["gpu_acceptance"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(acceptance)


def _run(root, name, rows):
    w = RunWriter(root / name)
    w.write_metadata({"schema_version": 2, "run_id": name, "status": "complete"})
    for r in rows:
        w.append({"schema_version": 2, "benchmark": "gemm", "status": "ok", **r})
    w.close()
    return root / name


def test_targets_are_judged_on_the_runs_own_numbers(tmp_path):
    at = {"M": 8192, "N": 8192, "K": 8192}
    square = _run(tmp_path, "gemm-square", [
        {**at, "kernel": "torch_bf16", "tflops": 780.0}, {**at, "kernel": "triton_bf16", "tflops": 800.0},
        {**at, "kernel": "torch_fp8_tensor", "tflops": 1400.0}, {**at, "kernel": "triton_fp8_tensor", "tflops": 1460.0}])
    ds = _run(tmp_path, "gemm-deepseek_v3", [
        {"M": 4096, "N": n, "K": 7168, "kernel": "triton_fp8_block", "tflops": t} for n, t in ((1536, 1100.0),
                                                                                              (4096, 1250.0),
                                                                                              (7168, 1300.0))])
    rows = {r["target"]: r for r in acceptance.targets({"square": square, "deepseek_v3": ds}, gpu=True)}
    bf16 = rows["Triton BF16 vs cuBLAS"]
    assert bf16["verdict"] == "PASS" and bf16["ratio"] == pytest.approx(800 / 780)
    fp8 = rows["Triton FP8 per-tensor vs torch._scaled_mm"]
    assert fp8["verdict"] == "FAIL" and fp8["ratio"] == pytest.approx(1460 / 1400)  # 1.043 < 1.05
    assert rows["FP8/BF16 (Triton per-tensor / Triton BF16)"]["ratio"] == pytest.approx(1460 / 800)
    assert rows["FP8/BF16 (Triton per-tensor / Triton BF16)"]["verdict"] == "PASS"  # 1.825 >= 1.8
    block = rows["block-scaled FP8, DeepSeek-V3 shapes at M=4096 (median)"]
    assert block["TFLOP/s"] == 1250.0 and block["verdict"] == "PASS"
    assert {r["verdict"] for r in acceptance.targets({"square": square, "deepseek_v3": ds}, gpu=False)} == {"n/a"}


@pytest.mark.slow
def test_the_dry_run_is_green_on_the_cpu_and_leaves_at_most_eight_files(tmp_path):
    out = tmp_path / "acceptance"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_acceptance.py"), "--dry-run", "--out", str(out),
                        "--skip", "compile-kernels"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["dry_run"] and not summary["gpu"]
    assert {t["verdict"] for t in summary["targets"]} == {"n/a"}  # a CPU never passes a GPU target
    assert {s["name"]: s["status"] for s in summary["steps"]}["multi-rank families"] == "ok"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())
    assert {"summary.md", "summary.json", "log.txt", "gemm-square.parquet", "multirank.parquet"} <= set(files)
    assert summary["accumulation"]["calc_diff_by_K"]
