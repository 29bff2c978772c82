"""The GPU acceptance call (hpcbench.acceptance): its plan, decisions and verdicts on known numbers.
The call itself, run in a bare environment from its wheel folder, is tests/test_bare_image.py."""

import json
import sys
import time

import pandas as pd
import pytest

from hpcbench.acceptance import paths_table, plan, process, targets, verdicts
from hpcbench.acceptance.process import Acceptance, Step

H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"


def _rows(*rows, device=H100):
    return pd.DataFrame([{"status": "ok", "device": device, **r} for r in rows])


# ---- the plan -----------------------------------------------------------------------------------

def test_every_gpu_path_has_a_proof_step_and_the_slots_fit_two_and_five_minutes():
    proof = plan.steps(plan.PROOF)
    assert sum(s.slot.seconds for s in proof) <= plan.PROOF_SLOTS_S == 120
    assert plan.budget_s("default") <= plan.DEFAULT_BUDGET_S == 300
    assert all(s.slot.seconds <= s.cap_s for s in plan.STEPS)
    paths = {s.name for s in plan.STEPS if s.gpu_path}
    assert paths == {"install", "kernels-gemm", "kernels-grouped", "timing", "nccl", "p2p", "multirank", "nvml",
                     "accumulation"}
    assert all(s.stage == plan.PROOF for s in plan.STEPS if s.gpu_path)
    assert "fingerprint" not in {s.name for s in plan.steps("default")}  # a call of its own
    assert plan.spec("fingerprint").slot.seconds >= targets.FINGERPRINT_MAX_S  # a slow one is a FAIL, not n/a


def test_a_slot_is_its_counts_written_out():
    slot = plan.Slot(fixed_s=6, compiles=4, points=10, point_s=0.5, why="x")
    assert slot.seconds == 6 + 4 * plan.COMPILE_S + 5.0
    assert slot.derivation == f"6 s start + 4 compiles x {plan.COMPILE_S:g} s + 10 points x 0.5 s = {slot.seconds:g} s (x)"


def test_a_step_borrows_what_earlier_steps_left_never_the_later_slots(tmp_path):
    acc = Acceptance(tmp_path, tmp_path, plan.PROOF, False, {})
    names = [s.name for s in plan.steps(plan.PROOF)]
    later = sum(plan.spec(n).slot.seconds for n in names[2:]) + plan.TAIL_S
    acc.steps.append(Step(names[0], "ok"))
    # nothing spent yet: the second step gets its cap, or what the later slots leave
    assert acc.limit_for(names[1]) == pytest.approx(min(plan.spec(names[1]).cap_s, plan.PROOF_BUDGET_S - later), abs=1)
    acc.started = time.monotonic() - plan.PROOF_BUDGET_S  # every slot used up: still 10 s, not nothing
    assert acc.limit_for(names[1]) == process.MIN_LIMIT_S
    assert Acceptance(tmp_path, tmp_path, plan.PROOF, True, {}).limit_for(names[1]) > plan.spec(names[1]).cap_s


def test_steps_never_run_the_triton_interpreter_whatever_the_caller_set():
    env = process.step_environment({"TRITON_INTERPRET": "1", "PATH": "/bin"})
    assert "TRITON_INTERPRET" not in env and env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == "/bin"


@pytest.mark.subprocess
def test_a_step_stopped_at_its_limit_takes_the_processes_it_started_with_it(tmp_path):
    beat = tmp_path / "beat"
    child = f"import time\nwhile True:\n    open({str(beat)!r}, 'a').write('.')\n    time.sleep(0.05)"
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    with open(tmp_path / "log", "w") as log:
        t0 = time.monotonic()
        assert process.run_group([sys.executable, "-c", parent], {}, log, limit=4.0) is None
        assert time.monotonic() - t0 < 10
        assert process.run_group([sys.executable, "-c", "raise SystemExit(3)"], {}, log, limit=30.0) == 3
    size = beat.stat().st_size
    time.sleep(0.5)
    assert beat.stat().st_size == size > 0  # the child that outlived its parent beats no more


# ---- decisions ----------------------------------------------------------------------------------

def test_p2p_without_nccl_or_refused_is_na_never_ok():
    assert verdicts.p2p_outcome(nccl=False)["status"] == "n/a"
    assert "needs 2 GPUs" in verdicts.p2p_outcome(nccl=False)["detail"]
    assert verdicts.p2p_outcome(nccl=True, error="invalid usage")["status"] == "n/a"
    assert verdicts.p2p_outcome(nccl=True, works=1, exact=False)["status"] == "failed"
    ok = verdicts.p2p_outcome(nccl=True, works=1, exact=True)
    assert ok["status"] == "ok" and ok["works"] == 1


def test_the_p2p_probe_says_na_on_a_machine_without_nccl():
    from hpcbench.acceptance import probes

    assert probes.p2p()["status"] == "n/a"  # the CPU: no CUDA, no NCCL


def test_on_sm90_every_triton_gemm_row_must_run_the_hopper_path():
    rows = [{"benchmark": "gemm", "kernel": "triton_bf16", "status": "ok", "kernel_impl": "tma_persistent"},
            {"benchmark": "gemm", "kernel": "torch_bf16", "status": "ok", "kernel_impl": None},
            {"benchmark": "gemm", "kernel": "torch_fp8_block", "status": "skipped", "reason": "torch lacks it"},
            {"benchmark": "grouped_gemm", "kernel": "triton_fp8", "status": "ok", "kernel_impl": "pointer"}]
    assert verdicts.kernel_path_problems(rows, (9, 0), "3.6.0") == []
    pointer = [{**rows[0], "kernel_impl": "pointer"}]
    assert verdicts.kernel_path_problems(pointer, (9, 0), "3.6.0")  # the interpreter's path on a Hopper: wrong
    assert verdicts.kernel_path_problems(pointer, (8, 0), "3.6.0") == []  # an A100 gets the pointer kernels
    assert verdicts.kernel_path_problems(rows[:1], (9, 0), "3.5.0")  # old Triton: pointer expected
    skipped = [{**rows[0], "status": "skipped", "reason": "no fp8"}]
    failed = [{**rows[1], "status": "failed", "reason": "calc_diff"}]
    assert verdicts.kernel_path_problems(skipped, (9, 0), "3.6.0") and verdicts.kernel_path_problems(failed, (9, 0), "3.6")


def _step(name, status, required=True):
    return Step(name, status, required=required)


def test_the_call_passes_on_its_required_steps_and_targets_not_on_partial_steps():
    ok = [_step("kernels-gemm", "ok"), _step("passes", "timeout", required=False)]
    assert verdicts.call_passed(ok, [{"verdict": "n/a"}, {"verdict": "PASS"}], gpu=True)  # partial: how far it got
    assert not verdicts.call_passed(ok, [{"verdict": "FAIL"}], gpu=True)
    assert not verdicts.call_passed([_step("nccl", "timeout")], [], gpu=True)
    assert not verdicts.call_passed([_step("nccl", "n/a")], [], gpu=True)  # not proven on a GPU
    assert verdicts.call_passed([_step("nccl", "n/a")], [], gpu=False)  # the CPU has no NCCL to prove
    assert not verdicts.call_passed([_step("nccl", "failed")], [], gpu=False)
    # a partial step may stop at its limit, never fail (a crash, a row that failed its check)
    assert not verdicts.call_passed([_step("gemm-square", "failed", required=False)], [{"verdict": "n/a"}], gpu=True)
    # a known weak spot's FAIL is reported as measured, not held against the call
    weak = {"verdict": "FAIL", "known_weak": True}
    assert verdicts.call_passed(ok, [weak], gpu=True) and not verdicts.call_passed(ok, [weak, {"verdict": "FAIL"}], True)
    assert targets.grouped_target(_rows({**targets.GROUPED_POINT, "kernel": "triton_fp8", "tflops": 1.0}),
                                  H100)["known_weak"]


def test_a_run_with_a_row_that_failed_its_check_fails_its_step(tmp_path):
    from hpcbench.acceptance.steps import judge_rows
    from hpcbench.results.writer import RunWriter

    w = RunWriter(tmp_path / "run")
    w.write_metadata({"schema_version": 2, "run_id": "run", "status": "complete", "params": {"gemm": ["kernel"]}})
    for status, kernel in (("ok", "triton_bf16"), ("skipped", "torch_fp8_block"), ("ok", "torch_bf16")):
        w.append({"schema_version": 2, "benchmark": "gemm", "status": status, "kernel": kernel})
    w.close()
    step = Step("gemm-square", "ok", required=False)
    judge_rows(step, tmp_path / "run")
    assert step.status == "ok" and step.progress == "3 rows stored: 2 ok, 1 skipped"
    w = RunWriter(tmp_path / "bad")
    w.write_metadata({"schema_version": 2, "run_id": "bad", "status": "complete", "params": {"gemm": ["kernel"]}})
    w.append({"schema_version": 2, "benchmark": "gemm", "status": "failed", "kernel": "triton_fp8_tensor",
              "reason": "calc_diff 0.3 > 1e-3"})
    w.close()
    step = Step("gemm-square", "ok", required=False)  # exit 1: a point failed, the run itself ended
    judge_rows(step, tmp_path / "bad")
    assert step.status == "failed" and "calc_diff" in step.detail
    timed_out = Step("passes", "timeout", required=False)
    judge_rows(timed_out, tmp_path / "run")
    assert timed_out.status == "timeout" and timed_out.progress.startswith("3 rows stored")


def test_a_partial_step_is_not_started_once_the_budget_is_spent_but_a_required_one_is(tmp_path):
    acc = Acceptance(tmp_path, tmp_path, "default", False, {})
    assert not acc.out_of_time("gemm-square") and not acc.out_of_time("kernels-gemm")
    acc.started -= plan.DEFAULT_BUDGET_S  # e.g. a slow wheel install and proof stage
    assert acc.out_of_time("gemm-square") and not acc.out_of_time("kernels-gemm")
    skipped = acc.run("gemm-square", [sys.executable, "-c", "raise SystemExit(3)"])
    assert skipped.status == "n/a" and "budget" in skipped.detail and not (tmp_path / "log.txt").exists()


# ---- targets from the anchors of the detected device --------------------------------------------

def test_mamf_is_judged_against_the_detected_devices_own_anchor():
    df = _rows({"record": "point", "dtype": "fp8", "tflops": 1380.0}, {"record": "summary", "dtype": "fp8", "tflops": 9e3})
    h100 = targets.mamf_target(df, "fp8", H100)
    assert h100["verdict"] == "PASS" and h100["ratio"] == pytest.approx(1380 / 1402.6)  # 1380 >= 0.97 x 1402.6
    h200 = targets.mamf_target(df, "fp8", H200)
    assert h200["verdict"] == "FAIL" and h200["ratio"] == pytest.approx(1380 / 1453.4)  # < 0.97 x 1453.4 = 1409.8
    edge = _rows({"record": "point", "dtype": "bf16", "tflops": 0.97 * 794.5})
    assert targets.mamf_target(edge, "bf16", H100)["verdict"] == "PASS"  # >= at the boundary
    assert targets.mamf_target(df, "fp8", "NVIDIA L4")["verdict"] == "n/a"
    assert "no published" in targets.mamf_target(df, "fp8", "NVIDIA L4")["wanted"]
    assert targets.mamf_target(None, "fp8", H100)["verdict"] == "n/a"


def test_the_mamf_sweep_is_centred_on_the_anchors_best_shape():
    assert targets.anchors.match("mamf_fp8_tflops", H100).best_shape == {"M": 1024, "N": 9216, "K": 14336}
    from hpcbench.acceptance import steps

    dims = steps.mamf_dims("fp8", H200, dry_run=False)
    assert dims == {"m": [1280, 1536], "n": [4096, 4352], "k": [12032, 12288]}
    assert steps.mamf_dims("fp8", "NVIDIA L4", dry_run=False) is None


def test_square_targets_are_fractions_of_the_devices_mamf_and_its_peers():
    at = targets.SQUARE
    df = _rows({**at, "kernel": "torch_bf16", "tflops": 740.0}, {**at, "kernel": "triton_bf16", "tflops": 760.0},
               {**at, "kernel": "torch_fp8_tensor", "tflops": 1300.0},
               {**at, "kernel": "triton_fp8_tensor", "tflops": 1370.0})
    rows = {r["target"].split(" at")[0]: r for r in targets.square_targets(df, H100)}
    assert rows["Triton BF16"]["verdict"] == "PASS"  # 760 >= 0.95 x 794.5 = 754.8, and >= cuBLAS
    assert rows["Triton FP8"]["verdict"] == "PASS"  # 1370 >= 0.95 x 1402.6 = 1332.5, 1.054x >= 1.05x
    assert rows["FP8/BF16"]["ratio"] == pytest.approx(1370 / 760) and rows["FP8/BF16"]["verdict"] == "PASS"
    h200 = {r["target"].split(" at")[0]: r for r in targets.square_targets(df, H200)}
    assert h200["Triton FP8"]["verdict"] == "FAIL"  # 1370 < 0.95 x 1453.4 = 1380.7
    slow = _rows({**at, "kernel": "torch_bf16", "tflops": 770.0}, {**at, "kernel": "triton_bf16", "tflops": 760.0})
    assert targets.square_targets(slow, H100)[0]["verdict"] == "FAIL"  # fast enough, but below cuBLAS
    assert {r["verdict"] for r in targets.square_targets(df, "NVIDIA L4")[:2]} == {"n/a"}


def test_block_scaled_is_judged_per_shape_against_deepgemms_h800_figure():
    shapes = {(2112, 7168): 1127, (24576, 1536): 1212, (4096, 7168): 1410}
    df = _rows(*[{"M": 4096, "N": n, "K": k, "kernel": "triton_fp8_block", "tflops": 0.8 * v}
                 for (n, k), v in shapes.items()])
    r = targets.block_target(df, H100)
    assert r["verdict"] == "PASS" and r["ratio"] == pytest.approx(0.8) and "H800" in r["note"]
    low = _rows(*[{"M": 4096, "N": n, "K": k, "kernel": "triton_fp8_block", "tflops": 0.78 * v}
                  for (n, k), v in shapes.items()])
    assert targets.block_target(low, H200)["verdict"] == "FAIL"
    assert targets.block_target(df, "NVIDIA H100 PCIe")["verdict"] == "n/a"  # not the H800's compute


def test_grouped_fp8_is_judged_against_082_of_deepgemm_and_reported_as_a_pointer_kernel():
    point = targets.GROUPED_POINT
    ok = targets.grouped_target(_rows({**point, "kernel": "triton_fp8", "tflops": 0.82 * 1346}), H100)
    assert ok["verdict"] == "PASS" and ok["ratio"] == pytest.approx(0.82)
    low = targets.grouped_target(_rows({**point, "kernel": "triton_fp8", "tflops": 900.0}), H100)
    assert low["verdict"] == "FAIL" and "pointer kernel" in low["note"]
    assert targets.grouped_target(_rows({**point, "kernel": "triton_fp8", "tflops": 1300.0}), "NVIDIA L4")["verdict"] == "n/a"


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
    rows = _pass_rows(shapes, bf16, [2.5, 2.5, 2.0, 0.3, 0.3, 0.4])  # 8 ms: 1.5x
    passed = targets.passes_target(_rows(*rows), shapes)
    assert passed["verdict"] == "PASS" and passed["ratio"] == pytest.approx(12 / 8)
    flops = 3 * 2 * (1024 * 2048 * 512 + 1024 * 512 * 4096)
    assert passed["TFLOP/s"] == pytest.approx(flops / 8e-3 / 1e12)
    failed = targets.passes_target(_rows(*_pass_rows(shapes, bf16, [3, 3, 2, 0.6, 0.6, 0.8])), shapes)
    assert failed["verdict"] == "FAIL" and failed["ratio"] == pytest.approx(12 / 10)
    partial = [r for r in rows if not (r["kernel"] == "triton_fp8_block" and r["pass"] == "wgrad" and r["N"] == 512)]
    assert targets.passes_target(_rows(*partial), shapes)["verdict"] == "n/a"


def test_the_hopper_path_target_needs_sm90_and_only_tma_rows():
    at = targets.SQUARE
    df = _rows({**at, "kernel": "triton_bf16", "kernel_impl": "tma_persistent"}, {**at, "kernel": "torch_bf16"})
    assert targets.hopper_path_target(df, (9, 0))["verdict"] == "PASS"
    mixed = _rows({**at, "kernel": "triton_bf16", "kernel_impl": "tma_persistent"},
                  {**at, "kernel": "triton_fp8_tensor", "kernel_impl": "pointer"})
    assert targets.hopper_path_target(mixed, (9, 0))["verdict"] == "FAIL"
    assert targets.hopper_path_target(df, (8, 0))["verdict"] == "n/a"


def test_the_fingerprint_passes_when_it_ends_with_its_summary_within_three_minutes():
    judge = targets.fingerprint_target
    assert judge("ok", 150.0, 200.0, 9)["verdict"] == "PASS"
    assert judge("ok", 181.0, 200.0, 9)["verdict"] == "FAIL"
    assert judge("timeout", 200.0, 200.0, 0)["verdict"] == "FAIL"
    assert judge("timeout", 120.0, 120.0, 0)["verdict"] == "n/a"
    assert judge("ok", 30.0, 200.0, 0)["verdict"] == "n/a"


# ---- README's table ------------------------------------------------------------------------------

def test_readme_lists_what_has_run_on_a_gpu_as_generated_from_the_committed_outputs():
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    assert paths_table.current_section(readme) == paths_table.section(REPO / "results" / "reference")


def test_the_table_names_each_path_where_it_last_ran(tmp_path):
    assert "No GPU path has run yet" in paths_table.table([])
    out = tmp_path / "H100-2027-01-02"
    out.mkdir()
    steps = [{"name": "nccl", "status": "ok"}, {"name": "p2p", "status": "n/a"}, {"name": "timing", "status": "failed"}]
    (out / "summary.json").write_text(json.dumps({"gpu": True, "steps": steps}))
    (tmp_path / "cpu-dry").mkdir()
    (tmp_path / "cpu-dry" / "summary.json").write_text(json.dumps({"gpu": False, "steps": steps}))
    text = paths_table.table(paths_table.gpu_outputs(tmp_path))
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in text.splitlines()}
    assert "| yes | yes | `results/reference/H100-2027-01-02`" in lines["NCCL collective at world 1"]
    assert "| no | n/a |" in lines["NCCL batched P2P (the Works it returns)"]
    assert "| yes | failed |" in lines["CUDA-event and CUDA-graph timing"]
    assert "| no | — | — |" in lines["NVML energy and power read"]


def test_the_autotuners_picks_are_read_from_the_log():
    from hpcbench.acceptance.steps import autotune_picks

    log = ("noise\nTriton autotuning for function _matmul_tma_kernel,\nwith key as (8192, 8192, 8192, 0, 'torch.bfloat16'),\n"
           "finished after 3.25s,\nbest config selected: BLOCK_M: 128, BLOCK_N: 256, WARP_SPECIALIZE: True, num_warps: 4, "
           "num_ctas: 1, num_stages: 3, maxnreg: None;\nmore noise")
    [pick] = autotune_picks(log)
    assert pick["kernel"] == "_matmul_tma_kernel" and pick["seconds"] == 3.25
    assert pick["key"].startswith("(8192, 8192") and "WARP_SPECIALIZE: True" in pick["config"]
    assert autotune_picks("no tuning here") == []
