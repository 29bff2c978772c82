"""MoE dispatch/combine: routing and byte counts as pure functions, bit-exact dispatch and combine on
gloo ranks at world sizes 2, 3 and 4, the family end to end (table, show, compare, report), the
overlap machinery on synthetic timings, and every bad input as one line with exit status 2."""

import math
import time
from pathlib import Path

import pytest
import torch

from hpcbench.benchmarks.moe_alltoall.exchange import (
    RowFormat,
    dequantize_fp8,
    pack_rows,
    quantize_fp8,
    token_values,
    unpack_rows,
)
from hpcbench.benchmarks.moe_alltoall.expert_overlap import Overlapped
from hpcbench.benchmarks.moe_alltoall.routing import (
    Routing,
    byte_counts,
    draw,
    from_matrix,
    imbalance,
    in_rank,
    matrix_tokens,
    payload_bytes,
    read_matrix,
    rows_matrix,
    stats,
)
from hpcbench.api.errors import UserError
from hpcbench.measure.overlap_metrics import overlap_metrics
from hpcbench.results import load_run

# ---- pure parts: bytes, FP8, routing --------------------------------------------------------------


def test_byte_counts_follow_deepep():
    # DeepEP test_intranode: FP8 bytes = BF16 bytes x (1 + 4/128) / 2, i.e. H + 4H/128 per row
    assert payload_bytes(7168, "fp8") == 7168 * 2 * (1 + 4 / 128) / 2 == 7392
    assert payload_bytes(7168, "bf16") == 14336
    assert RowFormat("fp8", 7168, "per_rank", 8, False).width == 7392 + 16  # + k int16 expert ids
    assert RowFormat("bf16", 7168, "per_rank", 8, True).width == 14336 + 16 + 32  # + k FP32 weights
    assert RowFormat("fp8", 7168, "per_expert", 8, True).width == 7392  # the expert follows from the position
    rows = torch.tensor([[3, 1], [0, 2]])
    b = byte_counts(rows, wire_row=10, logical_row=8)
    assert b["bytes_sent_per_rank"] == [40, 20] and b["bytes_recv_per_rank"] == [30, 30]
    assert b["logical_bytes_recv_per_rank"] == [24, 24] and b["rows_recv_per_rank"] == [3, 3]


@pytest.mark.parametrize("dtype,layout,weighted", [("fp8", "per_rank", True), ("fp8", "per_expert", False),
                                                   ("bf16", "per_rank", False), ("bf16", "per_expert", True)])
def test_wire_rows_round_trip_exactly(dtype, layout, weighted):
    x = token_values(1, torch.arange(40), 256, 3, seed=7)
    assert x.abs().max() == 3 and len(x.unique()) == 7  # small integers, not a constant
    q, scale = quantize_fp8(x)
    assert torch.equal(dequantize_fp8(q, scale), x)  # power-of-two scales: FP8 carries them exactly
    assert torch.equal(torch.log2(scale), torch.log2(scale).round())
    ids = torch.randint(0, 300, (40, 6))
    w = torch.exp2(-torch.randint(0, 2, (40, 6)).float())
    fmt = RowFormat(dtype, 256, layout, 6, weighted)
    rows = pack_rows(fmt, x, ids, w)
    assert rows.dtype == torch.uint8 and rows.shape == (40, fmt.width)
    x2, ids2, w2 = unpack_rows(fmt, rows)
    assert torch.equal(x2, x)
    if layout == "per_rank":
        assert torch.equal(ids2, ids) and (torch.equal(w2, w) if weighted else w2 is None)


def test_rows_and_statistics_of_a_known_routing():
    # 2 ranks, 4 experts (2 per rank), top-2; rank 0's tokens: [0, 1] (both on rank 0), [1, 2]; rank 1: [3, -1], [2, 3]
    idx = torch.tensor([[[0, 1], [1, 2]], [[3, -1], [2, 3]]])
    r = Routing(idx, torch.ones(2, 2, 2), 4)
    assert rows_matrix(r, "per_rank").tolist() == [[2, 1], [0, 2]]  # duplicates on a rank removed
    assert rows_matrix(r, "per_expert").tolist() == [[3, 1], [0, 3]]  # once per (token, expert)
    s = stats(r)
    assert (s["recv_tokens_min"], s["recv_tokens_max"]) == (2, 3) and s["imbalance_measured"] == 1.5
    assert s["copies_per_token"] == 5 / 4 and s["selections_per_token"] == 7 / 4
    assert imbalance(torch.tensor([10, 5, 5, 2])) == 10 / 4


def test_uniform_routing_matches_the_expected_copies_per_token():
    world, experts, k = 4, 16, 4
    r = draw("uniform", world, 2000, experts, k, seed=3)
    assert (r.idx.sort(dim=-1).values.diff(dim=-1) > 0).all()  # k distinct experts
    p_hit = 1 - math.comb(experts - experts // world, k) / math.comb(experts, k)
    assert stats(r)["copies_per_token"] == pytest.approx(world * p_hit, rel=0.03)
    assert set(r.weights.unique().tolist()) == {0.5, 1.0}
    assert torch.equal(r.idx, draw("uniform", world, 2000, experts, k, seed=3).idx)  # every rank draws the same


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("ratio", [1, 3, 5])
def test_skewed_routing_reaches_the_requested_imbalance(world, ratio):
    r = draw("skewed", world, 256, 8 * world, 4, seed=1, imbalance=ratio)
    measured = stats(r)["imbalance_measured"]
    assert measured == pytest.approx(ratio, rel=0.10), (measured, r.skew_factor)
    recv = in_rank(r.idx, r.num_experts, world).sum(dim=(0, 1))
    assert ratio == 1 or int(recv.argmax()) == 0  # rank 0 is the hot one, as DeepEP's


def test_node_limited_routing_keeps_each_token_within_its_groups():
    world, groups, per_token, experts = 8, 4, 2, 64
    r = draw("node_limited", world, 300, experts, 8, seed=0, groups=groups, per_token=per_token)
    group_of = r.idx // (experts // groups)
    used = torch.zeros(world, 300, groups, dtype=torch.bool).scatter_(-1, group_of, True).sum(dim=-1)
    assert used.max() == per_token and (r.idx >= 0).all()


def test_matrix_routing_moves_exactly_the_matrix(tmp_path):
    m = torch.tensor([[5, 0, 7], [3, 9, 1], [0, 0, 12]])
    path = tmp_path / "m.txt"
    path.write_text("# tokens from rank i to rank j\n5 0 7\n3, 9, 1\n0 0 12\n")
    assert torch.equal(read_matrix(str(path)), m)
    r = Routing(from_matrix(m, 12, 6, 2, torch.Generator().manual_seed(0)), torch.ones(3, 12, 2), 6)
    for layout in ("per_rank", "per_expert"):  # one expert per (token, rank): both layouts move the matrix
        assert torch.equal(rows_matrix(r, layout), m)
    b = byte_counts(rows_matrix(r, "per_rank"), wire_row=100, logical_row=90)
    assert b["bytes_sent_per_rank"] == (m.sum(dim=1) * 100).tolist()
    assert b["bytes_recv_per_rank"] == (m.sum(dim=0) * 100).tolist()


@pytest.mark.parametrize("text,needle", [("1 2\n3\n", "must be square"), ("1 -2\n3 4\n", "negative token count -2"),
                                         ("1 x\n3 4\n", "not an integer"), ("# nothing\n", "no counts")])
def test_bad_traffic_matrices_are_one_line_errors(tmp_path, text, needle):
    path = tmp_path / "m.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=needle):
        read_matrix(str(path))
    with pytest.raises(UserError, match="cannot read"):
        read_matrix(str(tmp_path / "absent.txt"))


def test_presets_fill_only_the_keys_left_empty():
    from hpcbench.benchmarks.moe_alltoall.settings import points, sizes
    from hpcbench.core.testing import family_config

    cfg = family_config("moe_alltoall", ["moe_alltoall.preset=deepseek_v3"], smoke=False)
    gpu, cpu = sizes(cfg, "cuda"), sizes(cfg, "cpu")
    assert (gpu.tokens_per_rank, gpu.hidden, gpu.num_experts, gpu.top_k) == ((4096,), (7168,), (256,), (8,))
    assert gpu.dispatch_dtypes == ("fp8",) and gpu.layouts == ("per_rank",) and gpu.note is None
    assert cpu.tokens_per_rank == (256,) and cpu.hidden == (7168,) and "sized down" in cpu.note
    cfg = family_config("moe_alltoall", ["moe_alltoall.preset=deepseek_v3", "moe_alltoall.tokens_per_rank=[512]",
                                         "moe_alltoall.layouts=[per_rank,per_expert]"], smoke=False)
    assert sizes(cfg, "cpu").tokens_per_rank == (512,) and sizes(cfg, "cpu").note is None  # explicit keys win
    assert {p.layout for p in points(cfg, "cpu")} == {"per_rank", "per_expert"}


def test_deepep_anchor_shows_only_beside_its_hardware_and_configuration():
    import pandas as pd

    from hpcbench.benchmarks.moe_alltoall.report import REPORT
    from hpcbench.benchmarks.moe_alltoall.table import table

    point = {"impl": "torch", "layout": "per_rank", "dispatch_dtype": "fp8", "tokens_per_rank": 4096, "hidden": 7168,
             "num_experts": 256, "top_k": 8, "routing": "uniform", "imbalance": None, "world_size": 8,
             "imbalance_measured": 1.01, "backend": "nccl", "status": "ok", "wrong": 0}
    rows = [{**point, "phase": "dispatch", "median_s": 1e-3, "logical_GBps": 76.5},
            {**point, "phase": "combine", "median_s": 1e-3, "logical_GBps": 158.0}]
    (matched,) = REPORT.tables(pd.DataFrame([{**r, "device": "NVIDIA H800"} for r in rows]))
    assert matched.df["dispatch % of DeepEP H800"].tolist() == [50.0] and matched.df["combine % of DeepEP H800"][0] == 100
    for device, change in (("NVIDIA H200", {}), ("NVIDIA H800", {"world_size": 4})):
        (other,) = REPORT.tables(pd.DataFrame([{**r, "device": device, **change} for r in rows]))
        assert not [c for c in other.df.columns if "DeepEP" in c]
    failed = [{**rows[0], "status": "failed", "reason": "3 wrong received rows across ranks", "wrong": 3}, rows[1]]
    t = table(failed, fallback=False)
    assert "3 wrong received rows" in str(t.caption) and "FAILED" in str(t.caption)


# ---- the overlap machinery on synthetic timings ---------------------------------------------------


def test_overlapped_thread_hides_communication_behind_compute():
    """The two sides run at the same time, shown without reading a clock: each side announces it
    has started and waits for the other's announcement before its own work (run one after the
    other, in either order, the first side would wait in vain). Their times are then bounded
    below only (a loaded machine adds to a time, never takes from it); the metrics' known answers
    follow from VISION's formulas."""
    import threading

    started = {side: threading.Event() for side in ("comp", "comm")}
    met = []

    def side(me: str, other: str, seconds: float):
        def work():
            started[me].set()
            met.append((me, started[other].wait(timeout=10)))
            time.sleep(seconds)
        return work

    run = Overlapped(side("comp", "comm", 0.06), side("comm", "comp", 0.02), cuda=False)
    try:
        t0 = time.perf_counter()
        run()
        t_ovl = time.perf_counter() - t0
        (comm,), (comp,) = run.side_times(1)
    finally:
        run.close()
    assert sorted(met) == [("comm", True), ("comp", True)]  # each saw the other running
    assert t_ovl >= 0.06 and comm >= 0.02 and comp >= 0.06 and t_ovl >= max(comm, comp) - 1e-3
    exact = overlap_metrics(t_comp=0.06, t_comm=0.02, t_seq=0.08, t_ovl=0.065, t_comp_ovl=0.066, t_comm_ovl=0.02)
    assert exact["hidden_fraction"] == pytest.approx(0.75) and exact["hidden_fraction_bounded"] == pytest.approx(0.75)
    assert exact["exposed_comm_s"] == pytest.approx(0.005) and exact["fraction_of_ideal"] == pytest.approx(0.75)
    assert exact["compute_slowdown"] == pytest.approx(0.1) and exact["comm_slowdown"] == 0
    whole = overlap_metrics(t_comp=0.06, t_comm=0.02, t_seq=0.08, t_ovl=0.06, t_comp_ovl=0.06, t_comm_ovl=0.02)
    assert whole["hidden_fraction"] == pytest.approx(1.0) and whole["speedup_vs_seq"] == pytest.approx(0.08 / 0.06)


# ---- bit-exact dispatch and combine on gloo ranks -------------------------------------------------


def _cases(world: int, matrix: str) -> list[tuple]:
    groups = {2: (2, 1), 3: (3, 2), 4: (2, 1)}[world]
    uniform = [("uniform", {}, layout, dtype, weighted) for layout in ("per_rank", "per_expert")
               for dtype in ("bf16", "fp8") for weighted in (False, True)]
    others = [("skewed", {"imbalance": 3.0}), ("node_limited", {"groups": groups[0], "per_token": groups[1]}),
              ("matrix", {"matrix": matrix})]
    return uniform + [(kind, kw, layout, dtype, weighted) for kind, kw in others
                      for layout, dtype, weighted in (("per_rank", "fp8", True), ("per_expert", "bf16", False))]


def _exact_in(group, w: int, rank: int, matrix: str) -> dict:
    """Every case on `w` ranks (`group`; None: the default one): wrong entries summed over them."""
    from hpcbench.benchmarks.moe_alltoall.exchange import Exchange
    from hpcbench.benchmarks.moe_alltoall.reference import (
        check_combine,
        check_counts,
        check_dispatch,
    )

    def total(n: int) -> int:
        t = torch.tensor([n])
        torch.distributed.all_reduce(t, group=group)
        return int(t)

    out = {}
    for kind, kw, layout, dtype, weighted in _cases(w, matrix):
        tokens = matrix_tokens(read_matrix(matrix), 3) if kind == "matrix" else 24
        routing = draw(kind, w, tokens, 4 * w, 3, seed=5, **kw)
        ex = Exchange(RowFormat(dtype, 128, layout, 3, weighted), routing, rank, 5, torch.device("cpu"), group)
        ex.counts()
        ex.allocate()
        ex.dispatch()
        ex.expert_outputs()
        ex.combine()
        out[(kind, layout, dtype, weighted)] = total(check_counts(ex) + check_dispatch(ex) + check_combine(ex))
        if kind == "matrix":  # what each rank sends and receives is the matrix's row and column
            m = read_matrix(matrix)
            out["matrix splits"] = out.get("matrix splits", 0) + total(
                int(ex.handle.send_splits != m[rank].tolist()) + int(ex.handle.recv_splits != m[:, rank].tolist()))
    ex.recv[-1, 0] ^= 1  # a control: one flipped byte is one wrong row
    ex.out[0, 0] += 1
    out["control"] = (total(check_dispatch(ex)), total(check_combine(ex)))
    return out


def _skewed_matrix(tmp_path, w: int) -> str:
    """Token counts per (source, destination) on `w` ranks: a skewed first column, uneven rows."""
    path = tmp_path / f"m{w}.txt"
    path.write_text("\n".join(" ".join(str((3 * i + 5 * j) % 7 + (9 if j == 0 else 0)) for j in range(w))
                              for i in range(w)))
    return str(path)


WORLDS = (2, 3, 4)


def _exact_on_ranks(matrices: dict) -> dict:
    """One 4-rank gloo world; the 2- and 3-rank cases run in subgroups of it (one launch, not three)."""
    from hpcbench.runtime.device import resolve_device
    from hpcbench.runtime.distributed import init_world, shutdown_world

    torch.set_num_threads(1)
    world = init_world(resolve_device("cpu"), "gloo", timeout_s=120)
    out = {}
    for w in WORLDS:
        group = None if w == world.size else torch.distributed.new_group(list(range(w)))  # every rank calls it
        if world.rank < w:
            out[w] = _exact_in(group, w, world.rank, matrices[w])
        torch.distributed.barrier()
    shutdown_world()
    return out


@pytest.mark.smoke
@pytest.mark.world
def test_dispatch_and_combine_are_exact_on_gloo(tmp_path):
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    matrices = {w: _skewed_matrix(tmp_path, w) for w in WORLDS}
    # spawned ranks: forking pytest, which has threads (OpenMP, gloo) of its own, can hang a child
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=max(WORLDS), rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", max_restarts=0, run_id="moe",
                          start_method="spawn", monitor_interval=0.1)
    results = elastic_launch(config, _exact_on_ranks)(matrices)[0]
    assert sorted(results) == list(WORLDS)
    for w, out in results.items():
        assert out.pop("control") == (w, w), w  # the checks see a single flipped byte or value on each rank
        assert out.pop("matrix splits") == 0, w
        assert out == {(kind, layout, dtype, weighted): 0 for kind, _, layout, dtype, weighted in _cases(w, matrices[w])}
        assert len(out) == 14


# ---- the family end to end ------------------------------------------------------------------------

SMALL = ["benchmark=moe_alltoall", "moe_alltoall.tokens_per_rank=[48]", "moe_alltoall.hidden=[128]",
         "moe_alltoall.num_experts=[8]", "moe_alltoall.top_k=[2]", "moe_alltoall.iters=3",
         "moe_alltoall.warmup_iters=0"]


@pytest.mark.subprocess
@pytest.mark.world
def test_cli_runs_skewed_points_and_show_compare_report_read_them(cli, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    from hpcbench.core.cli import main

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])

    out = cli(*SMALL, "moe_alltoall.routing=skewed", "moe_alltoall.imbalance=[1,3,5]", "moe_alltoall.dispatch_dtypes=[fp8]",
              "moe_alltoall.weighted=true", timeout=240)
    assert out.returncode == 0, out.stderr
    for header in ("MoE dispatch / combine", "disp GB/s", "comb GB/s", "x unif", "T_ovl us", "wrong rows or entries"):
        assert header in out.stdout
    (run_dir,) = (tmp_path / "results").iterdir()
    df = load_run(run_dir)
    torch_rows, ep = df[df.impl == "torch"], df[df.impl == "deep_ep"]
    assert len(torch_rows) == 3 * 2 * 4 and (torch_rows.status == "ok").all() and (torch_rows.wrong == 0).all()
    assert len(ep) == 3 * 2 * 3 and (ep.status == "skipped").all() and ep.reason.str.contains("DeepEP").all()
    # DeepEP's first phase times a local layout kernel, torch's an exchange: they never share a name
    assert set(ep.phase) == {"layout", "dispatch", "combine"} and "layout" not in set(torch_rows.phase)
    for r in torch_rows.to_dict("records"):
        assert r["imbalance_measured"] == pytest.approx(r["imbalance"], rel=0.10)
        assert len(r["samples_s"]) == 3 and r["median_s"] > 0
        if r["phase"] in ("dispatch", "combine"):
            assert sum(r["bytes_sent_per_rank"]) == sum(r["bytes_recv_per_rank"])
            assert r["logical_GBps"] == pytest.approx(sum(r["logical_bytes_per_rank"]) / 2 / r["median_s"] / 1e9)
            assert r["time_vs_uniform"] == pytest.approx(r["median_s"] * 1e6 / r["uniform_time_us"])
        if r["phase"] == "overlapped":
            assert r["median_s"] * 1e6 == pytest.approx(r["t_ovl_us"]) and r["compute_flops"] > 0
    d = torch_rows[(torch_rows.phase == "dispatch") & (torch_rows.layout == "per_rank")].iloc[0]
    assert d.logical_bytes_per_rank == [n * (128 + 4) for n in d.rows_recv_per_rank]  # FP8 incl. scales
    assert d.bytes_sent_per_rank == [n * (132 + 2 * 2 + 4 * 2) for n in d.rows_sent_per_rank]  # + ids, weights
    for args in (["show", str(run_dir)], ["compare", str(run_dir), str(run_dir)],
                 ["report", str(run_dir), "--out", str(tmp_path / "rep")]):
        assert main(args) == 0, args
    shown = capsys.readouterr().out
    assert "skewed r=5" in shown and "matched points" in shown
    assert {p.name for p in (tmp_path / "rep").glob("*.png")} == {
        "moe_alltoall_bw_tokens.png", "moe_alltoall_bw_imbalance.png", "moe_alltoall_overlap.png"}
    assert "## MoE dispatch / combine" in (tmp_path / "rep" / "report.md").read_text()
    # the bandwidth-vs-imbalance plot draws the stored points: a line per layout and phase, the run named
    (fig,) = [f for f in figures if f.get_suptitle().startswith("MoE dispatch / combine bandwidth vs routing")]
    drawn = {f"{ax.get_title()}: {line.get_label()}": line.get_xydata().tolist()
             for ax in fig.axes for line in ax.get_lines()}
    bw = torch_rows[torch_rows.phase.isin(["dispatch", "combine"])]
    want = {f"{phase}: {run_dir.name} · torch · {layout} · fp8":
            g.sort_values("imbalance_measured")[["imbalance_measured", "logical_GBps"]].values.tolist()
            for (phase, layout), g in bw.groupby(["phase", "layout"])}
    assert drawn == want and len(want) == 2 * 2


def _matrix_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "matrix.txt"
    path.write_text(text)
    return str(path)


BAD = [
    ([], {}, "moe_alltoall.top_k=[9]", "top_k=9 is more than num_experts=8"),
    ([], {}, "moe_alltoall.hidden=[100]", "hidden=100: FP8 dispatch needs a multiple of 128"),
    ([], {}, "moe_alltoall.layouts=[sideways]", "moe_alltoall.layouts[0]='sideways' (available"),
    ([], {}, "moe_alltoall.preset=deepseek_v4", "moe_alltoall.preset='deepseek_v4' (available"),
    (["moe_alltoall.routing=skewed"], {}, "moe_alltoall.imbalance=[0.5]", "moe_alltoall.imbalance=[0.5]: use ratios >= 1"),
    (["moe_alltoall.routing=node_limited"], {}, "moe_alltoall.groups_per_token=3", "need 1 <= groups_per_token"),
    (["moe_alltoall.routing=matrix"], {}, "moe_alltoall.traffic_matrix=MATRIX:1 2\n3\n", "must be square"),
    (["moe_alltoall.routing=matrix"], {}, "moe_alltoall.traffic_matrix=MATRIX:4 -1\n0 2\n", "negative token count -1"),
    (["moe_alltoall.routing=matrix"], {}, "moe_alltoall.traffic_matrix=MATRIX:60 1\n0 2\n", "needs at least 60"),
    # the world size is known once a launcher (torchrun, srun) set it: checked before anything starts. Ranks that
    # hpcbench starts itself run the same check first thing (runner._join), and exit 2 with rank 0's one line
    ([], {"WORLD_SIZE": "3"}, "moe_alltoall.num_experts=[16]", "num_experts=16 is not divisible by the 3 ranks"),
    (["moe_alltoall.routing=node_limited", "moe_alltoall.num_experts=[12]"], {"WORLD_SIZE": "3"},
     "moe_alltoall.node_groups=2", "node_groups=2 does not divide the 3 ranks"),
    (["moe_alltoall.routing=matrix", "moe_alltoall.num_experts=[12]"], {"WORLD_SIZE": "3"},
     "moe_alltoall.traffic_matrix=MATRIX:4 1\n0 2\n",
     "traffic_matrix is 2 x 2, the run has 3 ranks"),
]


@pytest.mark.parametrize("extra,env,bad,needle", BAD, ids=[b[3][:40] for b in BAD])
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, extra, env, bad, needle):
    from hpcbench.core.cli import main

    monkeypatch.chdir(tmp_path)
    if env:  # as torchrun sets them for rank 0
        monkeypatch.setenv("RANK", "0")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    if "MATRIX:" in bad:
        key, text = bad.split("=MATRIX:")
        bad = f"{key}={_matrix_file(tmp_path, text)}"
    assert main([*SMALL, *extra, bad]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# ---- the report plots -----------------------------------------------------------------------------

def test_report_plots_draw_each_runs_median_bandwidth_and_overlap_times(tmp_path, monkeypatch):
    import pandas as pd
    from matplotlib.figure import Figure

    from hpcbench.benchmarks.moe_alltoall.report import bw_vs_imbalance, bw_vs_tokens, overlap_bars

    figures, save = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **kw: (figures.append(fig), save(fig, *a, **kw))[1])
    base = {"impl": "torch", "hidden": 128, "num_experts": 8, "top_k": 2, "routing": "skewed"}
    rows = []
    for r, run in enumerate(("run-a", "run-b")):
        for layout in ("per_rank", "per_expert"):
            for tokens, imb in ((96, 3.0), (48, 1.2), (192, 5.0)):  # neither in token nor in imbalance order
                for p, phase in enumerate(("dispatch", "combine")):
                    rows.append({**base, "run": run, "layout": layout, "dispatch_dtype": "fp8", "phase": phase,
                                 "tokens_per_rank": tokens, "imbalance": imb, "imbalance_measured": imb + 0.01 * r,
                                 "logical_GBps": tokens / 10 + 100 * p + 10 * r + (layout == "per_expert")})
            rows.append({**base, "run": run, "layout": layout, "dispatch_dtype": "fp8", "phase": "overlapped",
                         "tokens_per_rank": 48, "imbalance": 1.2, "imbalance_measured": 1.2, "logical_GBps": None,
                         "t_comp_us": 50.0 + r, "t_comm_us": 40.0 + r, "t_seq_us": 90.0 + 2 * r,
                         "t_ovl_us": 60.0 + 3 * r + (layout == "per_expert")})
    df = pd.DataFrame(rows)
    # run-a's per_rank dispatch at 96 tokens measured twice more: the median is the first
    again = df[(df["run"] == "run-a") & (df["layout"] == "per_rank") & (df["phase"] == "dispatch")
               & (df["tokens_per_rank"] == 96)]
    df2 = pd.concat([df, again.assign(logical_GBps=again["logical_GBps"] * 9),
                     again.assign(logical_GBps=again["logical_GBps"] / 9)], ignore_index=True)
    bw = df[df["phase"].isin(["dispatch", "combine"])]
    for plot, x in ((bw_vs_tokens, "tokens_per_rank"), (bw_vs_imbalance, "imbalance_measured")):
        figures.clear()
        p = plot(df2, tmp_path)
        (fig,) = figures
        assert [ax.get_title() for ax in fig.axes] == ["dispatch", "combine"]
        drawn = {f"{ax.get_title()}: {line.get_label()}": line.get_xydata().tolist()
                 for ax in fig.axes for line in ax.get_lines()}
        want = {f"{phase}: {run} · torch · {layout} · fp8": g.sort_values(x)[[x, "logical_GBps"]].values.tolist()
                for (phase, run, layout), g in bw.groupby(["phase", "run", "layout"])}
        assert drawn == want and sorted(p.series) == sorted(want)
        assert want["dispatch: run-a · torch · per_rank · fp8"][1] == [96 if x == "tokens_per_rank" else 3.0, 9.6]
    # expert GEMMs against dispatch + combine: the four times per layout, both runs
    figures.clear()
    p = overlap_bars(df2, tmp_path)
    (fig,) = figures
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["per_rank", "per_expert"]
    names = {"t_comp_us": "T_comp", "t_comm_us": "T_comm", "t_seq_us": "T_seq", "t_ovl_us": "T_ovl"}
    ovl = df[df["phase"] == "overlapped"].set_index(["run", "layout"])
    want = {f"{run} · {name}": {i: ovl.loc[(run, layout), col] for i, layout in enumerate(("per_rank", "per_expert"))}
            for run in ("run-a", "run-b") for col, name in names.items()}
    assert p.series == list(want)
    tops = {label: {round(b.get_x() + b.get_width() / 2): b.get_y() + b.get_height() for b in c.patches}
            for label, c in zip(p.series, ax.containers)}
    assert tops == want
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [*names.values(), "run-a", "run-b"]
