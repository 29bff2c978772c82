"""The mamf family: the search's shapes and order, the MAMF and means it reports (on a fake timer, so
the best is known), resume, reading a stored run's MAMF, bad input, and one run through the CLI."""

import json
import math
from types import SimpleNamespace

import pytest

from hpcbench.benchmarks import mamf
from hpcbench.benchmarks.mamf import measure
from hpcbench.benchmarks.mamf.best import mamf_best
from hpcbench.benchmarks.mamf.sweep import Dims, arange, resolve, search_order
from hpcbench.core.context import RunContext
from hpcbench.api.errors import UserError
from hpcbench.results import load_run
from hpcbench.runtime.device import DeviceInfo, cpu_name
from hpcbench.core.testing import compose, family_config
from hpcbench.measure.timing import Timing, TimingPolicy, summarize

CPU = DeviceInfo("cpu", "test cpu", None, None, None)


# ---- the search -----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ([0, 1024, 256], [256, 512, 768]),  # start 0 means start at step; stop is exclusive
    ([100, 400, 100], [100, 200, 300]),
    ([256, 1025, 512], [256, 768]),
    ([0, 257, 256], [256]),
    ([3, 4, 7], [3]),
])
def test_a_range_is_arange_with_start_0_meaning_step(spec, expected):
    assert arange(spec, "mamf.m_range") == expected


def test_shapes_are_visited_m_then_n_then_k():
    ms, ns, ks = resolve(Dims(m_range=[0, 96, 32], n=[48, 16], k_range=[64, 193, 64]), Dims(), "mamf", "p")
    assert (ms, ns, ks) == ([32, 64], [48, 16], [64, 128, 192])
    assert search_order(ms, ns, ks) == [
        (32, 48, 64), (32, 48, 128), (32, 48, 192), (32, 16, 64), (32, 16, 128), (32, 16, 192),
        (64, 48, 64), (64, 48, 128), (64, 48, 192), (64, 16, 64), (64, 16, 128), (64, 16, 192)]


def test_each_dtype_searches_in_turn_and_given_sizes_override_the_preset():
    cfg = family_config("mamf", ["mamf.preset=tiny", "mamf.k=[32]"])
    assert mamf.points(cfg, "cpu") == [(32, 48, 32, "bf16"), (64, 48, 32, "bf16"),
                                       (32, 48, 32, "fp8"), (64, 48, 32, "fp8")]


def test_presets_are_mamf_finders_searches():
    cfg = family_config("mamf", smoke=False)
    quick = mamf.shapes_for(cfg, "cuda")  # auto on a GPU
    assert len(quick) == 79 and quick[:2] == [(256, 4096, 4096), (512, 4096, 4096)]
    assert quick[-1] == (20224, 4096, 4096)
    assert mamf.shapes_for(cfg, "cpu") == [(32, 48, 64), (64, 48, 64)]  # auto on the CPU fallback: tiny
    exhaustive = mamf.shapes_for(family_config("mamf", ["mamf.preset=exhaustive"], smoke=False), "cuda")
    assert len(exhaustive) == 15 ** 3
    assert exhaustive[:3] == [(1024, 1024, 1024), (1024, 1024, 2048), (1024, 1024, 3072)]
    assert exhaustive[15] == (1024, 2048, 1024) and exhaustive[-1] == (15360, 15360, 15360)


# ---- the MAMF on a fake timer -----------------------------------------------------------------------

# median and minimum seconds per (dtype, M); N = 48, K = 64, so 2MNK = 196608 * M / 32 FLOPs:
# bf16: M=32 1 us -> 0.196608 TFLOP/s (the best); M=64 4 us -> 0.098304 but its fastest call 0.5 us
#       -> 0.786432 (the best by max); M=96 6 us -> 0.098304
# fp8: 2 us each: 0.098304, 0.196608, 0.294912 (the best: M=96)
TIMES = {("bf16", 32): (1e-6, 1e-6), ("bf16", 64): (4e-6, 0.5e-6), ("bf16", 96): (6e-6, 6e-6),
         ("fp8", 32): (2e-6, 2e-6), ("fp8", 64): (2e-6, 2e-6), ("fp8", 96): (2e-6, 2e-6)}
THREE_M = ["mamf.preset=tiny", "mamf.m_range=[0,128,32]"]  # M = 32, 64, 96 with N = 48, K = 64


@pytest.fixture
def fake_timer(monkeypatch):
    """time_fn answers from TIMES for the shape last prepared; `measured` lists every shape timed."""
    measured, last = [], {}
    real_prepare = measure.prepare

    def prepare(M, N, K, dtype, seed, device):
        last.update(shape=(M, N, K, dtype))
        return real_prepare(M, N, K, dtype, seed, device)

    def time_fn(fn, device, policy):
        fn()
        M, _, _, dtype = last["shape"]
        median, fastest = TIMES[(dtype, M)]
        samples = [fastest, median, median]
        measured.append(last["shape"])
        return Timing(samples_s=samples, method="perf_counter", stats=summarize(samples))

    monkeypatch.setattr(measure, "prepare", prepare)
    monkeypatch.setattr(measure, "time_fn", time_fn)
    return measured


def _run(overrides, earlier=(), done=()):
    cfg = family_config("mamf", overrides)
    ctx = RunContext(device=CPU, run_id="t", timing=TimingPolicy(warmup=0, min_reps=3, max_reps=3),
                     benchmark="mamf", params=mamf.PARAMS, done=set(done), earlier={"mamf": list(earlier)})
    return list(mamf.run(cfg, ctx))


def test_the_best_is_the_planted_shape_and_the_means_are_over_every_shape(fake_timer):
    rows = _run(THREE_M)
    points = [r for r in rows if r["record"] == "point"]
    assert [(r["dtype"], r["M"], r["status"]) for r in points] == [
        ("bf16", 32, "ok"), ("bf16", 64, "ok"), ("bf16", 96, "ok"), ("fp8", 32, "ok"), ("fp8", 64, "ok"),
        ("fp8", 96, "ok")]
    assert points[1]["tflops"] == pytest.approx(0.098304) and points[1]["tflops_max"] == pytest.approx(0.786432)
    bf16, fp8 = [r for r in rows if r["record"] == "summary"]
    assert not mamf.FAMILY.is_point(bf16)
    assert (bf16["dtype"], bf16["best_shape"], bf16["shapes"]) == ("bf16", "32x48x64", 3)
    assert bf16["best_tflops"] == pytest.approx(0.196608)
    assert (bf16["best_max_shape"], bf16["best_max_tflops"]) == ("64x48x64", pytest.approx(0.786432))
    assert bf16["mean_tflops"] == pytest.approx((0.196608 + 0.098304 + 0.098304) / 3)
    assert bf16["geomean_tflops"] == pytest.approx(0.098304 * 2 ** (1 / 3))
    assert (fp8["best_shape"], fp8["best_tflops"]) == ("96x48x64", pytest.approx(0.294912))
    assert fp8["mean_tflops"] == pytest.approx(0.196608)
    assert fp8["geomean_tflops"] == pytest.approx(0.098304 * 6 ** (1 / 3))
    assert bf16["best_pct_peak"] is None  # the CPU has no peak


def test_the_best_covers_earlier_attempts_points(fake_timer):
    first = _run([*THREE_M, "mamf.dtypes=[bf16]"])
    earlier = [r for r in first if r["record"] == "point" and r["M"] == 32]  # only M=32 was stored before
    done = {("mamf", 32.0, 48.0, 64.0, "bf16")}
    fake_timer.clear()
    rows = _run([*THREE_M, "mamf.dtypes=[bf16]"], earlier=earlier, done=done)
    assert fake_timer == [(64, 48, 64, "bf16"), (96, 48, 64, "bf16")]
    (summary,) = [r for r in rows if r["record"] == "summary"]
    assert summary["best_shape"] == "32x48x64" and summary["shapes"] == 3


def test_a_failed_check_reports_no_speed_and_no_mamf(fake_timer):
    rows = _run(["mamf.preset=tiny", "mamf.tol_bf16=1e-30"])
    bf16 = [r for r in rows if r["dtype"] == "bf16"]
    assert all(r["status"] == "failed" and "tolerance" in r["reason"] and "tflops" not in r for r in bf16)
    assert [r["dtype"] for r in rows if r["record"] == "summary"] == ["fp8"]
    assert {s[3] for s in fake_timer} == {"fp8"}  # a failed point is never timed


def test_fp8_is_skipped_with_a_reason_where_it_cannot_run(monkeypatch):
    old_gpu = SimpleNamespace(kind="cuda", capability=(8, 0))
    assert "compute capability >= 8.9, this GPU has 8.0" in measure.skip_reason("fp8", old_gpu)
    assert measure.skip_reason("bf16", old_gpu) is None

    def refuse(*args, **kwargs):
        raise RuntimeError("_scaled_mm_out is not implemented for CPU\nmore detail")

    monkeypatch.setattr(measure, "_probed", {})
    monkeypatch.setattr(measure.torch, "_scaled_mm", refuse)
    rows = _run(["mamf.preset=tiny"])
    fp8 = [r for r in rows if r["dtype"] == "fp8"]
    assert len(fp8) == 2 and all(r["status"] == "skipped" for r in fp8)
    assert fp8[0]["reason"] == "torch._scaled_mm does not run on cpu: _scaled_mm_out is not implemented for CPU"


def test_the_accelerator_warm_up_runs_before_the_sweep_and_is_no_point(fake_timer):
    rows = _run(["mamf.preset=tiny", "mamf.dtypes=[bf16]", "mamf.warmup_s=0.2"])
    assert len([r for r in rows if r["record"] == "point"]) == 2
    assert all(s["warmup_s"] >= 0.2 for s in rows if s["record"] == "summary")


def test_a_large_search_lists_the_fastest_shapes_and_prints_the_mamf_last():
    from rich.console import Console

    from hpcbench.benchmarks.mamf.table import table

    # 60 bf16 shapes, M = 1..60 with 1 us each (so M=60 is the fastest), and 30 fp8 ones skipped
    rows = [{"record": "point", "dtype": "bf16", "M": m, "N": 1000, "K": 1000, "status": "ok",
             "median_s": 1e-6, "tflops": 2 * m * 1000 * 1000 / 1e-6 / 1e12} for m in range(1, 61)]
    rows += [{"record": "point", "dtype": "fp8", "M": m, "N": 1000, "K": 1000, "status": "skipped",
              "reason": "FP8 needs compute capability >= 8.9, this GPU has 8.0"} for m in range(1, 31)]
    console = Console(width=250, record=True)
    console.print(table(rows, fallback=False))
    text = console.export_text()
    assert "60×1000×1000" in text and "51×1000×1000" in text and "50×1000×1000" not in text
    assert text.count("skipped") == 10 and "70 more in the run's rows" in text
    assert text.rstrip().endswith("MAMF bf16: 120 TFLOP/s at M×N×K 60×1000×1000")


# ---- resume and the stored MAMF -------------------------------------------------------------------

def test_an_interrupted_run_resumes_without_measuring_a_point_twice(fake_timer, monkeypatch, tmp_path):
    from hpcbench.core import runner
    from hpcbench.core.plan import plan_run

    run_dir = tmp_path / "results" / "mamf-run"
    cfg = plan_run(compose(["mamf"], [*THREE_M, "mamf.dtypes=[bf16]", "device=cpu"]))
    real_measure = measure.measure

    def cut_after_two(M, N, K, dtype, cfg, ctx):
        if len(fake_timer) == 2:
            raise RuntimeError("node lost")
        return real_measure(M, N, K, dtype, cfg, ctx)

    monkeypatch.setattr(measure, "measure", cut_after_two)
    with pytest.raises(RuntimeError, match="node lost"):
        runner.run_rank(cfg, run_dir)
    assert json.loads((run_dir / "metadata.json").read_text())["status"] == "error"
    assert fake_timer == [(32, 48, 64, "bf16"), (64, 48, 64, "bf16")]
    monkeypatch.setattr(measure, "measure", real_measure)
    assert runner.run_rank(cfg, run_dir) == 0
    assert fake_timer[2:] == [(96, 48, 64, "bf16")]  # only what the first attempt lacked
    df = load_run(run_dir)
    points = df[df.record == "point"]
    assert sorted(points.M.astype(int)) == [32, 64, 96] and (points.status == "ok").all()
    summary = df[df.record == "summary"].iloc[-1]
    assert summary.best_shape == "32x48x64" and summary.shapes == 3  # found by the first attempt
    assert summary.mean_tflops == pytest.approx((0.196608 + 0.098304 + 0.098304) / 3)
    assert mamf_best(str(run_dir)) == (cpu_name(), {"bf16": pytest.approx(0.196608)})


def test_mamf_best_refuses_what_is_not_a_run_or_has_no_mamf_rows(tmp_path):
    with pytest.raises(UserError, match="not a results run"):
        mamf_best(str(tmp_path))
    with pytest.raises(UserError, match="no such run"):
        mamf_best(str(tmp_path / "absent"))
    run = tmp_path / "gemm-only"
    run.mkdir()
    (run / "metadata.json").write_text(json.dumps({"schema_version": 2, "device_name": "NVIDIA H200"}))
    (run / "rows.jsonl").write_text(json.dumps({"benchmark": "gemm", "status": "ok", "tflops": 700.0,
                                                "dtype": "bf16", "M": 1, "N": 1, "K": 1}) + "\n"
                                    + json.dumps({"benchmark": "mamf", "record": "point", "status": "failed",
                                                  "dtype": "bf16", "M": 1, "N": 1, "K": 1}) + "\n")
    with pytest.raises(UserError, match="no ok mamf rows") as err:
        mamf_best(str(run))
    assert "\n" not in str(err.value)
    with (run / "rows.jsonl").open("a") as f:  # a summary row is not a point: it is never the MAMF
        f.write(json.dumps({"benchmark": "mamf", "record": "summary", "status": "ok", "dtype": "fp8",
                            "tflops": 5000.0}) + "\n")
        f.write(json.dumps({"benchmark": "mamf", "record": "point", "status": "ok", "dtype": "fp8",
                            "M": 1, "N": 1, "K": 1, "tflops": 1400.0}) + "\n")
    assert mamf_best(str(run)) == ("NVIDIA H200", {"fp8": 1400.0})


# ---- the command line ---------------------------------------------------------------------------

BAD = [
    ("mamf.m_range=[1024,512,256]", "mamf.m_range=[1024, 512, 256]: empty range (start 1024 >= stop 512)"),
    ("mamf.n_range=[0,1024,0]", "mamf.n_range=[0, 1024, 0]: step must be positive"),
    ("mamf.k_range=[0,1024,-256]", "mamf.k_range=[0, 1024, -256]: step must be positive"),
    ("mamf.m_range=[0,100,256]", "mamf.m_range=[0, 100, 256]: no sizes (start 0 means start at step 256"),
    ("mamf.m_range=[0,1024]", "a range is [start, stop, step]"),
    ("mamf.dtypes=[]", "mamf.dtypes is empty"),
    ("mamf.dtypes=[fp16]", "mamf.dtypes"),
    ("mamf.m=[0,256]", "mamf.m=[0, 256]: sizes must be positive integers"),
    ("mamf.k=[256,256]", "256 appears more than once"),
    ("mamf.preset=huge", "mamf.preset='huge': no such preset (available: auto, tiny, quick, exhaustive)"),
    ("mamf.warmup_s=-1", "mamf.warmup_s must be >= 0"),
]


@pytest.mark.parametrize("bad,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_before_a_run_directory(tmp_path, monkeypatch, capsys, bad, needle):
    from hpcbench.core.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["benchmark=mamf", bad]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_both_a_list_and_a_range_for_one_dimension_is_refused(tmp_path, monkeypatch, capsys):
    from hpcbench.core.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["benchmark=mamf", "mamf.m=[256]", "mamf.m_range=[0,1024,256]"]) == 2
    assert "mamf.m: give either mamf.m or mamf.m_range, not both" in capsys.readouterr().err


@pytest.mark.subprocess
def test_cli_runs_a_tiny_search_and_show_report_read_it(cli, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    from hpcbench.core.cli import main

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])

    out = cli("benchmark=mamf", env={"HPCBENCH_RUN_ID": "tiny"}, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "MAMF: maximum achievable matmul FLOPS" in out.stdout
    run_dir = tmp_path / "results" / "tiny"
    df = load_run(run_dir)
    points, summaries = df[df.record == "point"], df[df.record == "summary"]
    assert len(points) == 4 and (points.status == "ok").all() and (points.calc_diff <= 2e-5).all()
    assert (points.preset == "tiny").all() and (points.fallback == True).all()
    for r in summaries.to_dict("records"):
        mine = points[points.dtype == r["dtype"]]
        best = mine.loc[mine.tflops.idxmax()]
        M, N, K = int(best.M), int(best.N), int(best.K)
        assert r["best_shape"] == f"{M}x{N}x{K}" and r["best_tflops"] == best.tflops
        assert r["warmup_s"] == 0  # none on the CPU fallback by default
        assert f"MAMF {r['dtype']}: {r['best_tflops']:.4g} TFLOP/s at M×N×K {M}×{N}×{K}" in out.stdout
    device, best = mamf_best(str(run_dir))
    assert device == df.attrs["metadata"]["device_name"] and set(best) == {"bf16", "fp8"}
    assert all(math.isclose(best[d], points[points.dtype == d].tflops.max()) for d in best)
    assert main(["show", str(run_dir)]) == 0
    assert "MAMF bf16:" in capsys.readouterr().out
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "mamf_tflops_over_m.png").is_file()
    assert "## MAMF: maximum achievable matmul FLOPS" in (tmp_path / "rep" / "report.md").read_text()
    # the plot's lines are the stored points: TFLOP/s over M per (dtype, N, K) of the run "tiny"
    (fig,) = figures
    (ax,) = fig.axes
    drawn = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()}
    want = {f"tiny · {dtype} N={n:g} K={k:g}": g.sort_values("M")[["M", "tflops"]].astype(float).values.tolist()
            for (dtype, n, k), g in points.groupby(["dtype", "N", "K"])}
    assert drawn == want


def test_tflops_over_m_plots_each_runs_median_tflops_per_m_and_keeps_the_best_lines(tmp_path, monkeypatch):
    import pandas as pd
    from matplotlib.figure import Figure

    from hpcbench.benchmarks.mamf.report import MAX_LINES, tflops_over_m

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    rows = []
    for r, run in enumerate(("run-a", "run-b")):
        for dtype, peak in (("bf16", 989.0), ("fp8", 1979.0)):
            for n, k in ((1024, 2048), (4096, 4096)):
                for m in (4096, 256, 1024):  # not in M order
                    tflops = m / 10 + n / 100 + k / 1000 + 100 * r + (500 if dtype == "fp8" else 0)
                    rows.append({"run": run, "record": "point", "dtype": dtype, "M": m, "N": n, "K": k,
                                 "tflops": tflops, "peak_tflops": peak})
    df = pd.DataFrame(rows)
    # run-a's bf16 1024x2048 at M=1024 measured twice more (an earlier attempt): the median is the first
    again = df[(df["run"] == "run-a") & (df["dtype"] == "bf16") & (df["N"] == 1024) & (df["M"] == 1024)]
    df2 = pd.concat([df, again.assign(tflops=again["tflops"] * 4), again.assign(tflops=again["tflops"] / 4)])
    p = tflops_over_m(df2, tmp_path)
    assert p.note is None and len(p.series) == 8
    (fig,) = figures
    (ax,) = fig.axes
    drawn = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()}
    for (run, dtype, n, k), g in df.groupby(["run", "dtype", "N", "K"]):
        g = g.sort_values("M")
        assert drawn.pop(f"{run} · {dtype} N={n} K={k}") == [[m, t] for m, t in zip(g["M"], g["tflops"])]
    assert {label: xy[0][1] for label, xy in drawn.items()} == {  # left: the dense peaks
        "bf16 dense peak 989 TFLOP/s": 989.0, "fp8 dense peak 1979 TFLOP/s": 1979.0}
    assert ax.get_xlabel() == "M" and ax.get_ylabel() == "TFLOP/s (median time)"
    assert [t.get_text() for t in ax.get_legend().get_texts()][:8] == p.series

    # more lines than MAX_LINES: those reaching the highest TFLOP/s, best first
    many = pd.DataFrame([{"run": "run-a", "dtype": "bf16", "M": m, "N": 256 * (i + 1), "K": 512,
                          "tflops": 10.0 * i + m / 1000, "peak_tflops": None}
                         for i in range(MAX_LINES + 3) for m in (512, 1024)])
    figures.clear()
    p = tflops_over_m(many, tmp_path)
    kept = [f"run-a · bf16 N={256 * (i + 1)} K=512" for i in reversed(range(3, MAX_LINES + 3))]
    assert p.series == kept
    assert p.note == f"the {MAX_LINES} of {MAX_LINES + 3} (N, K, dtype) lines reaching the highest TFLOP/s"
    assert [line.get_label() for line in figures[0].axes[0].get_lines()] == kept
