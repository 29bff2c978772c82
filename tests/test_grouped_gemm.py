"""Grouped expert GEMMs: the Triton kernels in the interpreter on uneven experts (one empty), every
layout in BF16 and FP8 against float64, padding rows untouched, a corrupted output caught, the work
counted on valid rows (hand-computed), bad input as one line with exit 2, and one CLI run."""

from types import SimpleNamespace

import pytest
import torch

from hpcbench.measure.accuracy import calc_diff
from hpcbench.benchmarks.grouped_gemm.measure import check
from hpcbench.benchmarks.grouped_gemm.problems import (
    SENTINEL,
    Problem,
    build,
    bytes_moved,
    empty_ids,
    flops,
    group_sizes,
)
from hpcbench.benchmarks.grouped_gemm.settings import Point
from hpcbench.benchmarks.grouped_gemm.variants import Variant, prepare_triton
from hpcbench.kernels import grouped_gemm as gg
from hpcbench.results import load_run

TOL = SimpleNamespace(tol_bf16=1e-5, tol_fp8_kernel=2e-5, tol_fp8_e2e=2e-3)
SIZES = [70, 0, 33]  # uneven, with an empty expert between two others
CPU = torch.device("cpu")


def _point(layout: str, **kw) -> Point:
    shape = {"contiguous": dict(G=3, M=40, N=72, K=160), "masked": dict(G=3, M=40, N=72, K=160),
             "k_grouped": dict(G=3, M=48, N=72, K=80)}[layout]
    return Point(layout, **{**shape, **kw}, max_m=96 if layout == "masked" else None, routing="uniform",
                 imbalance=None, empty_experts=1, alignment=None if layout == "masked" else 128, seed=0)


def _problem(layout: str) -> Problem:
    return build(_point(layout), SIZES, CPU)


@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
@pytest.mark.parametrize("layout", ["contiguous", "masked", "k_grouped"])
def test_triton_kernels_match_float64_and_leave_padding_untouched(layout, dtype):
    problem = _problem(layout)
    out = problem.new_output(SENTINEL)
    prepared = prepare_triton(Variant(f"triton_{dtype}", "triton", dtype), problem, out)
    result = prepared.run()
    assert result is out
    reference = problem.reference(problem.a, problem.b)
    assert problem.valid(out).shape == reference.shape
    # the last expert computed directly: its first valid row (contiguous, masked), its gradient (k_grouped)
    if layout == "k_grouped":
        assert problem.starts == [0, 128, 128]  # each expert's tokens padded to 128
        lo, hi = problem.starts[2], problem.starts[2] + SIZES[2]
        direct, got = problem.a[lo:hi].double().T @ problem.b[lo:hi].double(), out[2]
        assert torch.count_nonzero(out[1]) == 0  # the empty expert's weight gradient is zero
        assert problem.untouched(out) is None
    elif layout == "contiguous":
        first = problem.starts[2]
        direct, got = problem.a[first:first + 1].double() @ problem.b[2].double().T, out[first:first + 1]
        assert (out[problem.index < 0] == SENTINEL).all() and problem.untouched(out) == 0
    else:
        direct, got = problem.a[2, :1].double() @ problem.b[2].double().T, out[2, :1]
        assert (out[1] == SENTINEL).all() and (out[0, SIZES[0]:] == SENTINEL).all() and problem.untouched(out) == 0
    tol = 1e-5 if dtype == "bf16" else 2e-3
    assert calc_diff(got, direct) < tol
    cols, failure = check(Variant("v", "triton", dtype), problem, out, prepared, reference, TOL)
    assert failure is None, failure
    assert cols["calc_diff_orig"] < tol
    if dtype == "fp8":  # against the dequantized inputs only the FP32 accumulation and the output rounding remain
        assert cols["calc_diff_deq"] < 2e-5 < cols["calc_diff_orig"]


@pytest.mark.parametrize("layout", ["contiguous", "masked"])
def test_the_check_catches_a_corrupted_output_and_a_written_padding_row(layout):
    problem = _problem(layout)
    v = Variant("triton_bf16", "triton", "bf16")
    out = problem.new_output(SENTINEL)
    prepared = prepare_triton(v, problem, out)
    prepared.run()
    reference = problem.reference(problem.a, problem.b)
    assert check(v, problem, out, prepared, reference, TOL)[1] is None
    corrupted = out.clone()
    if layout == "contiguous":
        corrupted[problem.starts[2] + 5] *= -1  # one valid row of the last expert
    else:
        corrupted[2, 5] *= -1
    _, failure = check(v, problem, corrupted, prepared, reference, TOL)
    assert failure and failure.startswith("calc_diff")
    touched = out.clone()
    if layout == "contiguous":
        touched[problem.starts[0] + SIZES[0]] = 0.0  # the first padding row after expert 0
    else:
        touched[0, SIZES[0]] = 0.0  # the first row beyond masked_m of expert 0
    cols, failure = check(v, problem, touched, prepared, reference, TOL)
    assert cols["rows_written_outside"] == 1 and "1 rows that must stay untouched" in failure


def test_contiguous_layout_pads_each_expert_to_the_alignment():
    problem = _problem("contiguous")
    # 70 rows -> 128, the empty expert -> 0 rows, 33 -> 128
    assert problem.starts == [0, 128, 128] and problem.a.shape == (256, 160)
    expected = torch.full((256,), -1, dtype=torch.int32)
    expected[:70], expected[128:161] = 0, 2
    assert torch.equal(problem.index, expected)


def test_work_is_counted_on_valid_rows_only():
    c = _problem("contiguous")  # valid_m = 103 of 256 padded rows; N = 72, K = 160, G = 3
    assert flops(c) == 2 * 103 * 72 * 160 == 2_373_120
    assert bytes_moved(c, "fp8") == 103 * 160 + 3 * 160 * 72 + 2 * 103 * 72 == 65_872
    assert bytes_moved(c, "bf16") == 2 * (103 * 160 + 3 * 160 * 72) + 2 * 103 * 72 == 116_912
    m = _problem("masked")  # capacity 3 x 96 rows, 103 valid
    assert flops(m) == 2_373_120
    k = _problem("k_grouped")  # M = 48, N = 72, sum_k = 103 tokens
    assert flops(k) == 2 * 48 * 72 * 103 == 711_936
    assert bytes_moved(k, "fp8") == (48 + 72) * 103 + 4 * 3 * 48 * 72 == 53_832


def test_expert_sizes_follow_the_routing_and_keep_empty_experts_empty():
    p = _point("contiguous", M=200)
    sizes = group_sizes(p)
    assert sizes[1] == 0 and sum(sizes) == 2 * 200  # two receiving experts, 200 rows each on average
    assert group_sizes(p) == sizes  # seeded
    assert empty_ids(8, 3) == [1, 3, 5] and empty_ids(4, 3) == [1, 2, 3]
    skewed = Point("contiguous", 4, 300, 64, 64, None, "skewed", 3.0, 0, 128, 0)
    s = group_sizes(skewed)
    assert sum(s) == 1200 and s[0] / (sum(s[1:]) / 3) == pytest.approx(3.0, rel=0.1)


def test_quantize_k_grouped_restarts_blocks_at_each_expert():
    x = torch.randn(256, 8)
    q, scales, starts = gg.quantize_k_grouped(x, [0, 128, 128], [70, 0, 33])
    assert starts.tolist() == [0, 1, 1, 2] and scales.shape == (2, 8)
    assert torch.allclose(scales[1], x[128:161].abs().amax(dim=0) / 448)  # the block holds expert 2's tokens only
    assert calc_diff(q.double()[128:161] * scales[1].double(), x[128:161]) < 1e-3
    assert torch.count_nonzero(q[70:128].float()) == 0 and torch.count_nonzero(q[161:].float()) == 0


# ---- the CLI ----------------------------------------------------------------------------------------

SMALL = ["benchmark=grouped_gemm", "grouped_gemm.shapes=custom", "grouped_gemm.custom.contiguous=[[3,40,64,128]]",
         "grouped_gemm.custom.masked=[[2,40,96,64,128]]", "grouped_gemm.custom.k_grouped=[[3,32,64,64]]",
         "grouped_gemm.empty_experts=1", "timing.cpu.warmup=0", "timing.cpu.min_reps=2", "timing.cpu.max_reps=2"]

BAD = [
    ("grouped_gemm.custom.contiguous=[[0,40,64,128]]", "groups G=0: must be a positive integer"),
    ("grouped_gemm.custom.masked=[[2,200,96,64,128]]", "M=200 rows per expert exceed the capacity max_m=96"),
    ("grouped_gemm.custom.masked=[[3,80,96,64,128]]", "expert 0 receives"),
    ("grouped_gemm.layouts=[k_grouped] grouped_gemm.custom.k_grouped=[]", "no shapes for the layouts ['k_grouped']"),
    ("grouped_gemm.shapes=deepseek_v4", "grouped_gemm.shapes='deepseek_v4': no such preset (available: deepseek_v3"),
    ("grouped_gemm.alignment=100", "must be a positive multiple of 64"),
]


@pytest.mark.parametrize("bad,needle", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_is_one_line_exit_2_without_a_run_directory(tmp_path, monkeypatch, capsys, bad, needle):
    from hpcbench.core.cli import main

    monkeypatch.chdir(tmp_path)
    extra = ["grouped_gemm.routing=skewed", "grouped_gemm.imbalance=[8]"] if "80,96" in bad else []
    assert main([*SMALL, *extra, *bad.split()]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.mark.subprocess
def test_cli_runs_every_layout_and_report_reads_it(cli, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    from hpcbench.benchmarks.grouped_gemm.report import _point_labels
    from hpcbench.core.cli import main

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])

    out = cli(*SMALL, "grouped_gemm.backends=[triton,torch_grouped_mm]", timeout=240)
    assert out.returncode == 0, out.stderr
    assert "Grouped expert GEMMs" in out.stdout
    (run_dir,) = (tmp_path / "results").iterdir()
    df = load_run(run_dir)
    assert len(df) == 3 * 3  # 3 layouts x (triton bf16, triton fp8, torch._grouped_mm bf16)
    assert (df.status == "ok").all(), df[["kernel", "layout", "status", "reason"]]
    triton = df[df.backend == "triton"]
    assert (triton[triton.layout != "k_grouped"].rows_written_outside == 0).all()
    for r in df.to_dict("records"):
        valid = r["sum_k"] if r["layout"] == "k_grouped" else r["valid_m"]
        assert valid == sum(r["group_sizes"]) and 0 in r["group_sizes"]
        work = 2 * r["M"] * r["N"] * valid if r["layout"] == "k_grouped" else 2 * valid * r["N"] * r["K"]
        assert r["flops"] == work and r["tflops"] == pytest.approx(work / r["median_s"] / 1e12)
    fp8 = triton[triton.dtype == "fp8"]
    assert fp8.speedup_vs_bf16.notna().all()
    assert main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "grouped_gemm_tflops.png").exists()
    assert "Grouped expert GEMMs" in (tmp_path / "rep" / "report.md").read_text()
    # the plot: a panel per layout, a bar per kernel and shape at the stored point's TFLOP/s
    (fig,) = figures
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["contiguous", "masked", "k_grouped"]
    tflops = df.assign(shape=_point_labels(df)).set_index(["layout", "kernel", "shape"])["tflops"]
    for ax in fig.axes:
        layout = ax.get_title().split(":")[0]
        shapes = [t.get_text() for t in ax.get_xticklabels()]
        bars = {c.get_label(): {shapes[round(b.get_x() + b.get_width() / 2)]: b.get_height() for b in c.patches}
                for c in ax.containers}
        want = {f"{run_dir.name} · {kernel}": {shape: t for shape, t in g.droplevel([0, 1]).items()}
                for kernel, g in tflops[tflops.index.get_level_values(0) == layout].groupby(level=1, sort=False)}
        assert bars == want


@pytest.mark.subprocess
def test_the_contiguous_kernel_refuses_rows_that_are_not_whole_aligned_tiles(tmp_path):
    """m_sum not a multiple of align_m made the unmasked tile loads and stores run past A, m_indices
    and out (in the interpreter: garbage rows stored, then 'double free or corruption'; on a GPU an
    illegal address): now a clear error. In a subprocess: the old failure aborted the process."""
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from hpcbench.kernels import grouped_gemm as gg\n"
        "a = torch.randn(200, 256, dtype=torch.bfloat16); b = torch.randn(2, 128, 256, dtype=torch.bfloat16)\n"
        "idx = torch.tensor([0] * 128 + [1] * 72, dtype=torch.int32)\n"
        "out = torch.zeros(200, 128, dtype=torch.bfloat16)\n"
        "try:\n"
        "    gg.grouped_contiguous(a, b, idx, out, align_m=128)\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                       env={**__import__("os").environ, "TRITON_INTERPRET": "1"})
    assert r.returncode == 0 and "refused: grouped_contiguous: m_sum=200 rows must be a multiple of align_m=128" in r.stdout, (
        r.stdout[-2000:] + r.stderr[-2000:])


def test_report_plot_bars_are_each_runs_median_tflops_per_layout_shape_and_kernel(tmp_path, monkeypatch):
    import pandas as pd
    from matplotlib.figure import Figure

    from hpcbench.benchmarks.grouped_gemm.report import grouped_tflops

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    rows = []
    for r, run in enumerate(("run-a", "run-b")):
        for layout in ("k_grouped", "contiguous"):  # drawn in the family's layout order, masked absent
            for s, (g, m) in enumerate(((8, 512), (4, 256))):
                for kernel, dtype, peak in (("triton_bf16", "bf16", 989.0), ("triton_fp8", "fp8", 1979.0)):
                    rows.append({"run": run, "layout": layout, "G": g, "M": m, "N": 1024, "K": 2048,
                                 "imbalance": 2.0 if s else None, "kernel": kernel, "dtype": dtype,
                                 "tflops": 100.0 * (s + 1) + 10 * r + (dtype == "fp8") * 50 + (layout == "k_grouped"),
                                 "peak_tflops": peak})
    df = pd.DataFrame(rows)
    # run-b's contiguous fp8 8x512 point measured twice more: the median is the first
    again = df[(df["run"] == "run-b") & (df["layout"] == "contiguous") & (df["kernel"] == "triton_fp8")
               & (df["G"] == 8)]
    p = grouped_tflops(pd.concat([df, again.assign(tflops=1e4), again.assign(tflops=1.0)], ignore_index=True),
                       tmp_path)
    (fig,) = figures
    assert [ax.get_title() for ax in fig.axes] == ["contiguous: G×M×N×K (M: rows per expert)",
                                                   "k_grouped: G×M×N×K (K: tokens per expert)"]
    combos = [f"{run} · {kernel}" for run in ("run-a", "run-b") for kernel in ("triton_bf16", "triton_fp8")]
    assert p.series == combos
    for ax, layout in zip(fig.axes, ("contiguous", "k_grouped")):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["8×512×1024×2048", "4×256×1024×2048 r=2"]
        d = df[df["layout"] == layout].set_index(["run", "kernel", "G"])["tflops"]
        want = {c: {0: d[(*c.split(" · "), 8)], 1: d[(*c.split(" · "), 4)]} for c in combos}
        bars = {c.get_label(): {round(b.get_x() + b.get_width() / 2): b.get_y() + b.get_height() for b in c.patches}
                for c in ax.containers}
        assert bars == want
        peaks = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines()}
        assert peaks == {"bf16 peak 989": 989.0, "fp8 peak 1979": 1979.0}
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [*peaks, *combos]
