"""The gemm benchmark in-process on the CPU fallback: rows, checks, skips and failures."""

import pytest

from hpcbench.benchmarks import gemm
from hpcbench.runner import RunContext
from hpcbench.runtime.device import DeviceInfo, resolve_device
from hpcbench.testing import family_config
from hpcbench.timing import TimingPolicy

FAST = TimingPolicy(warmup=0, min_reps=2, max_reps=2, budget_s=0.01)


def _ctx(device=None):
    return RunContext(device=device or resolve_device("cpu"), run_id="test", timing=FAST)


def _config(*overrides, smoke=True):
    """The YAML's defaults (at smoke size: the one 48x40x160 shape), plus `overrides`."""
    return family_config("gemm", overrides, smoke=smoke)


def _run(*overrides, ctx=None):
    return list(gemm.run(_config(*overrides), ctx or _ctx()))


def test_all_variants_verify_then_time():
    rows = _run()
    assert [r["kernel"] for r in rows] == [v.kernel for v in gemm.ALL_VARIANTS]
    for r in rows:
        assert r["status"] == "ok", r
        assert (r["M"], r["N"], r["K"], r["flops"]) == (48, 40, 160, 2 * 48 * 40 * 160)
        assert r["median_s"] > 0 and len(r["samples_s"]) == r["n_samples"] == 2
        assert r["tflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e12)
        assert r["pct_peak"] is None and r["peak_tflops"] is None  # CPU: no peak, never a guess
        assert 0 <= r["calc_diff_orig"] < 2e-3 and r["sqnr_orig_db"] > 20
    by = {r["kernel"]: r for r in rows}
    assert by["triton_bf16"]["calc_diff_orig"] < 1e-5
    for k in ("triton_fp8_tensor", "triton_fp8_row", "triton_fp8_block", "torch_fp8_row"):
        assert by[k]["calc_diff_deq"] < 1e-5 < by[k]["calc_diff_orig"]  # quantization error shows end to end
        assert by[k]["speedup_vs_bf16"] > 0 and by[k]["speedup_vs_bf16_with_quant"] > 0
        assert by[k]["e2e_median_s"] > 0 and by[k]["quant_median_s"] > 0
    assert by["triton_fp8_row"]["vs_torch"] == pytest.approx(by["torch_fp8_row"]["median_s"] / by["triton_fp8_row"]["median_s"])
    assert by["triton_fp8_block"]["accumulation"] == "fp32_promote_k128"


def test_a_point_missing_its_tolerance_is_failed_and_reports_no_speed():
    rows = _run("gemm.dtypes=[fp8]", "gemm.fp8_scalings=[tensor]", "gemm.tol_fp8_e2e=1e-9")
    assert {r["status"] for r in rows} == {"failed"}
    for r in rows:
        assert "calc_diff" in r["reason"] and "tolerance" in r["reason"]
        assert "median_s" not in r and "tflops" not in r
        assert r["calc_diff_orig"] > 1e-9  # the measured error is still recorded


def test_interpreter_size_cap_skips_triton_points_with_a_reason():
    rows = _run("gemm.interpret_max_flops=1.0", "gemm.backends=[triton]")
    assert {r["status"] for r in rows} == {"skipped"}
    assert all("interpreter" in r["reason"] for r in rows)


def test_selection_filters_variants():
    rows = _run("gemm.dtypes=[bf16]", "gemm.backends=[torch]")
    assert [r["kernel"] for r in rows] == ["torch_bf16"]


def test_fp8_on_a_gpu_without_fp8_is_skipped():
    a100 = DeviceInfo("cuda", "NVIDIA A100-SXM4-80GB", 0, (8, 0), 80 << 30)
    v = next(v for v in gemm.ALL_VARIANTS if v.kernel == "triton_fp8_row")
    reason = gemm._skip_reason(v, 128, 128, 128, _config(), _ctx(a100))
    assert "8.9" in reason and "8.0" in reason
    bf16 = next(v for v in gemm.ALL_VARIANTS if v.kernel == "torch_bf16")
    assert gemm._skip_reason(bf16, 128, 128, 128, _config(), _ctx(a100)) is None


def test_a_shape_too_large_for_memory_is_skipped(monkeypatch):
    ctx = _ctx()
    monkeypatch.setattr(DeviceInfo, "free_memory", lambda self: 1 << 10)
    rows = _run(ctx=ctx)
    assert {r["status"] for r in rows} == {"skipped"} and "GiB" in rows[0]["reason"]


def test_shape_auto_is_smoke_on_cpu():
    assert gemm.shapes_for(_config(smoke=False), _ctx()) == [(128, 128, 256), (1, 256, 384), (100, 72, 200)]


def test_without_triton_the_triton_points_are_skipped(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "triton", None)  # `import triton` now raises ImportError
    rows = _run("gemm.dtypes=[bf16]")
    by = {r["kernel"]: r for r in rows}
    assert by["triton_bf16"]["status"] == "skipped" and "triton is not installed" in by["triton_bf16"]["reason"]
    assert by["torch_bf16"]["status"] == "ok"
