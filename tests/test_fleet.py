"""`hpcbench fleet`: robust z-scores across node runs, outliers in the bad direction only, refusals."""

import numpy as np
import pytest

from hpcbench.analysis import fleet, fleet_cli
from hpcbench.results import RunWriter
from hpcbench.results.schema import SCHEMA_VERSION

# per-node summary lines: (metric, unit, higher_is_better, healthy value)
LINES = [("matmul_bf16_tflops", "TFLOP/s", True, 780.0), ("hbm_copy_GBps", "GB/s", True, 4100.0),
         ("all_reduce_busbw_GBps", "GB/s", True, 470.0), ("pipeline_bubble_1f1b", "fraction", False, 0.20)]
# small, hand-picked node-to-node spread: the median and MAD of each metric are easy to compute
SPREAD = [0.99, 1.00, 1.01, 1.02, 0.98]


def write_run(root, run_id, host, rows, suite=("fingerprint",), device="NVIDIA H200", params=None, compact=True,
              schema=SCHEMA_VERSION):
    w = RunWriter(root / run_id)
    w.write_metadata({"schema_version": schema, "run_id": run_id, "suite": list(suite), "status": "complete",
                      "device_name": device, "gpu_name": device, "hostname": host, "node_name": host,
                      "fallback": False, "params": params or {"fingerprint": ["metric"]}})
    for i, r in enumerate(rows):
        w.append({"schema_version": SCHEMA_VERSION, "run_id": run_id, "point": i, "status": "ok", "device": device,
                  "fallback": False, **r})
    w.close()
    if compact:
        w.compact()
    return root / run_id


def lines(factor=1.0, overrides=None):
    rows = []
    for metric, unit, hib, value in LINES:
        v = (overrides or {}).get(metric, value * factor)
        rows.append({"benchmark": "fingerprint", "metric": metric, "unit": unit, "higher_is_better": hib, "value": v})
    return rows


def fleet_of(tmp_path, bad=None, n=5):
    """n nodes; `bad` = {node index: {metric: value}}."""
    return [write_run(tmp_path, f"run{k}", f"node{k:02d}", lines(SPREAD[k % len(SPREAD)], (bad or {}).get(k)))
            for k in range(n)]


def test_robust_z_against_hand_computed_values():
    # column [1, 2, 3, 4, 100]: median 3, |dev| = [2, 1, 0, 1, 97] -> MAD 1, scale 1.4826
    values = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    median, scale, z = fleet.robust_z(values)
    assert median[0] == 3.0 and scale[0] == pytest.approx(1.4826)
    assert z[4, 0] == pytest.approx(97 / 1.4826) and z[0, 0] == pytest.approx(-2 / 1.4826)
    # MAD 0 (three of five equal): mean absolute deviation [0, 0, 0, 1, 9] / 5 = 2 -> scale 2.506628
    median, scale, z = fleet.robust_z(np.array([[5.0], [5.0], [5.0], [6.0], [14.0]]))
    assert scale[0] == pytest.approx(1.253314 * 2) and z[4, 0] == pytest.approx(9 / (1.253314 * 2))
    # every node equal: z is 0, never a division by zero
    _, scale, z = fleet.robust_z(np.full((4, 1), 7.0))
    assert np.isinf(scale[0]) and (z == 0).all()


def test_one_planted_slow_node_is_the_only_one_flagged_with_its_reason(tmp_path, capsys):
    runs = fleet_of(tmp_path, bad={3: {"hbm_copy_GBps": 2500.0}})
    f = fleet.analyse(runs)
    flagged = f.outliers()
    assert [(r["node"], r["metric"]) for r in flagged] == [("node03", "hbm_copy_GBps")]
    # hbm values: 4059, 4100, 4141, 2500 (planted), 4018 -> median 4059, MAD = median(0, 41, 82, 1559, 41) = 41
    r = flagged[0]
    assert r["median"] == pytest.approx(4059.0)
    assert r["z"] == pytest.approx((2500 - 4059) / (1.4826 * 41), rel=1e-6)
    assert "hbm_copy_GBps = 2500" in r["reason"] and "4059" in r["reason"] and "z = -25.6" in r["reason"]
    # the best node on the metric ranks 1, the planted one last
    j = [m.name for m in f.metrics].index("hbm_copy_GBps")
    assert f.rank[2, j] == 1 and f.rank[3, j] == 5
    assert fleet_cli.main([*map(str, runs), "--out", str(tmp_path / "rep"), "--fail-on-outlier"]) == 1
    out = capsys.readouterr().out
    assert "node03" in out and "outlier" in out


def test_a_faster_node_is_not_an_outlier_only_a_slower_one(tmp_path):
    # node 1 copies far faster than the rest: good news, not a fault; node 4's bubble is far larger: bad
    runs = fleet_of(tmp_path, bad={1: {"hbm_copy_GBps": 9000.0}, 4: {"pipeline_bubble_1f1b": 0.9}})
    assert [(r["node"], r["metric"]) for r in fleet.analyse(runs).outliers()] == [("node04", "pipeline_bubble_1f1b")]


def test_no_outlier_flags_nothing_and_the_gate_passes(tmp_path, capsys):
    runs = fleet_of(tmp_path)
    f = fleet.analyse(runs)
    assert f.outliers() == [] and not f.outlier.any()
    assert fleet_cli.main([*map(str, runs), "--out", str(tmp_path / "rep"), "--fail-on-outlier"]) == 0
    assert "0 outlier value(s) on 0 node(s)" in capsys.readouterr().out


def test_a_failed_check_is_an_outlier_whatever_its_number(tmp_path):
    runs = fleet_of(tmp_path, n=4)
    rows = lines()
    rows[0].update(status="failed", reason="calc_diff 0.3 > 1e-5", value=None)
    runs.append(write_run(tmp_path, "run9", "node09", rows))
    flagged = fleet.analyse(runs).outliers()
    assert len(flagged) == 1 and flagged[0]["node"] == "node09"
    assert "failed its check (calc_diff 0.3 > 1e-5)" in flagged[0]["reason"]


def test_two_nodes_are_ranked_and_never_flagged(tmp_path):
    runs = fleet_of(tmp_path, n=2, bad={1: {"hbm_copy_GBps": 100.0}})
    f = fleet.analyse(runs)
    j = [m.name for m in f.metrics].index("hbm_copy_GBps")
    assert list(f.rank[:, j]) == [1, 2] and f.z[1, j] == pytest.approx(-0.6745, abs=1e-3)
    assert not f.outlier.any()


def test_other_families_rank_each_points_median_time(tmp_path):
    params = {"gemm": ["M", "N", "K", "kernel"]}
    runs = []
    for k in range(5):
        slow = 3.0 if k == 2 else 1.0
        rows = [{"benchmark": "gemm", "M": 64, "N": 64, "K": 64, "kernel": "torch_bf16",
                 "median_s": 1e-4 * SPREAD[k] * slow},
                {"benchmark": "gemm", "M": 128, "N": 128, "K": 128, "kernel": "torch_bf16", "median_s": 8e-4 * SPREAD[k]}]
        runs.append(write_run(tmp_path, f"g{k}", f"host{k}", rows, suite=("gemm",), params=params,
                              compact=bool(k % 2),  # the log and the columnar copy read alike
                              schema=1 if k == 4 else SCHEMA_VERSION))  # and a run of an older schema
    f = fleet.analyse(runs)
    assert [m.name for m in f.metrics] == ["gemm M=64 N=64 K=64 kernel=torch_bf16 median time",
                                           "gemm M=128 N=128 K=128 kernel=torch_bf16 median time"]
    assert [(r["node"], r["metric"]) for r in f.outliers()] == [("host2", f.metrics[0].name)]


@pytest.mark.parametrize("case, message", [
    ("family", "fleet: runs of different families: fingerprint (2 runs: node00, node01); gemm (1 run: host9)"),
    ("device", ("fleet: runs of different devices: NVIDIA H200 (2 runs: node00, node01); "
                "NVIDIA H100 80GB HBM3 (1 run: h100)")),
    ("one", "fleet: one node (node00): nothing to rank; give the runs of two or more nodes"),
    ("not a run", "not a results run"),
])
def test_refusals_are_one_line_and_exit_2(tmp_path, capsys, case, message):
    runs = fleet_of(tmp_path, n=2)
    if case == "family":
        runs.append(write_run(tmp_path, "g", "host9", [{"benchmark": "gemm", "M": 1, "N": 1, "K": 1, "kernel": "x",
                                                        "median_s": 1.0}], suite=("gemm",),
                              params={"gemm": ["M", "N", "K", "kernel"]}))
    elif case == "device":
        runs.append(write_run(tmp_path, "h", "h100", lines(), device="NVIDIA H100 80GB HBM3"))
    elif case == "one":
        runs = runs[:1]
    else:
        (tmp_path / "empty").mkdir()
        runs.append(tmp_path / "empty")
    assert fleet_cli.main([*map(str, runs), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "rep").exists()


def test_report_directory_has_a_strip_plot_per_metric_and_every_cell_in_the_csv(tmp_path, monkeypatch):
    from pathlib import Path

    import pandas as pd
    from matplotlib.figure import Figure

    figures, save = {}, Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, *a, **kw: (figures.setdefault(Path(path).name, fig),
                                                                       save(fig, path, *a, **kw))[1])
    runs = fleet_of(tmp_path, bad={3: {"hbm_copy_GBps": 2500.0}})
    out = tmp_path / "rep"
    assert fleet_cli.main([*map(str, runs), "--out", str(out)]) == 0
    plots = sorted(out.glob("fleet-*.png"))
    assert len(plots) == len(LINES)
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        assert f"({p.name})" in (out / "fleet.md").read_text()
    # each strip plot: the five nodes' values of its metric, the planted slow node as the one outlier
    assert sorted(figures) == [p.name for p in plots]
    for metric, unit, hib, value in LINES:
        (name,) = [n for n in figures if n.endswith(f"-{metric}.png")]
        (ax,) = figures[name].axes
        assert ax.get_xlabel() == f"{metric} ({unit}), " + ("higher" if hib else "lower") + " is better"
        assert figures[name].get_suptitle() == f"{metric}: 5 nodes"
        values = [value * SPREAD[k] for k in range(5)]  # node00 ... node04
        flagged = []
        if metric == "hbm_copy_GBps":
            values[3] = 2500.0
            flagged = [values.pop(3)]
        points = {c.get_label(): sorted(c.get_offsets()[:, 0].tolist()) for c in ax.collections}
        want = {"node": sorted(values), **({"outlier": flagged} if flagged else {})}
        assert points.keys() == want.keys() and all(points[k] == pytest.approx(want[k]) for k in want), points
        assert [t.get_text() for t in ax.texts] == (["node03"] if flagged else [])
        (median,) = [ln for ln in ax.get_lines() if ln.get_label() == "fleet median"]
        assert median.get_xdata() == pytest.approx([np.median(values + flagged)] * 2)
    csv = pd.read_csv(out / "fleet.csv")
    assert len(csv) == 5 * len(LINES) and csv["outlier"].sum() == 1
    bad = csv[csv["outlier"]].iloc[0]
    assert bad["node"] == "node03" and bad["metric"] == "hbm_copy_GBps" and bad["rank"] == 5
    assert "## Outliers" in (out / "fleet.md").read_text() and (out / "fleet.html").is_file()


def test_a_node_name_shared_by_runs_gets_the_run_id(tmp_path):
    runs = [write_run(tmp_path, f"slurm-7_{k}", "localhost", lines(SPREAD[k])) for k in range(3)]
    assert fleet.analyse(runs).names == ["localhost (slurm-7_0)", "localhost (slurm-7_1)", "localhost (slurm-7_2)"]
