"""Every Triton kernel, in the interpreter, against float64 / torch references; and their address
arithmetic, compiled for sm_90."""

import json
import os
import subprocess
import sys

import pytest
import torch

from hpcbench.measure.accuracy import calc_diff
from hpcbench.benchmarks.gemm.variants import Variant, dequantize, prepare_triton, torch_quantize
from hpcbench.kernels import interpreter, quantize, select
from hpcbench.kernels.matmul import _matmul_kernel, kernel_impl, matmul
from hpcbench.kernels.matmul_fp8_block import matmul_fp8_block

SHAPES = [(1, 64, 128), (100, 72, 200), (130, 190, 300), (64, 1, 129)]
# shapes TMA descriptors accept (16-byte row strides for FP8 and BF16 operands and a BF16 output);
# ragged in M and N against the 64x64 interpreter tile, several tiles per persistent program
TMA_SHAPES = [(1, 64, 128), (100, 72, 208), (130, 184, 320)]
# many tiles of the interpreter's 64x64x64 config: 10 row blocks (one whole GROUP_M=8 group and a
# partial one), 9 ragged column blocks, 16 K steps with a ragged last one
MANY_TILES = (600, 520, 1000)


def _inputs(M, N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, K, generator=g).bfloat16(), torch.randn(N, K, generator=g).bfloat16()


def _ref(a, b):
    return a.double() @ b.double().T


def test_interpreter_is_on_and_defects_are_probed():
    assert interpreter.interpreting()
    found = interpreter.defects()
    assert set(found) == {"bf16_dot", "fp8_cast_rounding", "bf16_cast_rounding"}
    assert all(isinstance(v, bool) for v in found.values())


def test_bf16_dot_defect_is_real_and_the_workaround_fixes_it():
    """Without DOT_IN_FP32 the interpreter's bf16 tl.dot is garbage; the workaround is exact."""
    if not interpreter.defects()["bf16_dot"]:
        pytest.skip("this Triton's interpreter computes bf16 tl.dot correctly")
    a, b = _inputs(64, 64, 64)
    c = torch.empty(64, 64)
    _matmul_kernel[(1,)](a, b, c, a, a, 64, 64, 64, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                         c.stride(0), c.stride(1), SCALE_MODE=0, DOT_IN_FP32=False)
    assert calc_diff(c, _ref(a, b)) > 0.5  # nothing like the product
    assert calc_diff(matmul(a, b), _ref(a, b)) < 1e-5


@pytest.mark.parametrize("M,N,K", SHAPES + [MANY_TILES])
def test_bf16_matmul(M, N, K):
    a, b = _inputs(M, N, K)
    c = matmul(a, b)
    assert c.dtype == torch.bfloat16 and c.shape == (M, N)
    # BF16 output rounding is the only error: compare with the float64 product rounded to BF16
    assert torch.allclose(c.float(), _ref(a, b).bfloat16().float(), rtol=1e-2, atol=1e-2)
    assert calc_diff(c, _ref(a, b)) < 1e-5


@pytest.mark.parametrize("scaling,quant", [("tensor", quantize.quantize_tensorwise), ("row", quantize.quantize_rowwise)])
@pytest.mark.parametrize("M,N,K", SHAPES + [MANY_TILES])
def test_fp8_matmul_tensor_and_row(scaling, quant, M, N, K):
    a, b = _inputs(M, N, K, seed=1)
    aq, sa = quant(a)
    bq, sb = quant(b)
    c = matmul(aq, bq, sa, sb, scaling=scaling)
    deq_ref = dequantize(aq, sa, scaling) @ dequantize(bq, sb, scaling).T
    assert calc_diff(c, deq_ref) < 1e-5  # kernel error: output rounding only
    assert calc_diff(c, _ref(a, b)) < 2e-3  # E4M3 quantization error end to end


@pytest.mark.parametrize("M,N,K", SHAPES + [MANY_TILES, (257, 300, 384)])
def test_fp8_block_matmul(M, N, K):
    a, b = _inputs(M, N, K, seed=2)
    aq, sa = quantize.quantize_1x128(a)
    bq, sb = quantize.quantize_128x128(b)
    c = matmul_fp8_block(aq, bq, sa, sb)
    deq_ref = dequantize(aq, sa, "block") @ dequantize(bq, sb, "block").T
    assert calc_diff(c, deq_ref) < 1e-5
    assert calc_diff(c, _ref(a, b)) < 2e-3


@pytest.mark.parametrize("M,N,K", TMA_SHAPES)
def test_tma_persistent_matmul_bf16_tensor_and_row(M, N, K):
    """The Hopper-path kernel, run by the interpreter (triton 3.9's interprets device-side TMA
    descriptors, with the hardware's alignment checks), against float64."""
    a, b = _inputs(M, N, K, seed=6)
    c = matmul(a, b, impl=select.TMA_PERSISTENT)
    assert c.dtype == torch.bfloat16 and c.shape == (M, N)
    assert calc_diff(c, _ref(a, b)) < 1e-5
    for scaling, quant in (("tensor", quantize.quantize_tensorwise), ("row", quantize.quantize_rowwise)):
        aq, sa = quant(a)
        bq, sb = quant(b)
        c = matmul(aq, bq, sa, sb, scaling=scaling, impl=select.TMA_PERSISTENT)
        deq_ref = dequantize(aq, sa, scaling) @ dequantize(bq, sb, scaling).T
        assert calc_diff(c, deq_ref) < 1e-5, scaling
        assert calc_diff(c, _ref(a, b)) < 2e-3, scaling


@pytest.mark.parametrize("M,N,K", TMA_SHAPES + [(257, 136, 384)])
def test_tma_persistent_block_matmul(M, N, K):
    a, b = _inputs(M, N, K, seed=7)
    aq, sa = quantize.quantize_1x128(a)
    bq, sb = quantize.quantize_128x128(b)
    c = matmul_fp8_block(aq, bq, sa, sb, impl=select.TMA_PERSISTENT)
    deq_ref = dequantize(aq, sa, "block") @ dequantize(bq, sb, "block").T
    assert calc_diff(c, deq_ref) < 1e-5
    assert calc_diff(c, _ref(a, b)) < 2e-3


def test_tma_kernels_refuse_unaligned_operands():
    a, b = _inputs(4, 8, 200)  # FP8 rows of 200 B: not a multiple of 16
    aq, sa = quantize.quantize_rowwise(a)
    bq, sb = quantize.quantize_rowwise(b)
    with pytest.raises(ValueError, match="16-byte aligned"):
        matmul(aq, bq, sa, sb, scaling="row", impl=select.TMA_PERSISTENT)
    with pytest.raises(ValueError, match="unknown kernel implementation"):
        matmul(a, b, impl="cutlass")


def test_block_scaling_is_finer_than_tensor_scaling_with_outliers():
    """One huge outlier ruins a per-tensor scale, but only its own row with 1x128 tiles."""
    a, b = _inputs(256, 128, 512, seed=3)
    a[0, 0] = 1e6  # pushes every other value of a per-tensor scale below E4M3's subnormals
    ref = _ref(a, b)
    aq, sa = quantize.quantize_tensorwise(a)
    bq, sb = quantize.quantize_tensorwise(b)
    tensor_err = calc_diff(matmul(aq, bq, sa, sb, scaling="tensor")[1:], ref[1:])
    aq, sa = quantize.quantize_1x128(a)
    bq, sb = quantize.quantize_128x128(b)
    block_err = calc_diff(matmul_fp8_block(aq, bq, sa, sb)[1:], ref[1:])
    assert block_err < tensor_err / 10


@pytest.mark.parametrize("scaling,fn", [("tensor", quantize.quantize_tensorwise), ("row", quantize.quantize_rowwise)])
@pytest.mark.parametrize("M,K", [(1, 7), (70, 300), (128, 256)])
def test_quantize_matches_torch_bit_for_bit(scaling, fn, M, K):
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(4)).bfloat16()
    q, s = fn(x)
    q_ref, s_ref = torch_quantize(x, scaling)
    assert q.dtype == torch.float8_e4m3fn and q.shape == x.shape
    assert torch.equal(s.reshape(-1), s_ref.reshape(-1))
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


@pytest.mark.parametrize("M,K", [(1, 100), (130, 300), (256, 256)])
def test_quantize_1x128_and_128x128_scales(M, K):
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(5)) * 10
    q, s = quantize.quantize_1x128(x)
    kg = -(-K // 128)
    assert s.shape == (M, kg)
    for j in range(kg):
        tile = x[:, j * 128:(j + 1) * 128]
        assert torch.allclose(s[:, j], tile.abs().amax(dim=1) / 448.0)
    assert q.float().abs().max() <= 448
    w, sw = quantize.quantize_128x128(x)
    assert sw.shape == (-(-M // 128), kg)
    assert torch.allclose(sw[0, 0], x[:128, :128].abs().max() / 448.0)
    assert (dequantize(w, sw, "block") - x.double()).abs().max() <= x.abs().max() / 16  # E4M3: 3 mantissa bits


def test_activation_scales_are_k_major():
    """1x128 scales are stored K-major: the M scales of one K group are contiguous, so the GEMM's
    BLOCK_M rows read theirs in one coalesced load (and torch's block-wise scaled_mm takes it)."""
    x = torch.randn(70, 300, generator=torch.Generator().manual_seed(8))
    _, s = quantize.quantize_1x128(x)
    assert s.shape == (70, 3) and s.stride() == (1, 70)
    _, w = quantize.quantize_128x128(x)
    assert w.stride() == (3, 1)  # weight blocks stay row-major (one scalar per K step per tile)


def test_row_amax_spreads_small_m_over_k(monkeypatch):
    """M = 1: the amax kernel's grid has a program per 128 columns, not one for the whole row,
    and the tiles' atomic maxima give torch's result bit for bit."""
    grids = []
    kernel = quantize._row_amax_kernel

    class Spy:
        def __getitem__(self, grid):
            grids.append(grid)
            return kernel[grid]

    monkeypatch.setattr(quantize, "_row_amax_kernel", Spy())
    x = torch.randn(1, 1000, generator=torch.Generator().manual_seed(9)).bfloat16()
    for fn, scaling in ((quantize.quantize_rowwise, "row"), (quantize.quantize_tensorwise, "tensor")):
        q, s = fn(x)
        q_ref, s_ref = torch_quantize(x, scaling)
        assert torch.equal(s.reshape(-1), s_ref.reshape(-1))
        assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    assert grids == [(1, 8), (1, 8)]


def test_quantize_all_zero_input_gives_zeros_not_nan():
    for fn in (quantize.quantize_tensorwise, quantize.quantize_rowwise, quantize.quantize_1x128, quantize.quantize_128x128):
        q, s = fn(torch.zeros(3, 130))
        assert torch.all(q.float() == 0) and torch.all(torch.isfinite(s)) and torch.all(s > 0)


def test_operand_checks():
    a, b = _inputs(4, 4, 8)
    with pytest.raises(ValueError, match="B \\(N, K\\)"):
        matmul(a, b.T.contiguous()[:3])
    with pytest.raises(ValueError, match="needs a_scale"):
        matmul(a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn), scaling="tensor")
    with pytest.raises(ValueError, match="scales must be"):
        matmul_fp8_block(a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn), torch.ones(4, 2), torch.ones(1, 1))


# ---- which kernel runs: hpcbench.kernels.select

def test_matmul_impl_chooses_the_hopper_path_only_where_it_is_checked():
    tma, ptr = select.TMA_PERSISTENT, select.POINTER
    assert select.matmul_impl((9, 0), "3.6.0", interpreter=False) == tma
    assert select.matmul_impl((9, 0), "3.9.0", interpreter=False) == tma
    assert select.matmul_impl((9, 0), "3.10.1+git", interpreter=False) == tma
    assert select.matmul_impl((9, 0), "3.5.1", interpreter=False) == ptr  # older Triton
    assert select.matmul_impl((9, 0), "3.3.0", interpreter=False) == ptr
    for cap in ((8, 0), (8, 9), (10, 0), (12, 0)):  # pre-Hopper, and Blackwell (neither tuned nor checked)
        assert select.matmul_impl(cap, "3.9.0", interpreter=False) == ptr
    assert select.matmul_impl(None, "3.9.0", interpreter=False) == ptr  # no CUDA device
    assert select.matmul_impl((9, 0), "3.9.0", interpreter=True) == ptr  # the interpreter
    assert select.parse_version("3.9.0") == (3, 9) and select.parse_version("nightly") == (0, 0)


def test_the_interpreter_gets_the_pointer_kernel_and_hopper_the_tma_one(monkeypatch):
    a, b = _inputs(64, 64, 128)
    assert kernel_impl(a, b) == select.POINTER  # this process interprets (conftest)
    # the same decision as on an H100 with this Triton, compiled: TMA where the operands allow it
    monkeypatch.setattr(interpreter, "interpreting", lambda: False)
    monkeypatch.setattr(select, "device_capability", lambda t: (9, 0))
    assert kernel_impl(a, b) == select.TMA_PERSISTENT
    assert kernel_impl(a[:, :100], b[:, :100]) == select.TMA_PERSISTENT  # K = 100, but 256 B row strides
    odd_a, odd_b = _inputs(64, 64, 100)  # BF16 rows of 200 B
    assert kernel_impl(odd_a, odd_b) == select.POINTER
    assert kernel_impl(a, b[:58]) == select.POINTER  # output rows of 116 B (BF16) or 232 B (FP32)
    assert select.tma_compatible(a, b) and not select.tma_compatible(a.T)


def test_gemm_rows_record_the_kernel_implementation():
    a, b = _inputs(48, 40, 160)
    for v in (Variant("triton_bf16", "triton", "bf16", "none"), Variant("triton_fp8_row", "triton", "fp8", "row"),
              Variant("triton_fp8_block", "triton", "fp8", "block")):
        assert prepare_triton(v, a, b).kernel_impl == select.POINTER


# ---- 64-bit address offsets: row x stride reaches 2**31 on shapes an H200 holds (M=300000, K=8192)
# Checked on the PTX each kernel compiles to for sm_90 (ahead of time, no GPU needed): the row
# strides must only meet 64-bit multiplies (mul.wide.s32 / mul.lo.s64), never mul.lo.s32.

_ROW_COPY = '''
import json, sys
import triton
import triton.language as tl
from hpcbench.kernelcheck import check as kernelcheck


@triton.jit
def copy_rows(x_ptr, y_ptr, M, stride_xm, stride_ym, WIDE: tl.constexpr, BLOCK_R: tl.constexpr,
              BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask = rows[:, None] < M
    if WIDE:
        rows = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=mask)
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], x, mask=mask)


out = {}
for wide in (False, True):
    job = kernelcheck.Job("sm_90", "copy_rows", "__main__", "bf16", {"x_ptr": "*bf16", "y_ptr": "*bf16"},
                          {"WIDE": wide, "BLOCK_R": 32, "BLOCK_K": 128}, wide_strides=("stride_xm", "stride_ym"))
    e = kernelcheck.compile_job(job)
    out[str(wide)] = {"status": e.status, "addr64": e.addr64, "problems": e.problems}
print(json.dumps(out))
'''


@pytest.mark.compile
@pytest.mark.subprocess
def test_the_64_bit_offset_check_catches_a_32_bit_kernel(tmp_path):
    """Negative control for the check below: the same kernel without the int64 cast is flagged."""
    script = tmp_path / "row_copy.py"
    script.write_text(_ROW_COPY)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["False"] == {"status": "failed", "addr64": False, "problems": ["32-bit address offsets"]}
    assert out["True"] == {"status": "ok", "addr64": True, "problems": []}


@pytest.mark.compile
@pytest.mark.subprocess
def test_every_kernel_computes_address_offsets_in_64_bits(cli, tmp_path):
    out = tmp_path / "sm90.json"
    r = cli("compile-kernels", "--arch", "sm_90", "--first", "1", "--json", str(out),
            "--kernel", "_matmul_kernel bf16", "--kernel", "fp8 row", "--kernel", "fp8 block", "--kernel", "bf16 -> fp8")
    assert r.returncode == 0, r.stdout + r.stderr
    entries = json.loads(out.read_text())["entries"]
    assert {e["kernel"] for e in entries} == {"_matmul_kernel", "_matmul_tma_kernel", "_matmul_fp8_block_kernel",
                                              "_matmul_fp8_block_tma_kernel", "_row_amax_kernel",
                                              "_amax_cast_kernel", "_group_quant_kernel",
                                              "_transpose_group_quant_kernel"}
    assert all(e["status"] == "ok" and e["addr64"] is True for e in entries), entries
