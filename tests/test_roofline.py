"""The FP8/BF16 roofline model on hand-computed cases (H100 SXM peaks written out, not looked up)."""

import pytest

from hpcbench.models import roofline

# H100 SXM: 989.4 / 1978.9 dense TFLOP/s, 3350 GB/s; torchao's achievable fractions
H100 = roofline.Machine(bf16_tflops=989.4, fp8_tflops=1978.9, bandwidth_GBps=3350.0, pct_gemm=0.78, pct_mem=0.92)


def test_compute_bound_cube_approaches_the_peak_ratio_minus_the_cast():
    # 16384^3: 2MNK = 8.796e12 FLOP. BF16 8.796e12 / (989.4e12 * 0.78) = 11.3979 ms (its 1.61 GB at
    # 3.082e12 B/s would take only 0.52 ms); FP8 5.6986 ms; the GEMM alone: 1978.9 / 989.4 = 2.0001
    p = roofline.predict(H100, "fprop", "tensor", 16384, 16384, 16384)
    assert p.bf16_s == pytest.approx(11.39786e-3, rel=1e-5)
    assert p.fp8_s == pytest.approx(5.698642e-3, rel=1e-5)
    assert p.speedup_gemm == pytest.approx(2.0001, rel=1e-4)
    # per-tensor cast of X: amax pass 2 B/el + cast 3 B/el over 16384^2 elements at 3.082e12 B/s
    assert p.cast_s == pytest.approx(0.4354891e-3, rel=1e-5)
    assert p.speedup == pytest.approx(1.858105, rel=1e-5)
    # 1x128 tiles: one fused kernel, 3 B/el plus 4 B per scale (16384 x 128 of them): 0.264015 ms
    block = roofline.predict(H100, "fprop", "block", 16384, 16384, 16384)
    assert block.speedup == pytest.approx(1.911540, rel=1e-5)
    # wgrad block: dY and X each cast to 128x1 tiles with the transpose fused: twice that
    assert roofline.predict(H100, "wgrad", "block", 16384, 16384, 16384).speedup == pytest.approx(1.830490, rel=1e-5)


def test_memory_bound_small_m_loses_once_the_weight_must_be_relaid_out():
    # dgrad at M=1, N=K=8192: BF16 reads 2(8192 + 8192^2 + 8192) B = 43.5595 us; FP8 halves the
    # weight's bytes (21.7824 us) but first transposes the FP8 weight (2 B/el: 43.549 us) and casts
    # dY in two kernels of under 2 us each (2 us floors)
    p = roofline.predict(H100, "dgrad", "tensor", 1, 8192, 8192)
    assert p.bf16_s == pytest.approx(43.55954e-6, rel=1e-5)
    assert p.fp8_s == pytest.approx(21.78243e-6, rel=1e-5)
    assert p.cast_s == pytest.approx(47.54891e-6, rel=1e-5)
    assert p.speedup == pytest.approx(0.628281, rel=1e-5) and p.speedup < 1
    # row-wise re-quantizes W^T from BF16: transpose 4 B/el, amax 2, cast 3: far worse
    assert roofline.predict(H100, "dgrad", "row", 1, 8192, 8192).speedup == pytest.approx(0.196433, rel=1e-5)
    # the forward pass alone, with the step's FP8 weight cached, still wins on halved weight bytes
    assert roofline.predict(H100, "fprop", "tensor", 1, 8192, 8192).speedup == pytest.approx(1.689505, rel=1e-5)
    # the whole step at M=1 does not
    assert roofline.predict_step(H100, "tensor", 1, 8192, 8192).speedup < 1


def test_byte_counts():
    assert roofline.gemm_bytes(4, 8, 16, "bf16") == 2 * (64 + 128 + 32)
    assert roofline.gemm_bytes(4, 8, 16, "fp8", "tensor") == 64 + 128 + 2 * 32
    # block: A 4 x 1 tile scales, B 1 x 1 block scale (fprop) or 8 x 1 tile scales (wgrad), 4 B each
    assert roofline.gemm_bytes(4, 8, 16, "fp8", "block") == 64 + 128 + 64 + 4 * (4 + 1)
    assert roofline.gemm_bytes(4, 8, 16, "fp8", "block", b_tiles=True) == 64 + 128 + 64 + 4 * (4 + 8)
    # wgrad tensor-wise: the FP8 copies of dY (M, N) and X (M, K) transposed, 2 B/el each
    assert roofline.cast_kernels("wgrad", "tensor", 10, 20, 30) == [400, 600]


def test_breakeven_and_unknown_devices():
    m = roofline.breakeven_m(H100, None, "tensor", 8192, 8192, [2 ** i for i in range(15)])
    assert m is not None and 1 < m <= 2 ** 14
    assert roofline.predict_step(H100, "tensor", m, 8192, 8192).speedup > 1
    assert roofline.predict_step(H100, "tensor", m // 2, 8192, 8192).speedup <= 1
    assert roofline.machine_for("NVIDIA H200", 0.78, 0.92).bandwidth_GBps == 4800.0
    assert roofline.machine_for("NVIDIA A100-SXM4-80GB", 0.78, 0.92) is None  # no FP8 peak
    assert roofline.machine_for("AMD EPYC", 0.78, 0.92) is None
    assert roofline.machine_for(None, 0.78, 0.92) is None
