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
