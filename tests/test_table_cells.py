"""Cells that explain themselves: a share hidden by overlap below zero (the overlapped run slower
than its parts one after the other, as on the CPU fallback) says so in every table that shows
one; a skipped or failed GEMM row's reason is a numbered note, not a wide time column."""

import pytest
from rich.console import Console

from hpcbench.api.tables import fmt_share


def _rendered(renderable) -> str:
    console = Console(record=True, width=300)
    console.print(renderable)
    return console.export_text()


def _line(text: str, word: str) -> str:
    return next(ln for ln in text.splitlines() if word in ln)


@pytest.mark.parametrize(("value", "spec", "shown"), [
    (-0.47, ".0%", "-47% (slower than the sum)"), (-0.8, ".1%", "-80.0% (slower than the sum)"),
    (-0.004, ".0%", "-0% (slower than the sum)"),  # below zero, however little
    (0.0, ".0%", "0%"), (0.5, ".0%", "50%"), (1.0, ".1%", "100.0%"), (None, ".0%", ""), (float("nan"), ".0%", "")])
def test_a_share_below_zero_says_the_overlapped_run_was_slower(value, spec, shown):
    assert fmt_share(value, spec) == shown


def test_pipeline_fb_overlap_below_zero_is_explained():
    from hpcbench.benchmarks import pipeline

    def row(schedule, fb):
        return {"schedule": schedule, "status": "ok", "model": "mlp", "width": 64, "layers": 8, "world_size": 2,
                "backend": "gloo", "microbatches": 8, "microbatch_size": 4, "synthetic": False, "step_ms": 12.3,
                "samples_per_s": 2592.0, "bubble_ratio": 0.2, "predicted_bubble_ratio": 0.25,
                "closed_form_bubble_ms": None, "measured_idle_ms": 3.0, "peak_activations_per_rank": [2, 1],
                "predicted_peak_activations_per_rank": [2, 1], "blocked_ms_per_rank": [0.5, 1.5],
                "fb_overlap_efficiency": fb, "grad_max_rel_err": 1e-7, "torch_runtime_step_ms": None}

    text = _rendered(pipeline.table([row("dualpipev", -0.8), row("dualpipe", 0.3)], fallback=True))
    assert "-80.0% (slower than the sum)" in _line(text, "dualpipev")
    assert "30.0%" in _line(text, "dualpipe ") and "slower" not in _line(text, "dualpipe ")


def test_fingerprint_hidden_share_below_zero_is_explained_and_a_bubble_is_not():
    from hpcbench.benchmarks.fingerprint.table import table

    base = {"device": "AMD EPYC", "tolerance_pct": 10, "unit": "fraction", "status": "ok", "source": "x"}
    rows = [{**base, "label": "communication hidden behind compute", "value": -0.47, "higher_is_better": True},
            {**base, "label": "1F1B bubble (measured)", "value": 0.25, "higher_is_better": False},
            {**base, "label": "other hidden", "value": 0.47, "higher_is_better": True}]
    text = _rendered(table(rows, fallback=True))
    assert "-47.0 % (slower than the sum)" in _line(text, "communication hidden")
    assert "25.0 %" in _line(text, "bubble") and "slower" not in _line(text, "bubble")
    assert "47.0 %" in _line(text, "other hidden") and "slower" not in _line(text, "other hidden")


def test_overlap_and_moe_hidden_share_below_zero_is_explained():
    from hpcbench.benchmarks.moe_alltoall import table as moe_table
    from hpcbench.benchmarks.overlap import table as overlap_table

    row = {"collective": "all_reduce", "comm_bytes": 1 << 20, "compute": "matmul", "compute_shape": "256", "status": "ok",
           "t_comp_us": 10.0, "t_comm_us": 10.0, "t_seq_us": 20.0, "t_ovl_us": 29.4, "hidden_fraction": -0.94,
           "hidden_fraction_bounded": 0.0}
    line = _line(_rendered(overlap_table([{**row, "hidden_fraction_bounded": -1.88}], fallback=True)), "all_reduce")
    assert "-94% (slower than the sum)" in line and "-188% (slower than the sum)" in line  # h* too
    assert "slower" not in _rendered(overlap_table([{**row, "hidden_fraction": 0.94}], fallback=True))
    point = {"impl": "torch", "layout": "per_rank", "dispatch_dtype": "bf16", "tokens_per_rank": 64, "hidden": 128,
             "num_experts": 8, "top_k": 2, "routing": "uniform", "imbalance": None, "world_size": 2,
             "imbalance_measured": 1.0, "backend": "gloo", "status": "ok"}
    moe = [{**point, "phase": "dispatch", "median_s": 1e-3}, {**point, "phase": "combine", "median_s": 1e-3},
           {**point, "phase": "overlapped", "t_ovl_us": 30.0, "hidden_fraction": -0.5}]
    assert "-50% (slower than the sum)" in _line(_rendered(moe_table(moe, fallback=True)), "per_rank")


def test_gemm_reasons_are_numbered_notes_not_a_wide_time_column():
    from hpcbench.benchmarks.gemm.table import table

    ok = {"M": 128, "N": 128, "K": 256, "pass": "fprop", "kernel": "torch bf16", "status": "ok", "median_s": 1.5e-3,
          "p10_s": 1.4e-3, "p90_s": 1.6e-3, "cv": 0.01, "tflops": 5.6}
    long = "fp8 needs a GPU with FP8 tensor cores (sm_89 or newer); this is the CPU fallback [interpreter]"
    skipped = {k: ok[k] for k in ("M", "N", "K", "pass")}
    rows = [ok, {**skipped, "kernel": "triton fp8", "status": "skipped", "reason": long},
            {**skipped, "kernel": "torch fp8", "status": "skipped", "reason": long},
            {**ok, "kernel": "triton bf16", "status": "failed", "reason": "max rel err 0.3 > 0.02"}]
    text = _rendered(table(rows, fallback=True))
    assert "skipped [1]" in _line(text, "triton fp8") and "skipped [1]" in _line(text, "torch fp8")
    assert "FAILED [2]" in _line(text, "triton bf16")
    assert f"[1] {long}" in text and "[2] max rel err 0.3 > 0.02" in text and text.count("sm_89") == 1
    assert " median ms ┃" in text and "┃ median ms " in text  # the times set the column's width, not a reason
    assert "1.5" in _line(text, "torch bf16") and "1.5" not in _line(text, "triton bf16").split("FAILED [2]")[1][:12]
