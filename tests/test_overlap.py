"""Overlap metrics on synthetic timings with known answers; the overlap and DDP benchmarks on gloo."""

import pytest

from hpcbench.measure.overlap_metrics import overlap_metrics
from hpcbench.results import load_run


def test_perfect_overlap_hides_all_communication():
    m = overlap_metrics(t_comp=10, t_comm=4, t_seq=14, t_ovl=10, t_comp_ovl=10, t_comm_ovl=4)
    assert m["hidden_fraction"] == 1 and m["hidden_fraction_bounded"] == 1
    assert m["exposed_comm_s"] == 0 and m["speedup_vs_seq"] == pytest.approx(1.4)
    assert m["fraction_of_ideal"] == 1 and m["compute_slowdown"] == 0 and m["comm_slowdown"] == 0


def test_no_overlap_hides_nothing():
    m = overlap_metrics(t_comp=10, t_comm=4, t_seq=14, t_ovl=14)
    assert m["hidden_fraction"] == 0 and m["exposed_comm_s"] == 4 and m["fraction_of_ideal"] == 0
    assert m["speedup_vs_seq"] == 1 and m["compute_slowdown"] is None


def test_partial_overlap_with_interference():
    # comm longer than compute: h can exceed what is attainable, h* is bounded by the shorter side
    m = overlap_metrics(t_comp=4, t_comm=10, t_seq=15, t_ovl=11, t_comp_ovl=5, t_comm_ovl=11)
    assert m["hidden_fraction"] == pytest.approx(0.3) and m["hidden_fraction_bounded"] == pytest.approx(0.75)
    assert m["exposed_comm_s"] == 7 and m["speedup_vs_seq"] == pytest.approx(15 / 11)
    assert m["fraction_of_ideal"] == pytest.approx(4 / 5)  # T_seq is measured: 15, not 4 + 10
    assert m["compute_slowdown"] == pytest.approx(0.25) and m["comm_slowdown"] == pytest.approx(0.1)


@pytest.mark.subprocess
@pytest.mark.world
def test_overlap_cli_measures_and_verifies_on_gloo(cli, tmp_path):
    out = cli("benchmark=overlap", "overlap.comm_sizes=[64K]", "overlap.gemm_mnk=[128,128,128]",
              "overlap.iters=4", "overlap.warmup_iters=1")
    assert out.returncode == 0, out.stderr
    assert "T_ovl us" in out.stdout and "hidden" in out.stdout
    (run_dir,) = (tmp_path / "results").iterdir()
    (row,) = load_run(run_dir).to_dict("records")
    assert row["status"] == "ok" and row["wrong"] == 0 and row["world_size"] == 2
    for key in ("t_comp_us", "t_comm_us", "t_seq_us", "t_ovl_us", "t_comp_in_ovl_us", "t_comm_in_ovl_us"):
        assert row[key] > 0
    assert len(row["samples_s"]) == 4 and len(row["samples_seq_s"]) == 4
    assert row["median_s"] * 1e6 == pytest.approx(row["t_ovl_us"])  # T_ovl is the stored samples' median


@pytest.mark.subprocess
@pytest.mark.world
def test_ddp_overlap_sweeps_buckets_against_both_baselines(cli, tmp_path):
    out = cli("benchmark=ddp_overlap", "ddp_overlap.width=64", "ddp_overlap.layers=4", "ddp_overlap.batch=8",
              "ddp_overlap.bucket_cap_mb=[0.01,25]", "ddp_overlap.iters=3", "ddp_overlap.warmup_iters=1")
    assert out.returncode == 0, out.stderr
    (run_dir,) = (tmp_path / "results").iterdir()
    df = load_run(run_dir)
    assert list(df["mode"]) == ["no_comm", "post_backward", "ddp", "ddp"]
    assert (df.status == "ok").all() and df.step_us.gt(0).all()
    ddp = df[df["mode"] == "ddp"]
    assert sorted(ddp.bucket_cap_mb) == [0.01, 25] and ddp.best_bucket.sum() == 1
    assert df.exposed_comm_us.iloc[0] == 0.0  # no_comm is the floor the others are measured against


# ---- the report plots -----------------------------------------------------------------------------

def _captured_figures(monkeypatch) -> list:
    from matplotlib.figure import Figure

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    return figures


def _tops(container) -> dict[int, float]:
    """{category index: top of the bar} for one ax.bar call (its bars sit within ±0.4 of the index)."""
    return {round(p.get_x() + p.get_width() / 2): p.get_y() + p.get_height() for p in container.patches}


def test_overlap_plot_bars_are_each_runs_four_times_per_communication_size(tmp_path, monkeypatch):
    import pandas as pd

    from hpcbench.benchmarks.overlap.report import overlap_times

    figures = _captured_figures(monkeypatch)
    rows = [{"run": run, "collective": "all_reduce", "comm_bytes": size, "t_comp_us": 100.0 + r,
             "t_comm_us": 10.0 * (i + 1) + r, "t_seq_us": 110.0 + 10 * i + 2 * r, "t_ovl_us": 105.0 + i + 3 * r}
            for r, run in enumerate(("run-a", "run-b"))
            for i, size in enumerate((1 << 24, 1 << 16, 1 << 20))]  # not in size order
    df = pd.DataFrame(rows)
    times = ["t_comp_us", "t_comm_us", "t_seq_us", "t_ovl_us"]
    again = df.iloc[[5, 5]].copy()  # run-b's 1 MiB point measured twice more: its median is the first
    again[times] = again[times].to_numpy() * [[5.0], [0.1]]
    p = overlap_times(pd.concat([df, again], ignore_index=True), tmp_path)
    (fig,) = figures
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["64 KiB", "1 MiB", "16 MiB"]
    sizes = [1 << 16, 1 << 20, 1 << 24]
    names = {"t_comp_us": "T_comp", "t_comm_us": "T_comm", "t_seq_us": "T_seq", "t_ovl_us": "T_ovl"}
    want = {f"{run} · {name}": {i: df.set_index(["run", "comm_bytes"]).loc[(run, s), col] for i, s in enumerate(sizes)}
            for run in ("run-a", "run-b") for col, name in names.items()}
    assert p.series == list(want)  # one bar call per series, in this order
    assert {label: _tops(c) for label, c in zip(p.series, ax.containers)} == want
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [*names.values(), "run-a", "run-b"]
    assert ax.get_xlabel() == "communication size"


def test_ddp_plot_bars_are_each_runs_step_time_with_the_exposed_part_on_top(tmp_path, monkeypatch):
    import math

    import pandas as pd

    from hpcbench.benchmarks.ddp_overlap.report import ddp_steps

    figures = _captured_figures(monkeypatch)
    rows = []
    for r, run in enumerate(("run-a", "run-b")):
        rows += [{"run": run, "mode": "post_backward", "bucket_cap_mb": None, "step_us": 1600.0 + r,
                  "exposed_comm_us": 600.0 + r},
                 {"run": run, "mode": "no_comm", "bucket_cap_mb": None, "step_us": 1000.0 + r, "exposed_comm_us": 0.0}]
        rows += [{"run": run, "mode": "ddp", "bucket_cap_mb": cap, "step_us": 1000.0 + 50 * i + 7 * r,
                  "exposed_comm_us": 50.0 * i + 7 * r} for i, cap in ((3, 100), (1, 1), (2, 25))]
    df = pd.DataFrame(rows)
    again = df.iloc[[4, 4]].assign(step_us=[5000.0, 10.0], exposed_comm_us=[4000.0, 0.0])  # run-a's 25 MB twice more
    p = ddp_steps(pd.concat([df, again], ignore_index=True), tmp_path)
    assert p.series == ["run-a", "run-b"]
    (fig,) = figures
    (ax,) = fig.axes
    groups = ["no_comm", "post_backward", "ddp 1 MB", "ddp 25 MB", "ddp 100 MB"]
    assert [t.get_text() for t in ax.get_xticklabels()] == groups
    steps_a, exposed_a, steps_b, exposed_b = ax.containers  # per run: the step, then its exposed part
    for run, steps, exposed in (("run-a", steps_a, exposed_a), ("run-b", steps_b, exposed_b)):
        d = df[df["run"] == run]
        order = [1, 0, 3, 4, 2]  # the rows of no_comm, post_backward, then ddp by bucket size
        step = dict(enumerate(d["step_us"].iloc[order]))
        comm = dict(enumerate(d["exposed_comm_us"].iloc[order]))
        assert steps.get_label() == run and _tops(steps) == step
        # the hatched part: from step - exposed up to the step; none where nothing is exposed (no_comm)
        hatched = {round(b.get_x() + b.get_width() / 2): (b.get_y(), b.get_height()) for b in exposed.patches}
        assert math.isnan(hatched.pop(0)[1])
        assert hatched == {i: (step[i] - comm[i], comm[i]) for i in range(1, 5)}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["run-a", "exposed comm", "run-b"]
