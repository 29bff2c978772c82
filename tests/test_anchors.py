"""Published anchors: matched by device and configuration, or nothing; the seed file's entries."""

import math

import pandas as pd
import pytest

from hpcbench.models import anchors
from hpcbench.api.errors import UserError

TOY = """
metrics:
  matmul_bf16_tflops: {unit: TFLOP/s}
  all_reduce_busbw_GBps: {unit: GB/s}
  step_ms: {unit: ms}
rows:
  - benchmark: gemm
    where: {kernel: "^torch_"}
    metric: "matmul_{dtype}_tflops"
    value: tflops
    config: {M: M, N: N, K: K}
  - benchmark: collectives
    where: {record: "^measurement$"}
    metric: "{collective}_busbw_GBps"
    value: busbw_GBps
    config: {ranks: world_size, bytes: size_bytes, nccl_algo: "env:NCCL_ALGO|default"}
anchors:
  - {metric: matmul_bf16_tflops, hardware: H200, exclude: "NVL|PCIe", config: {M: 8192, N: 8192, K: 8192},
     value: 800, unit: TFLOP/s, source: "https://example.org/h200"}
  - {metric: matmul_bf16_tflops, hardware: H100, exclude: "NVL|PCIe", config: {M: 8192, N: 8192, K: 8192},
     value: 750, unit: TFLOP/s, source: "https://example.org/h100"}
  - {metric: matmul_bf16_tflops, hardware: H100, exclude: "NVL|PCIe", config: {},
     value: 700, unit: TFLOP/s, source: "https://example.org/h100-any-shape"}
  - {metric: all_reduce_busbw_GBps, hardware: H200, config: {ranks: 8, bytes: 1024}, value: 400, unit: GB/s,
     source: "https://example.org/nvls"}
  - {metric: all_reduce_busbw_GBps, hardware: H200, config: {ranks: 8, bytes: 1024, nccl_algo: ring}, value: 300,
     unit: GB/s, source: "https://example.org/ring"}
  - {metric: step_ms, hardware: H200, config: {}, value: 10, unit: ms, source: "repo/path.md"}
"""


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text(TOY)
    return anchors.registry(path), path


@pytest.mark.parametrize("device, expected", [
    ("NVIDIA H200", 800.0),
    ("NVIDIA H200 NVL", None),  # another power envelope: excluded, not guessed
    ("NVIDIA GH200 480GB", None),  # H200 is a whole token of the name, not a substring of GH200
    ("NVIDIA H100 80GB HBM3", 750.0),
    ("NVIDIA H100 PCIe", None),
    ("NVIDIA A100-SXM4-80GB", None),  # no anchor for it
    ("Some Future GPU", None),
    (None, None),
])
def test_device_patterns(toy, device, expected):
    reg, _ = toy
    hit = reg.match("matmul_bf16_tflops", device, M=8192, N=8192, K=8192)
    assert (hit.value if hit else None) == expected


def test_every_config_key_must_match_and_extra_keys_are_fine(toy):
    reg, _ = toy
    assert reg.match("matmul_bf16_tflops", "NVIDIA H200", M=8192, N=8192, K=4096) is None
    assert reg.match("matmul_bf16_tflops", "NVIDIA H200", M=8192, N=8192) is None  # K missing: no match
    assert reg.match("matmul_bf16_tflops", "NVIDIA H200", M=8192.0, N=8192, K=8192, kernel="torch_bf16").value == 800
    assert reg.match("matmul_bf16_tflops", "NVIDIA H200", M=float("nan"), N=8192, K=8192) is None
    assert reg.match("all_reduce_busbw_GBps", "NVIDIA H200", ranks=4, bytes=1024) is None


def test_the_most_specific_anchor_wins(toy):
    reg, _ = toy
    # H100: the exact-shape anchor (3 keys) beats the any-shape one (0 keys); another shape gets the latter
    assert reg.match("matmul_bf16_tflops", "NVIDIA H100 80GB HBM3", M=8192, N=8192, K=8192).value == 750
    assert reg.match("matmul_bf16_tflops", "NVIDIA H100 80GB HBM3", M=1024, N=1024, K=1024).value == 700
    # the ring figure needs nccl_algo=ring (words compare case-insensitively); without it, the default
    assert reg.match("all_reduce_busbw_GBps", "NVIDIA H200", ranks=8, bytes=1024, nccl_algo="Ring").value == 300
    assert reg.match("all_reduce_busbw_GBps", "NVIDIA H200", ranks=8, bytes=1024).value == 400


def test_percent_of_anchor_is_100_when_as_good_as_published(toy):
    reg, _ = toy
    rate = reg.match("matmul_bf16_tflops", "NVIDIA H200", M=8192, N=8192, K=8192)
    assert anchors.pct_of_anchor(600.0, rate) == pytest.approx(75.0)
    step = reg.match("step_ms", "NVIDIA H200")
    assert anchors.pct_of_anchor(20.0, step) == pytest.approx(50.0)  # twice the published time: 50 %
    assert anchors.pct_of_anchor(None, rate) is None and anchors.pct_of_anchor(600.0, None) is None
    assert anchors.pct_of_anchor(float("nan"), rate) is None and anchors.pct_of_anchor(-1.0, rate) is None


def test_annotate_fills_matching_ok_gpu_rows_only(toy):
    _, path = toy
    df = pd.DataFrame([
        {"benchmark": "gemm", "kernel": "torch_bf16", "dtype": "bf16", "M": 8192, "N": 8192, "K": 8192,
         "tflops": 600.0, "status": "ok", "fallback": False},
        {"benchmark": "gemm", "kernel": "triton_bf16", "dtype": "bf16", "M": 8192, "N": 8192, "K": 8192,
         "tflops": 500.0, "status": "ok", "fallback": False},  # not a rule's row (library baselines only)
        {"benchmark": "gemm", "kernel": "torch_bf16", "dtype": "bf16", "M": 8192, "N": 8192, "K": 8192,
         "tflops": None, "status": "failed", "fallback": False},  # failed: no speed, no anchor
        {"benchmark": "gemm", "kernel": "torch_bf16", "dtype": "bf16", "M": 8192, "N": 8192, "K": 8192,
         "tflops": 1.0, "status": "ok", "fallback": True},  # CPU fallback: never held against a GPU figure
        {"benchmark": "collectives", "record": "measurement", "collective": "all_reduce", "world_size": 8,
         "size_bytes": 1024, "busbw_GBps": 360.0, "status": "ok", "fallback": False},
        {"benchmark": "collectives", "record": "projection", "collective": "all_reduce", "world_size": 8,
         "size_bytes": 1024, "busbw_GBps": 999.0, "status": "ok", "fallback": False},
    ], index=[10, 10, 11, 12, 13, 14])  # a caller's index, even a repeated one, is kept
    df.attrs["metadata"] = {"environment": {"NCCL_ALGO": "Ring"}}
    out = anchors.annotate(df, "NVIDIA H200", path)
    assert list(out.index) == list(df.index)
    assert out["anchor_value"].tolist()[0] == 800 and out["pct_of_anchor"].tolist()[0] == pytest.approx(75.0)
    assert out["anchor_value"].isna().tolist() == [False, True, True, True, False, True]
    # NCCL_ALGO=Ring recorded in the run's environment: the ring figure, 360 / 300
    assert out["anchor_value"].tolist()[4] == 300 and out["pct_of_anchor"].tolist()[4] == pytest.approx(120.0)
    assert out["anchor_source"].tolist()[4] == "https://example.org/ring"
    assert anchors.annotate(df, "NVIDIA A100-SXM4-80GB", path)["anchor_value"].isna().all()
    assert anchors.annotate(df, None, path)["pct_of_anchor"].isna().all()


@pytest.mark.parametrize("entry, message", [
    ("{metric: step_ms, hardware: H200, config: {}, value: 10, unit: ms}", "anchor 1 (step_ms): no source"),
    ("{metric: step_ms, hardware: H200, config: {}, value: 10, unit: ms, source: ''}", "no source"),
    ("{metric: step_ms, hardware: H200, config: {}, value: -1, unit: ms, source: x}", "is not a positive number"),
    ("{metric: step_ms, hardware: H200, config: {}, value: 1, unit: s, source: x}", "unit s but step_ms is in ms"),
    ("{metric: nope, hardware: H200, config: {}, value: 1, unit: ms, source: x}", "unknown metric"),
    ("{metric: step_ms, hardware: '(H200', config: {}, value: 1, unit: ms, source: x}", "bad pattern"),
    ("{metric: step_ms, hardware: H200, config: {}, value: 1, unit: ms, source: x, typo: 1}", "unknown key(s) typo"),
    ("{metric: step_ms, hardware: H200, config: {}, value: 1, unit: ms, source: x, best_shape: {M: 8, N: 8}}",
     "best_shape must be {M: int, N: int, K: int}"),
    ("{metric: step_ms, hardware: H200, config: {}, value: 1, unit: ms, source: x, best_shape: {M: 8, N: 8, K: 0}}",
     "best_shape must be"),
    ("{metric: step_ms, hardware: H200, config: {}, value: 1, unit: ms, source: x, best_shape: 2048x2048x13312}",
     "best_shape must be"),
])
def test_a_bad_entry_is_a_one_line_user_error(tmp_path, entry, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"metrics:\n  step_ms: {{unit: ms}}\nanchors:\n  - {entry}\n")
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        anchors.load(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_two_entries_for_the_same_hardware_and_configuration_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    entry = "{metric: step_ms, hardware: H200, config: {M: 1}, value: 1, unit: ms, source: x}"
    path.write_text(f"metrics:\n  step_ms: {{unit: ms}}\nanchors:\n  - {entry}\n  - {entry}\n")
    with pytest.raises(UserError, match="anchors 1 and 2 .* same hardware and configuration"):
        anchors.load(path)


def test_show_refuses_a_broken_anchors_file_with_exit_2(tmp_path, monkeypatch, capsys):
    from hpcbench.core import cli

    path = tmp_path / "bad.yaml"
    path.write_text("metrics:\n  step_ms: {unit: ms}\nanchors:\n  - {metric: step_ms, hardware: H200, value: 1, unit: ms}\n")
    monkeypatch.setattr(anchors, "default_path", lambda: path)
    run = _gemm_run(tmp_path, "NVIDIA H200", 700.0)
    assert cli.main(["show", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no source" in err and err.count("\n") == 1


# ---- the seed file ------------------------------------------------------------------------------

def test_the_seed_file_loads_and_every_entry_has_a_source_and_a_positive_value():
    seed = anchors.load()
    assert len(seed) >= 20
    metrics = {a.metric for a in seed}
    assert {"matmul_bf16_tflops", "matmul_fp8_tflops", "mamf_bf16_tflops", "mamf_fp8_tflops", "grouped_fp8_tflops",
            "all_reduce_busbw_GBps", "moe_dispatch_GBps", "moe_combine_GBps"} <= metrics
    for a in seed:
        assert a.source.strip() and a.value > 0 and math.isfinite(a.value) and a.unit
    assert set(anchors.registry().units) >= {"hbm_copy_GBps"} | metrics


@pytest.mark.parametrize("metric, device, config, value", [
    ("matmul_bf16_tflops", "NVIDIA H200", {"M": 8192, "N": 8192, "K": 8192}, 788),  # measured H200 torch BF16
    ("matmul_bf16_tflops", "NVIDIA H200 NVL", {"M": 8192, "N": 8192, "K": 8192}, None),
    ("mamf_bf16_tflops", "NVIDIA H100 80GB HBM3", {}, 794.5),
    ("mamf_fp8_tflops", "NVIDIA H200", {}, 1453.4),
    ("mamf_bf16_tflops", "NVIDIA A100-SXM4-80GB", {}, 271.2),
    ("mamf_bf16_tflops", "NVIDIA A100-PCIE-40GB", {}, None),
    ("mamf_fp8_tflops", "NVIDIA A100-SXM4-80GB", {}, None),  # no FP8 on A100: nothing, not a guess
    ("all_reduce_busbw_GBps", "NVIDIA H200", {"ranks": 8, "bytes": 8 * 2**30}, 473.1),
    ("all_reduce_busbw_GBps", "NVIDIA H200", {"ranks": 8, "bytes": 8 * 2**30, "nccl_algo": "Ring"}, 365.6),
    ("all_reduce_busbw_GBps", "NVIDIA H200", {"ranks": 8, "bytes": 4 * 2**30}, None),  # no figure at 4 GiB
    ("matmul_fp8_tflops", "NVIDIA H800", {"M": 4096, "N": 7168, "K": 16384, "scaling": "block"}, 1520),
    ("matmul_fp8_tflops", "NVIDIA H800", {"M": 4096, "N": 7168, "K": 16384, "scaling": "tensor"}, None),
    ("grouped_fp8_tflops", "NVIDIA H800", {"G": 4, "M": 8192, "N": 4096, "K": 7168, "layout": "contiguous"}, 1346),
    ("moe_dispatch_GBps", "NVIDIA H800", {"ranks": 8, "layout": "per_rank", "dispatch_dtype": "fp8",
                                          "tokens_per_rank": 4096, "hidden": 7168, "top_k": 8, "impl": "torch"}, 153),
    ("moe_combine_GBps", "NVIDIA H800", {"ranks": 8, "layout": "per_rank", "dispatch_dtype": "fp8",
                                         "tokens_per_rank": 4096, "hidden": 7168, "top_k": 8}, 158),
    ("moe_dispatch_GBps", "NVIDIA H200", {"ranks": 8, "layout": "per_rank", "dispatch_dtype": "fp8",
                                          "tokens_per_rank": 4096, "hidden": 7168, "top_k": 8}, None),
])
def test_seed_figures_as_published(metric, device, config, value):
    hit = anchors.match(metric, device, **config)
    assert (hit.value if hit else None) == value


# ---- show and report ----------------------------------------------------------------------------

def _gemm_run(root, device, tflops, fallback=False):
    from hpcbench.results import RunWriter
    from hpcbench.results.schema import SCHEMA_VERSION

    run = root / f"run-{device.replace(' ', '_')}-{fallback}"
    w = RunWriter(run)
    w.write_metadata({"schema_version": SCHEMA_VERSION, "run_id": run.name, "suite": ["gemm"], "status": "complete",
                      "device_name": device, "gpu_name": device, "fallback": fallback,
                      "params": {"gemm": ["M", "N", "K", "kernel"]}})
    common = {"schema_version": SCHEMA_VERSION, "run_id": run.name, "benchmark": "gemm", "status": "ok",
              "fallback": fallback, "backend": "torch", "median_s": 2 * 8192**3 / tflops / 1e12, "peak_tflops": 989.4}
    w.append({**common, "point": 0, "M": 8192, "N": 8192, "K": 8192, "kernel": "torch_bf16", "dtype": "bf16",
              "scaling": "none", "tflops": tflops})
    w.append({**common, "point": 1, "M": 4096, "N": 4096, "K": 4096, "kernel": "torch_bf16", "dtype": "bf16",
              "scaling": "none", "tflops": tflops})
    w.close()
    return run


def test_show_prints_the_matched_anchor_and_nothing_when_none_matches(tmp_path, capsys):
    from hpcbench.core import cli

    assert cli.main(["show", str(_gemm_run(tmp_path, "NVIDIA H200", 709.2))]) == 0
    out = capsys.readouterr().out
    assert "published anchors" in out
    line = next(ln for ln in out.splitlines() if "matmul_bf16_tflops" in ln)
    assert "M=8192 N=8192 K=8192 kernel=torch_bf16" in line and "788" in line and "90.0" in line  # 709.2 / 788
    assert "4096" not in line
    for device, fallback in (("NVIDIA H200 NVL", False), ("NVIDIA H200", True)):
        assert cli.main(["show", str(_gemm_run(tmp_path, device, 709.2, fallback))]) == 0
        assert "published anchors" not in capsys.readouterr().out


def test_report_lists_matched_anchors_in_a_section(tmp_path):
    from hpcbench.analysis import report

    out = tmp_path / "rep"
    assert report.main([str(_gemm_run(tmp_path, "NVIDIA H200", 709.2)), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Published anchors" in md
    row = next(ln for ln in md.splitlines() if "matmul_bf16_tflops" in ln)
    assert "| 788 |" in row and "| 90 |" in row and "reference/anchors.md" in row
    assert report.main([str(_gemm_run(tmp_path, "NVIDIA H200 NVL", 709.2)), "--out", str(tmp_path / "r2")]) == 0
    assert "Published anchors" not in (tmp_path / "r2" / "report.md").read_text()


def test_fingerprint_lines_match_on_their_own_configuration(tmp_path):
    df = pd.DataFrame([{"benchmark": "fingerprint", "metric": "all_reduce_busbw_GBps", "value": 425.79,
                        "status": "ok", "fallback": False, "anchor_config": {"ranks": 8, "bytes": 8 * 2**30}},
                       {"benchmark": "fingerprint", "metric": "all_reduce_busbw_GBps", "value": 425.79,
                        "status": "ok", "fallback": False, "anchor_config": '{"ranks": 4, "bytes": 8589934592}'}])
    out = anchors.annotate(df, "NVIDIA H200")
    assert out["anchor_value"].tolist() == [473.1, 363.3]
    assert out["pct_of_anchor"].tolist()[0] == pytest.approx(90.0)



def test_show_does_not_repeat_lines_a_family_already_judged(tmp_path, capsys):
    from hpcbench.core import cli
    from hpcbench.results import RunWriter
    from hpcbench.results.schema import SCHEMA_VERSION

    run = tmp_path / "fp"
    w = RunWriter(run)
    w.write_metadata({"schema_version": SCHEMA_VERSION, "run_id": "fp", "suite": ["fingerprint"], "status": "complete",
                      "device_name": "NVIDIA H200", "gpu_name": "NVIDIA H200", "fallback": False,
                      "params": {"fingerprint": ["metric"]}})
    w.append({"schema_version": SCHEMA_VERSION, "run_id": "fp", "benchmark": "fingerprint", "point": 0, "status": "ok",
              "fallback": False, "metric": "all_reduce_busbw_GBps", "value": 425.79, "unit": "GB/s",
              "anchor_config": {"ranks": 8, "bytes": 8 * 2**30}, "anchor_value": 473.1, "pct_of_anchor": 90.0})
    w.close()
    assert anchors.matched(pd.DataFrame([{"benchmark": "fingerprint", "metric": "all_reduce_busbw_GBps",
                                          "value": 425.79, "status": "ok",
                                          "anchor_config": {"ranks": 8, "bytes": 8 * 2**30}}]), "NVIDIA H200").shape[0] == 1
    assert cli.main(["show", str(run)]) == 0
    assert "published anchors" not in capsys.readouterr().out
