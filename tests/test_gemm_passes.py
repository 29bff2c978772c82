"""The gemm family's training passes (fprop, dgrad, wgrad): results against float64 for every
recipe, the wgrad quantization axis, MAMF wiring, and the CLI end to end."""

import json
import sys
import types

import pytest
import torch
from conftest import run_cli

from hpcbench.measure.accuracy import calc_diff
from hpcbench.benchmarks import gemm
from hpcbench.benchmarks.gemm import passes
from hpcbench.api.errors import UserError
from hpcbench.core.runner import RunContext
from hpcbench.runtime.device import resolve_device
from hpcbench.core.testing import family_config
from hpcbench.measure.timing import TimingPolicy

FAST = TimingPolicy(warmup=0, min_reps=1, max_reps=1, budget_s=0.01)
VARIANTS = {v.kernel: v for v in gemm.ALL_VARIANTS}


def _tensors(M, N, K, seed=0):
    resolve_device("cpu")  # the Triton interpreter, set before the kernels are imported
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g).bfloat16() for shape in ((M, K), (N, K), (M, N)))


@pytest.mark.parametrize("M,N,K", [(200, 130, 300), (1, 130, 300)])
@pytest.mark.parametrize("pass_name", ["fprop", "dgrad", "wgrad"])
@pytest.mark.parametrize("kernel", ["triton_fp8_tensor", "triton_fp8_row", "triton_fp8_block", "torch_fp8_row",
                                    "triton_bf16"])
def test_every_pass_and_recipe_matches_float64(M, N, K, pass_name, kernel):
    x, w, dy = _tensors(M, N, K)
    expected = {"fprop": x.double() @ w.double().T, "dgrad": dy.double() @ w.double(),
                "wgrad": dy.double().T @ x.double()}[pass_name]  # written out, not taken from passes.py
    prepared = gemm._prepare(VARIANTS[kernel], pass_name, x, w, dy)
    out = prepared.gemm()
    assert out.shape == expected.shape
    if prepared.dequantized_ref is not None:  # kernel error alone: output rounding
        assert calc_diff(out, prepared.dequantized_ref()) < 1e-5
    assert calc_diff(out, expected) < (1e-5 if kernel.endswith("bf16") else 2e-3)
    if prepared.end_to_end is not None and kernel == "triton_fp8_block":  # the timed cast + GEMM: the same result
        assert calc_diff(prepared.end_to_end(), out) < 1e-12


def _channels_of_wild_magnitude(M=256, K=128, seed=5):
    """X (M tokens, K channels) whose channels differ by up to 2^24 in magnitude: a scale shared by
    a token's 128 channels (1x128 along K) flushes the small channels below E4M3's range, a scale
    per channel per 128 tokens (128x1, what wgrad needs) keeps every channel."""
    g = torch.Generator().manual_seed(seed)
    channel_scale = 2.0 ** (torch.arange(K) % 4 * -8.0)  # 1, 2^-8, 2^-16, 2^-24, ...
    return (torch.randn(M, K, generator=g) * channel_scale).bfloat16(), channel_scale


def _normalised_error(dw, expected, channel_scale):
    """calc_diff with every column of dW divided by its channel's scale, so that small channels count."""
    return calc_diff(dw.double() / channel_scale.double(), expected / channel_scale.double())


def test_wgrad_block_quantizes_x_along_the_tokens():
    M, N, K = 256, 64, 128
    x, channel_scale = _channels_of_wild_magnitude(M, K)
    dy = torch.randn(M, N, generator=torch.Generator().manual_seed(6)).bfloat16()
    w = torch.randn(N, K).bfloat16()
    resolve_device("cpu")
    aq, sa, bq, sb = passes.cast_plan("wgrad", "block", passes.quantizers("triton"), x, w, dy)[1](None)
    # B is X^T (K, M) with one scale per channel per 128 tokens: the 128x1 tiles of X
    assert bq.shape == (K, M) and sb.shape == (K, 2) and aq.shape == (N, M) and sa.shape == (N, 2)
    for g in range(2):
        amax = x[g * 128:(g + 1) * 128].float().abs().amax(dim=0)
        assert torch.allclose(sb[:, g], amax / 448.0)
    expected = dy.double().T @ x.double()
    right = gemm._prepare(VARIANTS["triton_fp8_block"], "wgrad", x, w, dy).gemm()
    right_err = _normalised_error(right, expected, channel_scale)
    # the same GEMM fed X quantized in the forward layout (1x128 tiles along K) instead
    from hpcbench.kernels import quantize

    from hpcbench.benchmarks.gemm.variants import dequantize

    xq, xs = quantize.quantize_1x128(x)
    wrong = (dequantize(aq, sa, "block") @ dequantize(xq, xs, "block")).to(torch.bfloat16)
    wrong_err = _normalised_error(wrong, expected, channel_scale)
    assert right_err < 2e-3  # every channel keeps its precision
    assert wrong_err > 0.1 > 50 * right_err  # the small channels are flushed to zero


def test_wgrad_row_scales_are_per_channel_over_all_tokens():
    x, _ = _channels_of_wild_magnitude(200, 128)
    dy = torch.randn(200, 48).bfloat16()
    _, sa, bq, sb = passes.cast_plan("wgrad", "row", passes.quantizers("torch"), x, torch.randn(48, 128), dy)[1](None)
    assert bq.shape == (128, 200) and sb.shape == (128, 1) and sa.shape == (48, 1)
    assert torch.allclose(sb[:, 0], x.float().abs().amax(dim=0) / 448.0)


def test_dgrad_block_weight_keeps_its_128x128_scales_transposed():
    x, w, dy = _tensors(64, 300, 200)
    aq, sa, bq, sb = passes.cast_plan("dgrad", "block", passes.quantizers("torch"), x, w, dy)[1](
        passes.quantizers("torch")["block"](w))
    assert bq.shape == (200, 300) and sb.shape == (2, 3)  # W^T (K, N); blocks (ceil(K/128), ceil(N/128))
    assert aq.shape == (64, 300) and sa.shape == (64, 3)  # dY in 1x128 tiles along N
    assert passes.contraction("dgrad", 64, 300, 200) == 300 and passes.contraction("wgrad", 64, 300, 200) == 64


def _run(*overrides):
    cfg = family_config("gemm", overrides, smoke=True)
    return list(gemm.run(cfg, RunContext(device=resolve_device("cpu"), run_id="t", timing=FAST)))


def test_backward_rows_time_their_casts_and_use_their_contraction():
    rows = _run("gemm.passes=[dgrad,wgrad]", "gemm.custom=[[16,40,24]]", "gemm.backends=[triton]",
                "gemm.fp8_scalings=[block]")
    assert [(r["pass"], r["kernel"]) for r in rows] == [("dgrad", "triton_bf16"), ("dgrad", "triton_fp8_block"),
                                                        ("wgrad", "triton_bf16"), ("wgrad", "triton_fp8_block")]
    for r in rows:
        assert r["status"] == "ok" and (r["M"], r["N"], r["K"]) == (16, 40, 24) and r["flops"] == 2 * 16 * 40 * 24
    fp8 = [r for r in rows if r["dtype"] == "fp8"]
    for r in fp8:
        assert r["quant_median_s"] > 0 and r["e2e_median_s"] > 0 and r["speedup_vs_bf16_with_quant"] > 0
        assert r["predicted_speedup"] is None  # the CPU fallback has no peaks: blank, never a guess
    ids = [gemm.FAMILY.point_id(r) for r in rows]
    assert ids[1] == "triton_fp8_block-dgrad-16x40x24"


def test_default_rows_are_the_forward_pass():
    rows = _run("gemm.dtypes=[bf16]", "gemm.backends=[torch]")
    assert [r["pass"] for r in rows] == ["fprop"] and gemm.FAMILY.point_id(rows[0]) == "torch_bf16-48x40x160"
    assert "pass" in gemm.PARAMS


def _fake_mamf(monkeypatch, device, best):
    module = types.ModuleType("hpcbench.benchmarks.mamf.best")
    module.mamf_best = lambda path: (device, best)
    monkeypatch.setitem(sys.modules, "hpcbench.benchmarks.mamf.best", module)


def test_pct_mamf_against_a_mamf_run_of_the_same_device(monkeypatch, tmp_path, capsys):
    here = resolve_device("cpu").name
    _fake_mamf(monkeypatch, here, {"bf16": 0.5, "fp8": 2.0})
    rows = _run("gemm.backends=[torch]", "gemm.fp8_scalings=[tensor]", f"gemm.mamf_run={tmp_path}",
                "gemm.time_quantization=false")
    by = {r["kernel"]: r for r in rows}
    assert by["torch_bf16"]["pct_mamf"] == pytest.approx(100 * by["torch_bf16"]["tflops"] / 0.5)
    assert by["torch_fp8_tensor"]["pct_mamf"] == pytest.approx(100 * by["torch_fp8_tensor"]["tflops"] / 2.0)
    assert "% MAMF" in [c.header for c in gemm.table(rows, True).columns]

    _fake_mamf(monkeypatch, "NVIDIA H200", {"bf16": 700.0})
    rows = _run("gemm.dtypes=[bf16]", "gemm.backends=[torch]", f"gemm.mamf_run={tmp_path}")
    assert "pct_mamf" not in rows[0] and "warning" in capsys.readouterr().err
    assert "% MAMF" not in [c.header for c in gemm.table(rows, True).columns]


def test_mamf_run_must_exist():
    with pytest.raises(UserError, match="mamf_run"):
        family_config("gemm", ["gemm.mamf_run=/no/such/run"], smoke=True)


def test_table_shows_the_pass_and_the_prediction():
    headers = [c.header for c in gemm.table([], True).columns]
    assert headers[:3] == ["M×N×K", "pass", "kernel"] and "pred ×BF16+q" in headers


@pytest.mark.subprocess
def test_cli_all_three_passes_and_a_bad_pass_name(tmp_path):
    out = run_cli("gemm.shapes=custom", "gemm.custom=[[16,24,40]]", "gemm.passes=[fprop,dgrad,wgrad]",
                  "gemm.fp8_scalings=[block]", "gemm.backends=[triton]", "gemm.time_quantization=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for p in tmp_path.glob("results/*/rows.jsonl") for line in p.read_text().splitlines()]
    assert [(r["pass"], r["status"]) for r in rows] == [(p, "ok") for p in ("fprop", "dgrad", "wgrad") for _ in range(2)]
    assert "wgrad" in out.stdout
    bad = run_cli("gemm.passes=[fprop,backward]", cwd=tmp_path)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "backward" in lines[0] and "wgrad" in lines[0]


def test_1d1d_kernel_hopper_path_in_the_interpreter():
    """The TMA kernel of the wgrad GEMM (what Hopper runs), interpreted, against float64."""
    from hpcbench.kernels import quantize, select
    from hpcbench.kernels.matmul_fp8_block import matmul_fp8_1d1d

    x, _, dy = _tensors(256, 64, 48, seed=9)
    aq, sa = quantize.quantize_128x1(dy)
    bq, sb = quantize.quantize_128x1(x)
    assert sa.stride() == (1, 64) and sb.stride() == (1, 48)  # K-major: one coalesced load per K step
    out = matmul_fp8_1d1d(aq, bq, sa, sb, impl=select.TMA_PERSISTENT)
    assert calc_diff(out, dy.double().T @ x.double()) < 2e-3
    with pytest.raises(ValueError, match="scales must be"):
        matmul_fp8_1d1d(aq, bq, sa, sb[:, :1])
