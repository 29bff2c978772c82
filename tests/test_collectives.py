"""Collectives on gloo (CPU): exact results at world sizes 2 and 3, the nccl-tests metrics, the
alpha-beta model, and what happens when a rank dies or hangs."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hpcbench.benchmarks._collective_ops import COLLECTIVES, DTYPES, REDUCE_OPS, amplitude, reduced, values
from hpcbench.models.costmodel import CannotFit, fit
from hpcbench.api.errors import UserError
from hpcbench.measure.rank_timing import nearest_rank_percentile, rank_times
from hpcbench.results import load_run
from hpcbench.runtime.watchdog import diagnose
from hpcbench.api.sizes import format_bytes, parse_bytes, size_sweep

SMALL = ["benchmark=collectives", "collectives.min_bytes=8", "collectives.max_bytes=4K", "collectives.step_factor=8",
         "collectives.iters=3", "collectives.warmup_iters=1"]


# ---- pure parts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name,n,factor", [
    ("all_reduce", 2, 1.0), ("all_reduce", 8, 1.75), ("all_gather", 8, 0.875), ("reduce_scatter", 4, 0.75),
    ("all_to_all", 2, 0.5), ("broadcast", 8, 1.0), ("staged_all_reduce", 4, 1.5)])
def test_busbw_factors_are_nccl_tests(name, n, factor):
    assert COLLECTIVES[name].busbw_factor(n) == pytest.approx(factor)


def test_sizes_are_binary_and_sweep_like_nccl_tests():
    assert parse_bytes("32M") == 32 << 20 and parse_bytes("1G") == 1 << 30 and parse_bytes(8) == 8
    assert size_sweep("8", "64", 2) == [8, 16, 32, 64]
    assert size_sweep("1K", "4K", 2, "1K") == [1024, 2048, 3072, 4096]
    assert format_bytes(64 << 20) == "64 MiB" and format_bytes(12) == "12 B"
    for bad in ("0", "-4", "12Q", "lots"):
        with pytest.raises(UserError):
            parse_bytes(bad)
    with pytest.raises(UserError):
        size_sweep("1M", "1K")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "int8"])
@pytest.mark.parametrize("op", list(REDUCE_OPS))
def test_crafted_inputs_reduce_exactly_in_any_order(dtype, op):
    """Every partial reduction is exact in the dtype, so a reversed order gives the same bits."""
    n = 8
    dt = DTYPES[dtype]
    amp = amplitude(op, dt, n)
    assert amp >= 1
    ins = [values(r, 0, 257, op, n, amp, "cpu").to(dt) for r in range(n)]
    fn = {"sum": torch.add, "avg": torch.add, "prod": torch.mul, "min": torch.minimum, "max": torch.maximum}[op]
    fwd, bwd = ins[0], ins[-1]
    for t in ins[1:]:
        fwd = fn(fwd, t)
    for t in reversed(ins[:-1]):
        bwd = fn(bwd, t)
    if op == "avg":
        fwd, bwd = fwd / n, bwd / n
    exact = reduced(op, 0, 257, n, amp, "cpu")
    assert torch.equal(fwd, bwd) and torch.equal(fwd.to(torch.int64), exact)
    assert len(set(ins[0].tolist())) > 1  # not a constant


def test_rank_times_take_mean_and_slowest_rank_per_iteration():
    table = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 1.0, 5.0, 6.0]])
    rt = rank_times(table)
    assert rt.mean_s.tolist() == [2.0, 1.5, 4.0, 5.0] and rt.slowest_s.tolist() == [3.0, 2.0, 5.0, 6.0]
    assert rt.slowest_rank == 1 and rt.slowest_share == 0.75 and rt.time_s == 3.0
    assert nearest_rank_percentile(np.arange(1, 101), 99) == 99 and nearest_rank_percentile(np.arange(5), 99) == 4


def test_alpha_beta_fit_recovers_a_known_model_and_projects():
    ar = COLLECTIVES["all_reduce"]
    alpha, bandwidth = 5e-6, 100e9
    sizes = [2**k for k in range(10, 30, 2)]
    times = [alpha * ar.ring_steps(4) + ar.busbw_factor(4) * s / bandwidth for s in sizes]
    model = fit("all_reduce", 4, sizes, times, ar.busbw_factor, ar.ring_steps)
    assert model.alpha_s == pytest.approx(alpha, rel=1e-6)
    assert model.bus_bandwidth_Bps == pytest.approx(bandwidth, rel=1e-6)
    assert model.predict(64, 1 << 30, ar.busbw_factor, ar.ring_steps) == pytest.approx(
        alpha * 126 + (126 / 64) * (1 << 30) / bandwidth, rel=1e-6)
    with pytest.raises(CannotFit):
        fit("all_reduce", 1, sizes, times, ar.busbw_factor, ar.ring_steps)
    with pytest.raises(CannotFit):
        fit("all_reduce", 4, [8, 16, 32], [1e-4, 1e-4, 0.9e-4], ar.busbw_factor, ar.ring_steps)


def test_diagnose_names_the_rank_behind_and_the_collective():
    now = 1000.0
    board = {0: {"tick": 9, "label": "all_reduce 4 B in_place", "time": now},
             1: {"tick": 7, "label": "all_reduce 4 B in_place", "time": now},
             2: {"tick": 9, "label": "all_reduce 4 B in_place", "time": now}}
    msg = diagnose(board, now)
    assert msg.startswith("rank 1 did not reach 'all_reduce 4 B in_place'") and "rank(s) 0, 2 waited" in msg
    board[1]["time"] = now - 60
    assert "rank 1 stopped responding" in diagnose(board, now)
    board[1] = {"tick": 9, "label": "x", "time": now}
    assert "all ranks are inside" in diagnose(board, now)


# ---- every collective, dtype and op on real gloo ranks ------------------------------------------

def _check_all_combinations() -> dict:
    """Runs on each rank: every collective x placement x dtype x op at a size that splits evenly."""
    from hpcbench.benchmarks._collective_ops import NotApplicable, Point, Prepared
    from hpcbench.runtime.device import resolve_device
    from hpcbench.runtime.distributed import init_world, shutdown_world

    world = init_world(resolve_device("cpu"), "gloo", timeout_s=60)
    outcome = {}
    for name, coll in COLLECTIVES.items():
        for placement in coll.placements:
            for dtype in DTYPES:
                for op in (REDUCE_OPS if coll.reduces else ["sum"]):
                    size = 24 * world.size * torch.empty((), dtype=DTYPES[dtype]).element_size()
                    try:
                        prepared = Prepared(Point(name, size, dtype, op, placement), world)
                    except NotApplicable as exc:
                        outcome[(name, placement, dtype, op)] = f"n/a: {exc}"
                        continue
                    prepared.reset()
                    try:
                        prepared.call()
                        error = None
                    except RuntimeError as exc:
                        error = str(exc).splitlines()[0]
                    if not world.all_true(error is None):
                        outcome[(name, placement, dtype, op)] = f"unsupported: {error}"
                        continue
                    outcome[(name, placement, dtype, op)] = world.sum_int(prepared.wrong())
    shutdown_world()
    return outcome


@pytest.mark.world
@pytest.mark.parametrize("nproc", [pytest.param(2, marks=pytest.mark.smoke), 3])  # 2: the fast tier's exact check
def test_every_collective_is_exact_on_gloo(nproc, monkeypatch):
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", max_restarts=0, run_id="t")
    outcome = elastic_launch(config, _check_all_combinations)()[0]
    wrong = {k: v for k, v in outcome.items() if v not in (0,) and not str(v).startswith("unsupported")}
    assert wrong == {}
    checked = [k for k, v in outcome.items() if v == 0]
    assert len(checked) >= 100
    assert {k[0] for k in checked} == set(COLLECTIVES)
    # gloo cannot average integers: reported as unsupported, never as a wrong answer
    assert str(outcome[("all_reduce", "in_place", "int32", "avg")]).startswith("unsupported")


# ---- the CLI end to end -------------------------------------------------------------------------

def _run_dir(tmp_path: Path) -> Path:
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.subprocess
@pytest.mark.world
def test_collectives_cli_runs_two_local_ranks(cli, tmp_path):
    # sizes up to 8 MiB so that time grows with size even on a busy machine: the fit needs a bandwidth term
    out = cli(*SMALL, "collectives.max_bytes=8M", "collectives.step_factor=32", "collectives.project_world_sizes=[16]")
    assert out.returncode == 0, out.stderr
    for header in ("size", "count", "redop", "algbw GB/s", "busbw GB/s", "#wrong", "Avg bus bandwidth"):
        assert header in out.stdout
    assert "PROJECTION" in out.stdout
    df = load_run(_run_dir(tmp_path))
    meta = df.attrs["metadata"]
    assert meta["status"] == "complete" and meta["distributed"]["world_size"] == 2
    assert meta["distributed"]["backend"] == "gloo"
    m = df[df.record == "measurement"]
    assert set(m.collective) == set(COLLECTIVES) and (m.status == "ok").all() and (m.wrong == 0).all()
    ar = m[m.collective == "all_reduce"]
    assert np.allclose(ar.busbw_GBps, ar.algbw_GBps * 1.0) and np.allclose(ar.algbw_GBps, ar.size_bytes / ar.time_us / 1e3)
    ag = m[m.collective == "all_gather"]
    assert set(ag.placement) == {"out_of_place", "in_place"} and np.allclose(ag.busbw_GBps, ag.algbw_GBps * 0.5)
    assert (m.i_max_us >= m.i_min_us).all() and all(len(s) == 3 for s in m.samples_s)
    assert set(m.slowest_rank) <= {0, 1}
    fit = df[(df.record == "alpha_beta_fit") & (df.collective == "all_reduce")]
    assert list(fit.status) == ["ok"], fit.reason.tolist()
    proj = df[df.record == "projection"]
    assert (proj.projected == True).all() and (proj.world_size == 16).all()  # noqa: E712
    staged = m[m.collective == "staged_all_reduce"]
    assert np.allclose(staged.time_vs_backend, staged.time_us.values / ar.time_us.values)
    assert all(len(r) == 3 and set(r) <= {0, 1} for r in m.slowest_rank_per_iter)
    assert len(list((tmp_path / "results").iterdir())) == 1

    # the stored sweep projects to another world size without re-running
    out = cli("project", str(_run_dir(tmp_path)), "--world-size", "64", "--collective", "all_reduce")
    assert out.returncode == 0, out.stderr
    assert "PROJECTION" in out.stdout and " 64 " in out.stdout and "staged" not in out.stdout
    out = cli("project", str(_run_dir(tmp_path)), "--world-size", "64", "--collective", "gossip")
    assert out.returncode == 2 and "gossip" in out.stderr

    # read back through pandas (integers next to gaps become floats), tables still print integers
    out = cli("show", str(_run_dir(tmp_path)), "--benchmark", "collectives")
    assert out.returncode == 0 and "world 2 · gloo" in out.stdout and "world 2.0" not in out.stdout


@pytest.mark.subprocess
@pytest.mark.world
def test_world_of_three_skips_sizes_that_do_not_split(cli, tmp_path):
    out = cli("benchmark=collectives", "dist.nproc=3", "collectives.min_bytes=8", "collectives.max_bytes=24",
              "collectives.step_bytes=8", "collectives.iters=2", "collectives.warmup_iters=0",
              "collectives.collectives=[all_reduce,reduce_scatter,all_to_all]")
    assert out.returncode == 0, out.stderr
    df = load_run(_run_dir(tmp_path))
    m = df[df.record == "measurement"]
    split = m[m.collective != "all_reduce"]
    assert (split[split.size_bytes == 24].status == "ok").all()
    skipped = split[split.size_bytes < 24]
    assert (skipped.status == "skipped").all() and skipped.reason.str.contains("does not split into 3").all()
    assert (m[m.collective == "all_reduce"].status == "ok").all()


@pytest.mark.parametrize("args,needle", [
    (["collectives.dtype=float8"], "collectives.dtype='float8' (available: float32,"),
    (["collectives.op=xor"], "collectives.op='xor' (available: sum, prod, min, max, avg)"),
    (["collectives.collectives=[all_reduce,gossip]"], "collectives.collectives[1]='gossip' (available"),
    (["collectives.placements=[sideways]"], "collectives.placements[0]='sideways' (available"),
    (["collectives.collectives=[all_reduce]", "collectives.placements=[out_of_place]"], "no point to run"),
    (["collectives.min_bytes=1M", "collectives.max_bytes=1K"], "max_bytes"),
    (["collectives.max_bytes=12Q"], "not a size"),
    (["dist.nproc=0"], "dist.nproc"),
    (["dist.backend=mpi"], "dist.backend"),
])
def test_collectives_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    from hpcbench.core.cli import main

    monkeypatch.chdir(tmp_path)  # in-process: the CLI's main function, as the console script calls it
    assert main(["benchmark=collectives", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.mark.subprocess
@pytest.mark.world
@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_a_failed_rank_stops_the_run_names_it_and_keeps_rows(cli, tmp_path, fault):
    from conftest import processes_of_run  # here: the spawned ranks of other tests import this module

    run_id = f"fault-{fault}-{os.getpid()}"
    t0 = time.monotonic()
    out = cli(*SMALL, "collectives.collectives=[all_reduce,all_gather]", "dist.timeout_s=4",
              env={"HPCBENCH_INJECT_FAULT": f"{fault}:1:2", "HPCBENCH_RUN_ID": run_id}, timeout=120)
    elapsed = time.monotonic() - t0
    assert out.returncode == 1, out.stderr
    assert elapsed < 60
    err = out.stderr
    assert "Traceback" not in err, err
    assert "rank 1" in err and "all_reduce 4 KiB in_place" in err, err  # the point after the fault
    if fault == "hang":
        assert "no progress for 4 s" in err and "rank 1 did not reach" in err
    run_dir = tmp_path / "results" / run_id
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["status"] == "error" and "rank 1" in meta["error"]
    df = load_run(run_dir)
    assert list(df.point) == [0, 1, 2] and (df.status == "ok").all()  # completed rows are kept
    time.sleep(0.5)
    assert processes_of_run(run_id) == []


# ---- the report plot ------------------------------------------------------------------------------

def test_busbw_plot_draws_each_runs_median_busbw_per_size_per_collective_and_placement(tmp_path, monkeypatch):
    import pandas as pd
    from matplotlib.figure import Figure

    from hpcbench.benchmarks.collectives.report import collectives_busbw

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    rows = []
    for r, run in enumerate(("run-a", "run-b")):
        for c, coll in enumerate(("all_reduce", "all_gather")):
            for p, placement in enumerate(("in_place", "out_of_place")):
                for size in (1 << 20, 8, 1024):  # not in size order
                    busbw = 1 + r + 10 * c + 100 * p + size / 1e4
                    rows.append({"run": run, "record": "measurement", "collective": coll, "placement": placement,
                                 "size_bytes": size, "busbw_GBps": busbw, "algbw_GBps": busbw / 2})
        # broadcast has no placement; one of its points measured three times (the median counts)
        for size, busbw in ((8, 1.0), (64, 5.0), (64, 9.0), (64, 2.0)):
            rows.append({"run": run, "record": "measurement", "collective": "broadcast", "placement": None,
                         "size_bytes": size, "busbw_GBps": busbw + r, "algbw_GBps": busbw})
    df = pd.DataFrame(rows)
    p = collectives_busbw(df, tmp_path)
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["all_reduce", "all_gather", "broadcast"]
    drawn = {}
    for ax in panels:
        assert ax.get_xlabel() == "message size" and ax.get_ylabel() == "busbw (GB/s)"
        assert ax.get_xscale() == "log"
        for line in ax.get_lines():
            drawn[f"{ax.get_title()}: {line.get_label()}"] = line.get_xydata().tolist()
    want = {}
    for (coll, run, placement), g in df.assign(placement=df["placement"].fillna("-")).groupby(
            ["collective", "run", "placement"]):
        med = g.groupby("size_bytes")["busbw_GBps"].median().sort_index()
        want[f"{coll}: {run} · {placement}"] = [[float(s), float(b)] for s, b in med.items()]
    assert drawn == want
    assert want["broadcast: run-b · -"] == [[8.0, 2.0], [64.0, 6.0]]  # median of 6, 10, 3
    assert sorted(p.series) == sorted(want)
    # one legend for the figure: a run and placement per line style, both runs named
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["run-a · in_place", "run-a · out_of_place",
                                                          "run-b · in_place", "run-b · out_of_place",
                                                          "run-a · -", "run-b · -"]
