"""hpcbench report: one PNG per family present, runs overlaid, report.md/.html linking every plot."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from hpcbench.analysis import blocks, report
from hpcbench.benchmarks.collectives import report as collectives_report
from hpcbench.benchmarks.ddp_overlap import report as ddp_report
from hpcbench.benchmarks.fingerprint import report as fingerprint_report
from hpcbench.benchmarks.gemm import report as gemm_report
from hpcbench.benchmarks.overlap import report as overlap_report
from hpcbench.benchmarks.pipeline import report as pipeline_report
from hpcbench.core import cli
from hpcbench.api import registry
from hpcbench.api.errors import UserError
from hpcbench.results import RunWriter, find_runs, load_run
from hpcbench.results.schema import SCHEMA_VERSION

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KERNELS = [("torch_bf16", "torch", "bf16"), ("triton_bf16", "triton", "bf16"),
           ("torch_fp8_tensor", "torch", "fp8"), ("triton_fp8_row", "triton", "fp8"),
           ("triton_fp8_block", "triton", "fp8")]


# ---- fixtures: rows shaped like the benchmarks' -----------------------------------------------

def _meta(run_id: str, fallback: bool) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id, "device_name": "NVIDIA H100 80GB HBM3",
            "gpu_name": None if fallback else "NVIDIA H100 80GB HBM3", "gpu_count": 0 if fallback else 8,
            "driver_version": None if fallback else "550.54.15", "cuda_runtime": None if fallback else "12.4",
            "torch_version": "2.13.0", "nccl_version": None, "world_size": 2, "status": "complete",
            "fallback": fallback, "points": None, "started_at": "2026-01-01T00:00:00+00:00"}


def _row(run_id: str, benchmark: str, fallback: bool, status: str = "ok", **cols) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id, "benchmark": benchmark, "status": status,
            "reason": None if status == "ok" else "tolerance missed", "fallback": fallback, **cols}


def gemm_rows(run_id, shapes=((128, 128, 256), (1024, 1024, 1024), (4096, 4096, 4096)), fallback=False,
              speed=1.0):
    rows = []
    for m, n, k in shapes:
        flops = 2 * m * n * k
        for kernel, backend, dtype in KERNELS:
            # fp8 twice as fast as bf16 on triton, 1.5x on torch: speedups the test can check exactly
            base = flops / 400e12 / speed
            median_s = base / (2.0 if backend == "triton" else 1.5) if dtype == "fp8" else base
            peak = None if fallback else (989.0 if dtype == "bf16" else 1979.0)
            speedup = base / median_s if dtype == "fp8" else None
            rows.append(_row(run_id, "gemm", fallback, M=m, N=n, K=k, kernel=kernel, backend=backend, dtype=dtype,
                             flops=flops, median_s=median_s, tflops=flops / median_s / 1e12, peak_tflops=peak,
                             speedup_vs_bf16=speedup, device="cpu" if fallback else "NVIDIA H100 80GB HBM3"))
    return rows


def collectives_rows(run_id, fallback=False):
    rows = []
    for coll in ("all_reduce", "all_gather"):
        for placement in ("in_place", "out_of_place"):
            for size in (8, 1024, 1 << 20, 1 << 24):
                t_us = 10 + size / 1e5
                rows.append(_row(run_id, "collectives", fallback, record="measurement", collective=coll,
                                 placement=placement, size_bytes=size, time_us=t_us,
                                 algbw_GBps=size / t_us / 1e3, busbw_GBps=size / t_us / 1e3))
    # a fitted model row: not a measurement, must not be plotted
    rows.append(_row(run_id, "collectives", fallback, record="alpha_beta_fit", collective="all_reduce",
                     placement="in_place", alpha_us=5.0))
    return rows


def overlap_rows(run_id, fallback=False):
    return [_row(run_id, "overlap", fallback, collective="all_reduce", comm_bytes=size, t_comp_us=100.0,
                 t_comm_us=60.0 * i, t_seq_us=100 + 60.0 * i, t_ovl_us=110.0 + 10 * i, hidden_fraction=0.8,
                 speedup_vs_seq=1.3, exposed_comm_us=10.0 * i)
            for i, size in enumerate((1 << 16, 1 << 20, 1 << 24), start=1)]


def ddp_rows(run_id, fallback=False):
    rows = [_row(run_id, "ddp_overlap", fallback, mode="no_comm", bucket_cap_mb=None, step_us=1000.0,
                 exposed_comm_us=0.0),
            _row(run_id, "ddp_overlap", fallback, mode="post_backward", bucket_cap_mb=None, step_us=1600.0,
                 exposed_comm_us=600.0)]
    rows += [_row(run_id, "ddp_overlap", fallback, mode="ddp", bucket_cap_mb=cap, step_us=1000.0 + 50 * i,
                  exposed_comm_us=50.0 * i) for i, cap in enumerate((1, 25, 100), start=1)]
    return rows


def pipeline_rows(run_id, fallback=False):
    closed = {"gpipe": 3.0, "1f1b": 3.0, "zbv": None, "dualpipev": 1.0}
    return [_row(run_id, "pipeline", fallback, schedule=s, microbatches=8, world_size=4, step_ms=10.0 + i,
                 bubble_ratio=0.3 - 0.05 * i, predicted_bubble_ratio=0.28 - 0.05 * i, measured_idle_ms=3.0 - 0.5 * i,
                 closed_form_bubble_ms=c)
            for i, (s, c) in enumerate(closed.items())]


ALL = (gemm_rows, collectives_rows, overlap_rows, ddp_rows, pipeline_rows)


def frame(run_id: str, rows: list[dict], fallback: bool = False) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df.attrs["metadata"] = _meta(run_id, fallback)
    return df


def family(rows_fn, *run_ids, **kw) -> pd.DataFrame:
    """Ok rows of one family from several runs, with the `run` column the plot functions expect."""
    return pd.concat([pd.DataFrame(rows_fn(r, **kw)).assign(run=r) for r in run_ids], ignore_index=True)


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), f"{path.name} is not a PNG"
    assert len(data) > 5_000, f"{path.name} is only {len(data)} bytes"
    height, width = imread(path).shape[:2]
    assert width >= 300 and height >= 200, f"{path.name} is {width}x{height}"


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, in order (still written to their PNG files)."""
    drawn, save = [], Figure.savefig

    def capture(fig, *args, **kw):
        drawn.append(fig)
        return save(fig, *args, **kw)

    monkeypatch.setattr(Figure, "savefig", capture)
    return drawn


def legend_texts(fig) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    return [t.get_text() for lg in legends if lg is not None for t in lg.get_texts()]


def bar_tops(container) -> dict[int, float]:
    """{category index: top of the bar} for the bars of one ax.bar call (bars sit within ±0.4 of it)."""
    return {round(p.get_x() + p.get_width() / 2): p.get_y() + p.get_height() for p in container.patches}


# ---- plots ------------------------------------------------------------------------------------

PLOTS = [
    (gemm_report.gemm_tflops, gemm_rows, "gemm_tflops.png", 5),
    (gemm_report.gemm_fp8_speedup, gemm_rows, "gemm_fp8_speedup.png", 3),  # fp8 kernels only
    (gemm_report.gemm_fp8_vs_m, gemm_rows, "gemm_fp8_vs_m.png", 3),  # fp8 kernels only
    (collectives_report.collectives_busbw, collectives_rows, "collectives_busbw.png", 4),  # 2 collectives x 2 placements
    (overlap_report.overlap_times, overlap_rows, "overlap.png", 4),  # T_comp, T_comm, T_seq, T_ovl
    (ddp_report.ddp_steps, ddp_rows, "ddp_overlap.png", 1),
    (pipeline_report.pipeline_bubble, pipeline_rows, "pipeline_bubble.png", 4),  # 2 panels x (measured, model)
]


@pytest.mark.parametrize("plot, rows, name, per_run", PLOTS, ids=[p[2] for p in PLOTS])
def test_each_plot_is_a_valid_png_and_overlays_both_runs(tmp_path, figures, plot, rows, name, per_run):
    df = family(rows, "run-a", "run-b")
    if "record" in df.columns:
        df = df[df["record"] == "measurement"]
    p = plot(df, tmp_path)
    assert p.path == tmp_path / name
    assert_png(p.path)
    assert len(p.series) == 2 * per_run
    assert sum("run-a" in s for s in p.series) == per_run
    assert sum("run-b" in s for s in p.series) == per_run
    # what the reader sees: the legend names both runs, the figure is titled with the plot's title
    (fig,) = figures
    texts = legend_texts(fig)
    assert any("run-a" in t for t in texts) and any("run-b" in t for t in texts), texts
    assert " ".join(fig.get_suptitle().split()).startswith(p.title)  # wrapped to the figure's width
    assert_readable(fig)


def test_gemm_tflops_lines_are_each_runs_median_tflops_per_shape_in_flops_order(tmp_path, figures):
    shapes = ((1024, 1024, 1024), (128, 128, 256), (4096, 4096, 4096))  # not in FLOP order
    a, b = family(gemm_rows, "run-a", shapes=shapes), family(gemm_rows, "run-b", shapes=shapes, speed=1.3)
    # a repeated point of run-a (an earlier attempt, 3x and 0.5x as fast): the median is the original
    point = a[a["M"] == 1024]
    again = [point.assign(tflops=point["tflops"] * 3), point.assign(tflops=point["tflops"] * 0.5)]
    gemm_report.gemm_tflops(pd.concat([again[0], a, again[1], b], ignore_index=True), tmp_path)
    (fig,) = figures
    (ax,) = fig.axes
    order = [(128, 128, 256), (1024, 1024, 1024), (4096, 4096, 4096)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["128×128×256", "1024×1024×1024", "4096×4096×4096"]
    lines = {ln.get_label(): ln.get_xydata() for ln in ax.get_lines()}
    for run, d in (("run-a", a), ("run-b", b)):
        for kernel, _, _ in KERNELS:
            k = d[d["kernel"] == kernel].set_index(["M", "N", "K"])
            want = [k.loc[s, "tflops"] for s in order]
            xy = lines.pop(f"{run} · {kernel}")
            np.testing.assert_allclose(xy[:, 0], [0, 1, 2])
            np.testing.assert_allclose(xy[:, 1], want, rtol=1e-12)
    # what is left: the two dtype peaks as horizontal lines at the rows' peak_tflops
    assert {label: tuple(xy[:, 1]) for label, xy in lines.items()} == {
        "bf16 peak 989 TFLOP/s": (989.0, 989.0), "fp8 peak 1979 TFLOP/s": (1979.0, 1979.0)}
    assert ax.get_ylabel() == "TFLOP/s" and ax.get_xlabel() == "shape M×N×K (ordered by FLOPs)"


def test_fp8_speedup_bars_rise_from_parity_to_each_runs_speedup(tmp_path, figures):
    a, b = family(gemm_rows, "run-a"), family(gemm_rows, "run-b")
    # run-b's FP8 kernels: 1x, 0.5x and 2x the time per shape: its speedups differ per shape and from run-a's
    factor = b["M"].map({128: 1.0, 1024: 0.5, 4096: 2.0}).where(b["dtype"] == "fp8", 1.0)
    b = b.assign(median_s=b["median_s"] * factor)
    df = pd.concat([a, b], ignore_index=True)
    p = gemm_report.gemm_fp8_speedup(df, tmp_path)
    (fig,) = figures
    (ax,) = fig.axes
    containers = {c.get_label(): c for c in ax.containers}
    assert list(containers) == p.series and len(p.series) == 2 * 3
    shapes = [(128, 128, 256), (1024, 1024, 1024), (4096, 4096, 4096)]
    for run, d in (("run-a", a), ("run-b", b)):
        t = d.set_index(["kernel", "M", "N", "K"])["median_s"]
        for kernel, backend, dtype in KERNELS:
            if dtype != "fp8":
                continue
            want = {i: t[(f"{backend}_bf16", *s)] / t[(kernel, *s)] for i, s in enumerate(shapes)}
            bars = containers[f"{run} · {kernel}"]
            assert {bar.get_y() for bar in bars.patches} == {1.0}  # from parity
            got = bar_tops(bars)
            assert got.keys() == want.keys()
            np.testing.assert_allclose([got[i] for i in want], list(want.values()), rtol=1e-12)
    assert set(np.round(list(bar_tops(containers["run-b · triton_fp8_row"]).values()), 6)) == {2.0, 4.0, 1.0}
    (parity,) = [ln for ln in ax.get_lines() if ln.get_label() == "BF16 parity (1.0)"]
    assert set(parity.get_ydata()) == {1.0}
    assert sorted(legend_texts(fig)) == sorted([*p.series, "BF16 parity (1.0)"])


def fingerprint_rows(run_id, scale=1.0):
    return [_row(run_id, "fingerprint", False, metric="matmul_bf16_tflops", unit="TFLOP/s", value=700.0 * scale,
                 anchor_value=750.0),
            _row(run_id, "fingerprint", False, metric="hbm_copy_GBps", unit="GB/s", value=3000.0 * scale,
                 anchor_value=None),
            _row(run_id, "fingerprint", False, metric="pipeline_bubble_1f1b", unit="fraction", value=0.2 * scale,
                 anchor_value=None),
            _row(run_id, "fingerprint", False, metric="all_reduce_busbw_GBps", unit="GB/s", value=None,
                 anchor_value=None)]  # no value: no panel


def test_fingerprint_bars_are_each_runs_value_per_metric_beside_its_anchor(tmp_path, figures):
    df = pd.concat([family(fingerprint_rows, "run-a"), family(fingerprint_rows, "run-b", scale=0.5)],
                   ignore_index=True)
    p = fingerprint_report.fingerprint_lines(df, tmp_path)
    assert p.series == ["run-a", "run-b"]
    (fig,) = figures
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["matmul_bf16_tflops [TFLOP/s]", "hbm_copy_GBps [GB/s]",
                                                  "pipeline_bubble_1f1b [fraction]"]
    for ax, value in zip(visible, (700.0, 3000.0, 0.2)):
        (bars,) = ax.containers
        assert bar_tops(bars) == pytest.approx({0: value, 1: value * 0.5})  # x 0: run-a, x 1: run-b
        assert [t.get_text() for t in ax.get_xticklabels()] == ["run-a", "run-b"]
    (anchor,) = visible[0].get_lines()
    assert set(anchor.get_ydata()) == {750.0} and legend_texts(fig) == ["published anchor"]
    assert not visible[1].get_lines() and not visible[2].get_lines()  # no anchor, no line


def test_fp8_speedup_divides_by_the_same_backends_bf16_kernel():
    sp = gemm_report.fp8_speedup(family(gemm_rows, "a"))
    assert set(sp["kernel"]) == {"torch_fp8_tensor", "triton_fp8_row", "triton_fp8_block"}
    assert len(sp) == 3 * 3  # 3 shapes x 3 fp8 kernels
    by = sp.set_index("kernel")
    assert set(by.loc["torch_fp8_tensor", "bf16_kernel"]) == {"torch_bf16"}
    assert set(by.loc["triton_fp8_row", "bf16_kernel"]) == {"triton_bf16"}
    np.testing.assert_allclose(by.loc["torch_fp8_tensor", "speedup"], 1.5)
    np.testing.assert_allclose(by.loc[["triton_fp8_row", "triton_fp8_block"], "speedup"], 2.0)


def test_fp8_speedup_without_a_bf16_baseline_draws_nothing(tmp_path):
    df = family(gemm_rows, "a")
    assert gemm_report.gemm_fp8_speedup(df[df["dtype"] == "fp8"], tmp_path) is None
    assert not (tmp_path / gemm_report.GEMM_SPEEDUP).exists()


def test_many_gemm_shapes_plot_without_a_label_per_shape(tmp_path, figures):
    from hpcbench.analysis.plotting import MAX_LABELLED_TICKS

    shapes = [(128 * i, 256, 512) for i in range(1, 201)]
    df = family(gemm_rows, "a", shapes=shapes)
    p = gemm_report.gemm_tflops(df, tmp_path)
    assert_png(p.path)
    assert len(p.series) == len(KERNELS)
    (fig,) = figures
    (ax,) = fig.axes
    # every shape a point (no line through 200 unrelated shapes), an even subset of them labelled
    for kernel, _, _ in KERNELS:
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == f"a · {kernel}"]
        assert line.get_linestyle() == "None" and line.get_xdata().tolist() == list(range(200))
        assert line.get_ydata().tolist() == pytest.approx(df.loc[df["kernel"] == kernel, "tflops"].tolist())
    ticks = ax.get_xticks()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert 0 < len(labels) <= MAX_LABELLED_TICKS and ticks[0] == 0
    assert labels == [f"{128 * (int(x) + 1)}×256×512" for x in ticks]


# ---- report.md / report.html ------------------------------------------------------------------

def all_families(run_id: str, fallback: bool = False, speed: float = 1.0) -> pd.DataFrame:
    rows = gemm_rows(run_id, fallback=fallback, speed=speed)
    for fn in ALL[1:]:
        rows += fn(run_id, fallback=fallback)
    return frame(run_id, rows, fallback)


def test_report_links_every_png_it_writes(tmp_path, figures):
    out = tmp_path / "rep"
    md_path = report.build_report([all_families("run-a"), all_families("run-b", speed=1.3)], out)
    assert md_path == out / "report.md"
    pngs = {p.name for p in out.glob("*.png")}
    assert len(figures) == len(pngs)
    # the runs are told apart by their run ids, and each plot holds its own family's rows only: the
    # collectives plot draws the 4 measured sizes per run, collective and placement, not the fit row
    (coll,) = [f for f in figures if f.get_suptitle() == "Collectives bus bandwidth"]
    lines = {f"{ax.get_title()}: {ln.get_label()}": ln.get_xdata().tolist()
             for ax in coll.axes for ln in ax.get_lines()}
    assert lines == {f"{c}: {run} · {p}": [8, 1024, 1 << 20, 1 << 24] for c in ("all_reduce", "all_gather")
                     for run in ("run-a", "run-b") for p in ("in_place", "out_of_place")}
    present = set(all_families("run-a")["benchmark"])  # the families these synthetic rows cover
    assert pngs == {f for name, fam in registry.families().items() if name in present for f in fam.report.plot_files}
    for name in pngs:
        assert_png(out / name)
    md = md_path.read_text()
    assert set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)) == pngs
    html = (out / "report.html").read_text()
    assert set(re.findall(r'<img src="([^"]+)"', html)) == pngs
    assert "http://" not in html and "https://" not in html  # standalone: no external resources
    # the environment table names both runs and what they ran on
    for text in ("run-a", "run-b", "550.54.15", "NVIDIA H100 80GB HBM3 × 8", "12.4"):
        assert text in md and text in html
    assert "CPU fallback" not in md
    # key numbers: the torch FP8 speedup over BF16 and the pipeline's missing closed form
    assert "| 1.5 |" in md
    assert re.search(r"\| zbv \|.*\| — \|$", md, re.MULTILINE)


def test_fallback_runs_are_flagged_as_not_performance_numbers(tmp_path):
    cpu = frame("cpu-run", ddp_rows("cpu-run", fallback=True), fallback=True)
    md = report.build_report([cpu], tmp_path / "r").read_text()
    assert "CPU fallback: not performance numbers" in md
    assert "Warning" in md


def test_tables_are_capped_and_say_how_many_rows_were_left_out(tmp_path):
    shapes = [(128 * i, 256, 512) for i in range(1, 21)]  # 20 shapes x 5 kernels = 100 detail rows
    md = report.build_report([frame("a", gemm_rows("a", shapes=shapes))], tmp_path / "r").read_text()
    assert f"{100 - blocks.MAX_TABLE_ROWS} more shape × kernel rows omitted" in md
    assert md.count("| 128×256×512 |") == len(KERNELS)  # the smallest shape comes first


def test_only_ok_rows_are_plotted_and_failures_are_listed(tmp_path):
    rows = gemm_rows("a") + [_row("a", "gemm", False, status="failed", M=8, N=8, K=8, kernel="torch_bf16",
                                  dtype="bf16")]
    md = report.build_report([frame("a", rows)], tmp_path / "r").read_text()
    assert "15 ok, 1 failed, 0 skipped" in md
    assert "tolerance missed" in md
    assert "8×8×8" not in md


def test_stale_plots_of_an_earlier_report_are_removed(tmp_path):
    out = tmp_path / "r"
    report.build_report([frame("a", pipeline_rows("a") + ddp_rows("a"))], out)
    assert (out / pipeline_report.PIPELINE).exists()
    report.build_report([frame("a", ddp_rows("a"))], out)
    assert {p.name for p in out.glob("*.png")} == {ddp_report.DDP}


def test_a_run_without_plottable_rows_is_a_user_error(tmp_path):
    failed = [_row("a", "gemm", False, status="failed", M=8, N=8, K=8, kernel="torch_bf16", dtype="bf16")]
    with pytest.raises(UserError, match="nothing to report"):
        report.build_report([frame("a", failed)], tmp_path / "r")
    with pytest.raises(UserError, match="nothing to report"):
        report.build_report([frame("b", [_row("b", "unknown_family", False)])], tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_an_output_path_that_is_a_file_is_a_user_error(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    with pytest.raises(UserError, match="not a directory"):
        report.build_report([all_families("a")], target)


def test_markdown_table_escapes_and_marks_missing_values():
    md = blocks.markdown_table(pd.DataFrame({"name": ["a|b", "c"], "value": [1.23456, np.nan]}))
    lines = md.splitlines()
    assert lines[0] == "| name | value |"
    assert lines[1] == "|---|---:|"  # numbers right-aligned
    assert lines[2] == "| a\\|b | 1.235 |"
    assert lines[3] == "| c | — |"


# ---- the command, on runs written by the results store ----------------------------------------

def write_run(root, run_id: str, rows: list[dict], fallback: bool = False):
    writer = RunWriter(root / run_id)
    writer.write_metadata(_meta(run_id, fallback))
    for row in rows:
        writer.append(row)
    writer.close()
    return root / run_id


def test_main_reports_stored_runs_into_the_default_directory(tmp_path, monkeypatch, capsys):
    a = write_run(tmp_path, "20260101-000000-a", overlap_rows("20260101-000000-a") + ddp_rows("20260101-000000-a"))
    b = write_run(tmp_path, "20260101-000000-b", overlap_rows("20260101-000000-b"))
    assert "metadata" in load_run(a).attrs
    monkeypatch.chdir(tmp_path)
    assert report.main([str(a), str(b)]) == 0
    out = tmp_path / "report-20260101-000000-a"
    assert {p.name for p in out.glob("*.png")} == {overlap_report.OVERLAP, ddp_report.DDP}
    md = (out / "report.md").read_text()
    assert "20260101-000000-a" in md and "20260101-000000-b" in md
    assert "report.md" in capsys.readouterr().out


def test_main_rejects_an_empty_argument_list():
    from hpcbench.api.errors import UserError

    with pytest.raises(UserError, match=r"^report: the following arguments are required: RUN \(`hpcbench report --help`"):
        report.main([])


# ---- the contract on real runs: every registered family, measured at smoke size -----------------

@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """One run of the single-process families and one of the multi-rank ones (local gloo ranks)."""
    root = tmp_path_factory.mktemp("smoke-runs")
    fams = registry.families()
    for group in ([n for n, f in fams.items() if not f.distributed], [n for n, f in fams.items() if f.distributed]):
        if group:
            names = ",".join(group)
            smoke = [o for n in group for o in fams[n].smoke]
            status = cli.main([f"benchmark=[{names}]", f"suite=[{names}]", f"results_root={root}",
                               "dist.timeout_s=120", *smoke])
            assert status == 0, (group, status)
    return find_runs(root)


def assert_readable(fig) -> None:
    """What a reader of the HTML report sees: the title inside the figure, legend text of at least
    8 pt once the page has shrunk a wide figure to its column."""
    from hpcbench.analysis.plotting import SHOWN_WIDTH_IN

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # constrained layout places everything as the saved PNG has it
    box, title = fig.bbox, fig._suptitle.get_window_extent(renderer)
    assert box.x0 - 1 <= title.x0 and title.x1 <= box.x1 + 1 and title.y1 <= box.y1 + 1, (fig.get_suptitle(), title, box)
    shown = min(1.0, SHOWN_WIDTH_IN / fig.get_figwidth())
    legends = [lg for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if lg is not None]
    sizes = [t.get_fontsize() * shown for lg in legends for t in lg.get_texts()]
    assert all(size >= 8 - 1e-9 for size in sizes), (fig.get_suptitle(), sizes)


@pytest.mark.world
def test_the_report_of_real_smoke_runs_has_every_family_with_its_plots(smoke_runs, tmp_path, figures):
    md_path = report.build_report([load_run(r, as_lists=False) for r in smoke_runs], tmp_path / "rep")
    md = md_path.read_text()
    assert figures and [assert_readable(fig) for fig in figures]
    # the fingerprint (the headline of a fingerprint run) before the families it summarises
    titles = re.findall(r"^## (.+)$", md, flags=re.M)
    families = [f.report.title for f in registry.families().values() if f.report is not None]
    assert [t for t in titles if t in families][0] == "Node fingerprint", titles
    for name, fam in registry.families().items():
        assert fam.report is not None, name
        section = md.split(f"## {fam.report.title}\n", 1)[1].split("\n## ", 1)[0]
        assert "Nothing to plot" not in section and "0 ok" not in section, (name, section[:300])
        if name != "whatif":  # its rows are model predictions, not measurements of this machine
            assert "CPU fallback" in section  # the rows are labelled as not performance numbers
    linked = set(re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", md))
    assert linked and linked == {p.name for p in (tmp_path / "rep").glob("*.png")}
    for name in linked:
        assert_png(tmp_path / "rep" / name)
