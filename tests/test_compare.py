"""hpcbench compare: the join, the statistics on samples with known answers, the CLI and bad input."""

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest

from hpcbench.analysis.compare import FASTER, FEW, SAME, SLOWER, compare_frames
from hpcbench.core.cli import main
from hpcbench.api.errors import UserError
from hpcbench.results import SCHEMA_VERSION, RunWriter

SHAPES = [(128, 64, 64), (256, 64, 64), (512, 64, 64), (1024, 64, 64)]


def _rows(n_samples: int, shift: dict | None = None, seed: int = 0, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    rows = []
    for m, n, k in shapes:
        s = rng.lognormal(np.log(1e-3 * (shift or {}).get(m, 1.0)), 0.03, n_samples).tolist()
        rows.append({"benchmark": "gemm", "M": m, "N": n, "K": k, "kernel": "triton_bf16", "status": "ok",
                     "reason": None, "median_s": float(np.median(s)), "samples_s": s})
    return rows


def _frame(rows, **meta):
    df = pd.DataFrame(rows)
    df.attrs["metadata"] = meta
    return df


def _verdicts(c):
    return dict(zip(c.points["M"].astype(int), c.points["verdict"]))


def test_identical_distributions_show_no_change():
    c = compare_frames(_frame(_rows(30, seed=1)), _frame(_rows(30, seed=2)))
    assert set(_verdicts(c).values()) == {SAME}
    assert ((c.points["ci_low"] < 1) & (c.points["ci_high"] > 1)).all()  # every CI covers "no change"


def test_a_ten_percent_shift_with_30_samples_is_significant_both_ways():
    c = compare_frames(_frame(_rows(30, seed=1)), _frame(_rows(30, {256: 1.10, 512: 1 / 1.10}, seed=2)))
    assert _verdicts(c) == {128: SAME, 256: SLOWER, 512: FASTER, 1024: SAME}
    slow = c.points[c.points["M"] == 256].iloc[0]
    assert slow.p_value < 1e-6 and 1.05 < slow.ratio < 1.15 and slow.ci_low > 1.0 and slow.ci_high < 1.2
    assert list(c.regressions(5.0)["M"]) == [256] and c.regressions(20.0).empty


def test_three_samples_are_not_enough_evidence_and_say_so():
    c = compare_frames(_frame(_rows(3, seed=1)), _frame(_rows(3, {256: 1.5}, seed=2)))
    assert set(_verdicts(c).values()) == {FEW}  # even a 50 % change: 3 vs 3 cannot reach p < 0.05
    assert np.allclose(c.points["min_p"], 0.1)


def test_a_significant_but_tiny_change_is_below_the_minimum_effect():
    rows_a = _rows(200, seed=1)
    rows_b = _rows(200, {256: 1.01}, seed=2)
    for r in rows_a + rows_b:  # many samples: a 1 % shift is significant
        r["samples_s"] = sorted(r["samples_s"])
    c = compare_frames(_frame(rows_a), _frame(rows_b))
    assert _verdicts(c)[256] == SAME and c.points.loc[c.points["M"] == 256, "p_value"].iloc[0] < 0.05


def test_join_is_on_parameters_not_row_order_and_lone_points_are_listed():
    a = _rows(10, seed=1)
    b = list(reversed(_rows(10, {1024: 2.0}, seed=2, shapes=SHAPES[1:] + [(2048, 64, 64)])))
    for r in b:
        r["M"] = float(r["M"])  # a float column (as pandas makes it next to a NaN) still meets the ints
    c = compare_frames(_frame(a, torch_version="2.12", gpu_name="H100"), _frame(b, torch_version="2.13", gpu_name="H100"))
    assert sorted(_verdicts(c)) == [256, 512, 1024] and _verdicts(c)[1024] == SLOWER
    assert c.labels(c.only_a) == ["M=128 N=64 K=64 kernel=triton_bf16 pass=fprop"]  # runs before gemm.passes: fprop
    assert c.labels(c.only_b) == ["M=2048 N=64 K=64 kernel=triton_bf16 pass=fprop"]
    assert c.environment == [("torch_version", "2.12", "2.13")]


def test_failed_points_are_not_compared_and_count_as_regressions():
    a, b = _rows(10, seed=1), _rows(10, seed=2)
    b[0].update(status="failed", reason="calc_diff 0.2 > 0.001", median_s=None, samples_s=None)
    c = compare_frames(_frame(a), _frame(b))
    row = c.points[c.points["M"] == 128].iloc[0]
    assert row.verdict == "not compared" and row.note == "failed in B: calc_diff 0.2 > 0.001"
    assert list(c.regressions(50.0)["M"]) == [128]


def test_nothing_in_common_is_a_user_error():
    with pytest.raises(UserError, match="no point in common"):
        compare_frames(_frame(_rows(5, shapes=SHAPES[:1])), _frame(_rows(5, shapes=SHAPES[1:])))


# ---- CLI ------------------------------------------------------------------------------------------

def _run(path, rows, **meta):
    w = RunWriter(path)
    w.write_metadata({"schema_version": SCHEMA_VERSION, "run_id": path.name, "suite": ["gemm"], **meta})
    for r in rows:
        w.append(r)
    w.close()
    return path


def test_cli_formats_and_the_regression_gate(tmp_path, capsys):
    a = _run(tmp_path / "base", _rows(30, seed=1), nccl_version="2.21.5")
    b = _run(tmp_path / "new", _rows(30, {256: 1.10}, seed=2), nccl_version="2.23.4")
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "nccl_version" in out and "2.23.4" in out and "slower" in out and "1 slower" in out
    assert main(["compare", str(a), str(b), "--fail-on-regression", "5"]) == 1
    assert main(["compare", str(a), str(b), "--fail-on-regression", "15"]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "| benchmark | point | A | B | B/A | 95% CI | p | verdict |" in md and "🔴 slower" in md
    assert main(["compare", str(a), str(b), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 4 and {r["verdict"] for r in table} == {SLOWER, SAME}
    assert main(["compare", str(a), str(b), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["environment_differences"] == [{"field": "nccl_version", "a": "2.21.5", "b": "2.23.4"}]


@pytest.mark.parametrize("in_b,names", [
    ("missing", "missing in B"),
    ("skipped", "skipped in B"),
    ("too few samples", "too few samples in B"),
    ("no samples", "no raw samples in B"),
])
def test_the_gate_fails_on_a_point_that_b_did_not_measure_unless_allowed(in_b, names, tmp_path, capsys):
    """A point of A that vanished from B, or that B skipped or left with too few samples, fails the
    gate (a kernel that crashes before writing its row must not pass CI); --allow-missing passes it."""
    a_rows, b_rows = _rows(30, seed=1), _rows(30, seed=2)
    if in_b == "missing":
        b_rows = b_rows[1:]
    elif in_b == "skipped":
        b_rows[0].update(status="skipped", reason="out of device memory", median_s=None, samples_s=None)
    elif in_b == "too few samples":
        b_rows[0]["samples_s"] = b_rows[0]["samples_s"][:1]  # 30 against 1 cannot reach p < 0.05
    else:
        b_rows[0]["samples_s"] = None
    a, b = _run(tmp_path / "a", a_rows), _run(tmp_path / "b", b_rows)
    assert main(["compare", str(a), str(b), "--fail-on-regression", "5"]) == 1
    err = capsys.readouterr().err
    assert "1 point(s) measured in A have no measurement in B" in err and f"M=128 N=64 K=64" in err and names in err
    assert main(["compare", str(a), str(b), "--fail-on-regression", "5", "--allow-missing"]) == 0
    assert main(["compare", str(a), str(b)]) == 0  # without the gate: a report, not a verdict
    # B measured what A had, and more: nothing is missing
    assert main(["compare", str(a), str(_run(tmp_path / "c", _rows(30, seed=3) + _rows(30, seed=4, shapes=[(64, 64, 64)]))),
                 "--fail-on-regression", "5"]) == 0


def test_a_point_too_thin_in_both_runs_is_not_a_missing_one(tmp_path):
    a, b = _run(tmp_path / "a", _rows(3, seed=1)), _run(tmp_path / "b", _rows(3, seed=2))
    assert main(["compare", str(a), str(b), "--fail-on-regression", "5"]) == 0


def test_a_cpu_fallback_run_is_said_on_the_verdict_line(tmp_path, capsys):
    a = _run(tmp_path / "a", _rows(30, seed=1), fallback=True)
    b = _run(tmp_path / "b", _rows(30, {256: 1.10}, seed=2), fallback=True)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    verdict_line = out.strip().splitlines()[-1]
    assert "1 slower" in verdict_line and "(CPU fallback in A and B: not a GPU result)" in verdict_line
    assert "A and B ran on the CPU fallback" in out
    gpu = _run(tmp_path / "g", _rows(30, seed=3), fallback=False)
    assert main(["compare", str(gpu), str(b)]) == 0
    assert "(CPU fallback in B: not a GPU result)" in capsys.readouterr().out
    assert main(["compare", str(gpu), str(gpu)]) == 0
    assert "CPU fallback" not in capsys.readouterr().out


def test_cli_reads_exports_and_damaged_runs(tmp_path, capsys):
    a = _run(tmp_path / "base", _rows(30, seed=1))
    b = _run(tmp_path / "new", _rows(30, seed=2))
    with open(b / "rows.jsonl", "a") as f:
        f.write('{"benchmark": "gemm", "M": 9')  # cut mid-write
    assert main(["export", str(a), str(tmp_path / "base.parquet")]) == 0
    assert main(["compare", str(tmp_path / "base.parquet"), str(b)]) == 0
    captured = capsys.readouterr()
    assert "truncated last row" in captured.err and "4 matched points" in captured.out


@pytest.mark.parametrize("args,message", [
    (["{tmp}/missing", "{tmp}/base"], "no such run"),
    (["{tmp}", "{tmp}/base"], "not a results run"),
    (["{tmp}/base", "{tmp}/other"], "no point in common"),
    (["{tmp}/base", "{tmp}/base", "--benchmark", "pipeline"], "no rows of pipeline"),
    (["{tmp}/base", "{tmp}/base", "--alpha", "2"], "--alpha"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    _run(tmp_path / "base", _rows(5, shapes=SHAPES[:2]))
    _run(tmp_path / "other", _rows(5, shapes=SHAPES[2:]))
    assert main(["compare", *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_vectorised_mann_whitney_matches_scipy_with_ties():
    from scipy.stats import mannwhitneyu

    from hpcbench.analysis.compare import mann_whitney_p

    rng = np.random.default_rng(3)
    a = np.sort(np.round(rng.normal(10, 1, (200, 20)), 1), axis=1)  # rounding makes ties, as timer ticks do
    b = np.sort(np.round(rng.normal(10.3, 1, (200, 25)), 1), axis=1)
    expected = mannwhitneyu(a, b, axis=1, alternative="two-sided", method="asymptotic").pvalue
    assert np.allclose(mann_whitney_p(a, b, chunk=64)[0], expected, rtol=1e-9, atol=1e-12)
    same = np.ones((3, 12))
    assert (mann_whitney_p(same, same)[0] == 1.0).all()  # all tied: no evidence at all


def test_large_samples_use_ranks_and_still_match_scipy():
    from scipy.stats import mannwhitneyu

    from hpcbench.analysis.compare import mann_whitney_p

    rng = np.random.default_rng(4)
    a = np.sort(np.round(rng.normal(10, 1, (50, 40)), 1), axis=1)  # 40 x 45 pairs: the rank path
    b = np.sort(np.round(rng.normal(10.2, 1, (50, 45)), 1), axis=1)
    p, exact = mann_whitney_p(a, b)
    assert not exact.any()
    assert np.allclose(p, mannwhitneyu(a, b, axis=1, method="asymptotic").pvalue, rtol=1e-9, atol=1e-12)


def test_small_samples_are_exact_row_by_row_and_ties_fall_back_to_the_approximation():
    from scipy.stats import mannwhitneyu

    from hpcbench.analysis.compare import mann_whitney_p

    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 2.0, 4.0]])
    b = np.array([[5.0, 6.0, 7.0, 8.0], [5.0, 6.0, 7.0, 8.0]])
    p, exact = mann_whitney_p(a, b)
    assert list(exact) == [True, False]
    assert p[0] == pytest.approx(2 / 70)  # exact: complete separation of 4 and 4
    assert p[1] == pytest.approx(mannwhitneyu(a[1], b[1], method="asymptotic").pvalue)


def test_key_columns_of_different_types_and_param_lists_still_join():
    a = _rows(10, seed=1)
    b = _rows(10, seed=2)
    for r in a:
        r["root"] = None  # all missing: a float column on this side
    for r in b[:2]:
        r["root"] = "n/a"  # text on the other side, for two points
    fa, fb = _frame(a, params={"gemm": ["M", "N", "K", "kernel", "root"]}), _frame(b, params={"gemm": ["M", "N", "K", "kernel"]})
    c = compare_frames(fa, fb)
    assert len(c.points) == 2 and len(c.only_a) == 2 and len(c.only_b) == 2  # joined as text, no crash
    assert any("different columns" in n for n in c.notes)
    c = compare_frames(fa, _frame([{k: v for k, v in r.items() if k != "root"} for r in b], params={"gemm": ["M", "N", "K", "kernel"]}))
    assert len(c.points) == 4 and c.only_a.empty  # a column one run lacks is blank there


def test_gemm_runs_from_before_passes_join_the_forward_pass_only():
    old = _rows(10, seed=1)  # no `pass` column, recorded params without it
    new = [{**r, "pass": p} for r in _rows(10, seed=2) for p in ("fprop", "wgrad")]
    c = compare_frames(_frame(old, params={"gemm": ["M", "N", "K", "kernel"]}),
                       _frame(new, params={"gemm": ["M", "N", "K", "kernel", "pass"]}))
    assert len(c.points) == 4 and set(c.points["pass"]) == {"fprop"}  # the old rows were forward GEMMs
    assert c.only_a.empty and len(c.only_b) == 4 and set(c.only_b["pass"]) == {"wgrad"}


def test_damaged_samples_are_flagged_not_fatal():
    a, b = _rows(10, seed=1), _rows(10, seed=2)
    b[1]["samples_s"][3] = float("nan")
    b[2]["samples_s"][0] = 0.0
    c = compare_frames(_frame(a), _frame(b))
    assert _verdicts(c)[256] == "damaged samples" and _verdicts(c)[512] == "damaged samples"
    assert _verdicts(c)[128] == SAME and any("zero, negative or missing" in n for n in c.notes)


def test_the_gate_sees_significant_changes_below_the_display_minimum():
    rows_a = _rows(200, seed=1)
    rows_b = _rows(200, {256: 1.015}, seed=2)
    c = compare_frames(_frame(rows_a), _frame(rows_b))
    assert _verdicts(c)[256] == SAME  # under the 2 % shown as no change
    assert list(c.regressions(1.0)["M"]) == [256]  # but a 1 % gate catches it


def test_show_prints_the_environment_and_filters_by_benchmark(tmp_path, capsys):
    run = _run(tmp_path / "base", _rows(5), torch_version="2.13.0", status="complete")
    assert main(["show", str(run), "--benchmark", "gemm"]) == 0
    out = capsys.readouterr().out
    assert "torch_version" in out and "2.13.0" in out and "complete" in out
    assert main(["show", str(run), "--benchmark", "pipeline"]) == 2
    assert "no pipeline in this run (it has: gemm)" in capsys.readouterr().err
