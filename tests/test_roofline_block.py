"""The roofline model's block recipe (DeepSeek-V3: 1x128 activation tiles, 128x128 weight blocks)
on every training pass and a whole step, on non-square layers, against bytes and FLOPs counted by
hand from README "Training passes, recipes and the roofline" and the module notes:

  layer Y = X W^T, X (M, K), W (N, K); every pass does 2MNK FLOPs.
  pass   A (K-major)              B (K-major)                 output   contraction
  fprop  X (M, K) 1x128 tiles     W (N, K) 128x128 blocks     (M, N)   K
  dgrad  dY (M, N) 1x128 tiles    W^T (K, N) 128x128 blocks   (M, K)   N
  wgrad  dY^T (N, M) 1x128 tiles  X^T (K, M) 1x128 tiles      (N, K)   M
  GEMM bytes: FP8 A and B (1 B/el) + BF16 output (2 B/el) + 4 B per scale read
              (A: rows x ceil(k/128) tile scales; B: blocks ceil(cols/128) x ceil(k/128), or
              tiles cols x ceil(k/128) in wgrad); BF16 GEMM: 2 B/el for A, B and the output.
  casts (one kernel each unless said): read BF16 2 B/el + write FP8 1 B/el, + 4 B per scale
    fprop: X to 1x128 tiles along K
    dgrad: dY to 1x128 tiles along N; W's FP8 copy (N, K) transposed (1 + 1 B/el), and its
           128x128 block scales transposed in one more small kernel (4 + 4 B per block)
    wgrad: dY (M, N) and X (M, K) each to 128x1 tiles with the transpose fused: one scale per
           channel per 128 tokens
    step:  the weight's quantization to 128x128 blocks, once (one fused kernel)
  time of a GEMM: max(FLOPs / FLOP/s, bytes / B/s, floor); of a cast kernel: max(bytes / B/s, floor).

The machines have round numbers, so every time below is bytes / 1e12 or FLOPs / 1e15 exactly.
"""

from __future__ import annotations

import pytest

from hpcbench.models import roofline

# FP8 1e15 FLOP/s, BF16 5e14 FLOP/s, 1e12 B/s, the 2 us floor: GEMMs of the shapes below are
# compute bound here, casts memory bound
ROUND = roofline.Machine(bf16_tflops=500.0, fp8_tflops=1000.0, bandwidth_GBps=1000.0, pct_gemm=1.0, pct_mem=1.0)
# FLOPs nearly free (1e18 FLOP/s) and no floor: every time is bytes / 1e12, which pins the bytes
MEM = roofline.Machine(bf16_tflops=1e6, fp8_tflops=1e6, bandwidth_GBps=1000.0, pct_gemm=1.0, pct_mem=1.0,
                       min_kernel_s=0.0)

US = 1e-6

# ---- a DeepSeek-like layer, dims multiples of 128 ------------------------------------------------
# M = 4096 tokens, N = 7168, K = 2048: groups of 128: gM = 32, gN = 56, gK = 16
# MK = 8,388,608   NK = 14,680,064   MN = 29,360,128   2MNK = 120,259,084,288 FLOPs
M, N, K = 4096, 7168, 2048

# GEMM bytes, block FP8:
#   fprop  MK + NK + 2MN + 4(M gK + gN gK) = 8,388,608 + 14,680,064 + 58,720,256 + 4(65,536 + 896)
#          = 82,054,656
#   dgrad  MN + KN + 2MK + 4(M gN + gK gN) = 29,360,128 + 14,680,064 + 16,777,216 + 4(229,376 + 896)
#          = 61,738,496
#   wgrad  NM + KM + 2NK + 4(N gM + K gM) = 29,360,128 + 8,388,608 + 29,360,128 + 4(229,376 + 65,536)
#          = 68,288,512
#   BF16 (any pass) 2(MK + NK + MN) = 104,857,600
GEMM_FP8 = {"fprop": 82_054_656, "dgrad": 61_738_496, "wgrad": 68_288_512}
GEMM_BF16 = 104_857_600
# cast kernels, bytes each:
#   fprop  3MK + 4 M gK = 25,165,824 + 262,144 = 25,427,968
#   dgrad  3MN + 4 M gN = 88,080,384 + 917,504 = 88,997,888; FP8 transpose of W 2NK = 29,360,128;
#          its block scales 2 x 4 x gN gK = 8 x 896 = 7,168
#   wgrad  dY: 3MN + 4 N gM = 88,080,384 + 917,504 = 88,997,888; X: 3MK + 4 K gM = 25,165,824 + 262,144
#   weight 3NK + 4 gN gK = 44,040,192 + 3,584 = 44,043,776
CASTS = {"fprop": [25_427_968], "dgrad": [88_997_888, 29_360_128, 7_168], "wgrad": [88_997_888, 25_427_968]}
WEIGHT_CAST = [44_043_776]


def test_cast_kernels_of_each_block_pass():
    for p in roofline.PASSES:
        assert roofline.cast_kernels(p, "block", M, N, K) == CASTS[p], p
    assert roofline.weight_cast_kernels("block", N, K) == WEIGHT_CAST


@pytest.mark.parametrize("pass_name", roofline.PASSES)
def test_block_gemm_bytes_of_each_pass(pass_name):
    p = roofline.predict(MEM, pass_name, "block", M, N, K)
    assert p.fp8_s == pytest.approx(GEMM_FP8[pass_name] / 1e12, rel=1e-12)
    assert p.bf16_s == pytest.approx(GEMM_BF16 / 1e12, rel=1e-12)
    assert p.cast_s == pytest.approx(sum(CASTS[pass_name]) / 1e12, rel=1e-12)


@pytest.mark.parametrize("pass_name", roofline.PASSES)
def test_block_gemm_flops_of_each_pass(pass_name):
    # compute bound on ROUND: FP8 120,259,084,288 / 1e15 = 120.259084288 us (its bytes would take
    # 61.7-82.1 us); BF16 / 5e14 = 240.518168576 us (bytes 104.86 us)
    p = roofline.predict(ROUND, pass_name, "block", M, N, K)
    assert p.fp8_s == pytest.approx(120.259084288 * US, rel=1e-12)
    assert p.bf16_s == pytest.approx(240.518168576 * US, rel=1e-12)
    assert p.speedup_gemm == pytest.approx(2.0, rel=1e-12)


def test_dgrad_block_on_the_round_machine():
    # casts: 88.997888 us + 29.360128 us + the scale transpose (7,168 B: 7.168 ns, floored to 2 us)
    p = roofline.predict(ROUND, "dgrad", "block", M, N, K)
    assert p.cast_s == pytest.approx(120.358016 * US, rel=1e-12)
    # 240.518168576 / (120.259084288 + 120.358016) = 0.99958884...: dgrad just loses here
    assert p.speedup == pytest.approx(0.9995888417245424, rel=1e-12)
    assert p.speedup < 1


def test_fprop_and_wgrad_block_on_the_round_machine():
    fprop = roofline.predict(ROUND, "fprop", "block", M, N, K)
    assert fprop.cast_s == pytest.approx(25.427968 * US, rel=1e-12)
    assert fprop.speedup == pytest.approx(240.518168576 / (120.259084288 + 25.427968), rel=1e-12)  # 1.65092
    wgrad = roofline.predict(ROUND, "wgrad", "block", M, N, K)
    assert wgrad.cast_s == pytest.approx((88.997888 + 25.427968) * US, rel=1e-12)
    assert wgrad.speedup == pytest.approx(240.518168576 / (120.259084288 + 114.425856), rel=1e-12)  # 1.02486


def test_predict_step_block_on_the_round_machine():
    # GEMMs: BF16 3 x 240.518168576 = 721.554505728 us; FP8 3 x 120.259084288 = 360.777252864 us
    # casts: fprop 25.427968 + dgrad 120.358016 (2 us floor included) + wgrad 114.425856
    #        + the weight once 44.043776 = 304.255616 us
    s = roofline.predict_step(ROUND, "block", M, N, K)
    assert s.bf16_s == pytest.approx(721.554505728 * US, rel=1e-12)
    assert s.fp8_s == pytest.approx(360.777252864 * US, rel=1e-12)
    assert s.cast_s == pytest.approx(304.255616 * US, rel=1e-12)
    # 721.554505728 / (360.777252864 + 304.255616) = 1.08499074...
    assert s.speedup == pytest.approx(1.0849907418268656, rel=1e-12)


def test_predict_step_block_memory_bound():
    # every time is bytes / 1e12 (no floor): BF16 3 x 104,857,600 B = 314.5728 us;
    # FP8 82,054,656 + 61,738,496 + 68,288,512 = 212,081,664 B = 212.081664 us;
    # casts 25,427,968 + (88,997,888 + 29,360,128 + 7,168) + (88,997,888 + 25,427,968) + 44,043,776
    #       = 302,262,784 B = 302.262784 us
    s = roofline.predict_step(MEM, "block", M, N, K)
    assert s.bf16_s == pytest.approx(314.5728 * US, rel=1e-12)
    assert s.fp8_s == pytest.approx(212.081664 * US, rel=1e-12)
    assert s.cast_s == pytest.approx(302.262784 * US, rel=1e-12)


# ---- a ragged layer: no dim a multiple of 128, so rows x ceil(cols/128) != cols x ceil(rows/128) --
# M = 1000, N = 3300, K = 520: gM = ceil(7.8125) = 8, gN = ceil(25.78) = 26, gK = ceil(4.06) = 5
# (floor division would give 7, 25, 4)
# MK = 520,000   NK = 1,716,000   MN = 3,300,000
RM, RN, RK = 1000, 3300, 520
# GEMM bytes, block FP8:
#   fprop  MK + NK + 2MN = 8,836,000;  scales M gK + gN gK = 5,000 + 130 = 5,130 (x4 = 20,520)
#          = 8,856,520
#   dgrad  MN + KN + 2MK = 6,056,000;  scales M gN + gK gN = 26,000 + 130 = 26,130 (x4 = 104,520)
#          = 6,160,520
#   wgrad  NM + KM + 2NK = 7,252,000;  scales N gM + K gM = 26,400 + 4,160 = 30,560 (x4 = 122,240)
#          = 7,374,240
#   BF16   2(MK + NK + MN) = 11,072,000
RAGGED_FP8 = {"fprop": 8_856_520, "dgrad": 6_160_520, "wgrad": 7_374_240}
RAGGED_BF16 = 11_072_000
# casts:
#   fprop  3MK + 4 M gK = 1,560,000 + 20,000 = 1,580,000
#   dgrad  3MN + 4 M gN = 9,900,000 + 104,000 = 10,004,000; 2NK = 3,432,000; 8 gN gK = 1,040
#   wgrad  3MN + 4 N gM = 9,900,000 + 105,600 = 10,005,600; 3MK + 4 K gM = 1,560,000 + 16,640 = 1,576,640
#   weight 3NK + 4 gN gK = 5,148,000 + 520 = 5,148,520
RAGGED_CASTS = {"fprop": [1_580_000], "dgrad": [10_004_000, 3_432_000, 1_040],
                "wgrad": [10_005_600, 1_576_640]}
RAGGED_WEIGHT = [5_148_520]


def test_ragged_cast_kernels():
    for p in roofline.PASSES:
        assert roofline.cast_kernels(p, "block", RM, RN, RK) == RAGGED_CASTS[p], p
    assert roofline.weight_cast_kernels("block", RN, RK) == RAGGED_WEIGHT


@pytest.mark.parametrize("pass_name", roofline.PASSES)
def test_ragged_block_gemm_bytes(pass_name):
    p = roofline.predict(MEM, pass_name, "block", RM, RN, RK)
    assert p.fp8_s == pytest.approx(RAGGED_FP8[pass_name] / 1e12, rel=1e-12)
    assert p.bf16_s == pytest.approx(RAGGED_BF16 / 1e12, rel=1e-12)
    assert p.cast_s == pytest.approx(sum(RAGGED_CASTS[pass_name]) / 1e12, rel=1e-12)


def test_ragged_predict_step_block():
    # BF16 3 x 11,072,000 = 33,216,000 B; FP8 8,856,520 + 6,160,520 + 7,374,240 = 22,391,280 B;
    # casts 1,580,000 + 10,004,000 + 3,432,000 + 1,040 + 10,005,600 + 1,576,640 + 5,148,520 = 31,747,800 B
    s = roofline.predict_step(MEM, "block", RM, RN, RK)
    assert s.bf16_s == pytest.approx(33_216_000 / 1e12, rel=1e-12)
    assert s.fp8_s == pytest.approx(22_391_280 / 1e12, rel=1e-12)
    assert s.cast_s == pytest.approx(31_747_800 / 1e12, rel=1e-12)
    # FLOPs: 2 x 1000 x 3300 x 520 = 3,432,000,000 per pass; on ROUND FP8 3.432 us, BF16 6.864 us,
    # less than the bytes take: this small layer is memory bound there
    r = roofline.predict(ROUND, "fprop", "block", RM, RN, RK)
    # fprop FP8: max(3.432 us FLOPs, 8.85652 us bytes) = 8.85652 us; BF16: max(6.864, 11.072) = 11.072 us
    assert r.fp8_s == pytest.approx(8.85652 * US, rel=1e-12)
    assert r.bf16_s == pytest.approx(11.072 * US, rel=1e-12)


def test_the_floor_applies_to_each_kernel_and_each_gemm():
    # M = 1 token: dgrad's casts are dY 3 x 7168 + 4 x 56 = 21,728 B (21.7 ns), W^T 29,360,128 B and the
    # scale transpose 7,168 B: with the 2 us floor per kernel, 2 + 29.360128 + 2 us
    p = roofline.predict(ROUND, "dgrad", "block", 1, N, K)
    assert roofline.cast_kernels("dgrad", "block", 1, N, K) == [21_728, 29_360_128, 7_168]
    assert p.cast_s == pytest.approx((2 + 29.360128 + 2) * US, rel=1e-12)
    # a tiny GEMM: 2 x 1 x 1 x 1 FLOPs and a few bytes: the floor, in both dtypes
    tiny = roofline.predict(ROUND, "fprop", "block", 1, 1, 1)
    assert tiny.fp8_s == tiny.bf16_s == 2e-6


# ---- the device's machine ---------------------------------------------------------------------------

def test_machine_for_an_h100_sxm_takes_the_datasheet_peaks_the_factors_and_the_2us_floor():
    # NVIDIA H100 SXM5 datasheet: 989.4 dense BF16 TFLOP/s, 1978.9 dense FP8, 3.35 TB/s HBM3
    m = roofline.machine_for("NVIDIA H100 80GB HBM3", 0.7, 0.8)
    assert m == roofline.Machine(989.4, 1978.9, 3350.0, pct_gemm=0.7, pct_mem=0.8, min_kernel_s=2e-6)
    assert m.flops_per_s("bf16") == pytest.approx(692.58e12, rel=1e-12)
    assert m.bytes_per_s() == pytest.approx(2.68e12, rel=1e-12)
    # the module's "2 us floor": a one-element GEMM takes 2 us; an explicit floor is kept
    assert roofline.predict(m, "fprop", "tensor", 1, 1, 1).fp8_s == 2e-6
    assert roofline.machine_for("NVIDIA H100 80GB HBM3", 0.7, 0.8, min_kernel_s=5e-6).min_kernel_s == 5e-6


# ---- 1x128 groups round up at 128 -------------------------------------------------------------------

@pytest.mark.parametrize("k,nbytes", [
    (127, 3 * 2 * 127 + 4 * 2 * 1),   # 770: one group of 127
    (128, 3 * 2 * 128 + 4 * 2 * 1),   # 776: one full group
    (129, 3 * 2 * 129 + 4 * 2 * 2),   # 790: 128 + 1: two groups
    (256, 3 * 2 * 256 + 4 * 2 * 2),   # 1552
    (257, 3 * 2 * 257 + 4 * 2 * 3),   # 1566
])
def test_a_1x128_tile_cast_has_one_scale_per_started_group_of_128(k, nbytes):
    # fprop, block: X (2, k) to 1x128 tiles: 3 B per element + 4 B per tile scale, 2 x ceil(k/128) tiles
    assert roofline.cast_kernels("fprop", "block", 2, 64, k) == [nbytes]


# ---- the row recipe's casts ---------------------------------------------------------------------------

def test_row_recipe_cast_kernels_of_dgrad_and_wgrad():
    # M = 4096, N = 7168, K = 2048: MN = 29,360,128, MK = 8,388,608, NK = 14,680,064.
    # dgrad: dY (M, N) amax 2MN + cast 3MN; W from BF16: transpose 4NK, amax 2NK, cast 3NK
    assert roofline.cast_kernels("dgrad", "row", M, N, K) == [
        58_720_256, 88_080_384, 58_720_256, 29_360_128, 44_040_192]
    # wgrad: dY^T and X^T from BF16, each transposed (4 B/el), then amax (2) and cast (3)
    assert roofline.cast_kernels("wgrad", "row", M, N, K) == [
        117_440_512, 58_720_256, 88_080_384, 33_554_432, 16_777_216, 25_165_824]
    # a ragged, non-square one: M = 3, N = 5, K = 7 -> MN = 15, MK = 21
    assert roofline.cast_kernels("wgrad", "row", 3, 5, 7) == [60, 30, 45, 84, 42, 63]


def test_unknown_recipe_and_pass_are_named_in_the_error():
    with pytest.raises(ValueError, match="unknown recipe 'mxfp8'"):
        roofline.cast_kernels("fprop", "mxfp8", 128, 128, 128)
    with pytest.raises(ValueError, match="unknown pass 'xgrad'"):
        roofline.cast_kernels("xgrad", "tensor", 128, 128, 128)


# ---- where FP8 starts to pay, per pass and per step ----------------------------------------------------

# 2^30 B/s exactly (1.073741824 GB/s), FLOPs nearly free, no floor: every time is bytes / 2^30, exact
EXACT = roofline.Machine(bf16_tflops=1e6, fp8_tflops=1e6, bandwidth_GBps=1.073741824, pct_gemm=1.0, pct_mem=1.0,
                         min_kernel_s=0.0)


def test_memory_bound_fprop_tensor_wins_below_n_over_4_and_ties_at_it():
    # fprop, tensor, memory bound: BF16 2(MK + NK + MN) against FP8 MK + NK + 2MN plus X's amax 2MK
    # and cast 3MK: FP8 wins iff 2NK > NK + 4MK, i.e. N > 4M. N = 4096, K = 1024: M = 1024 ties
    # (both 18,874,368 B), M < 1024 wins
    assert EXACT.bytes_per_s() == 2.0 ** 30
    tie = roofline.predict(EXACT, "fprop", "tensor", 1024, 4096, 1024)
    assert tie.bf16_s == 18_874_368 / 2 ** 30 and tie.fp8_s + tie.cast_s == 18_874_368 / 2 ** 30
    assert tie.speedup == 1.0
    # 1000: 2(1,024,000 + 4,194,304 + 4,096,000) = 18,628,608 B against 6 x 1,024,000 + 4,194,304
    # + 2 x 4,096,000 = 18,530,304 B
    assert roofline.predict(EXACT, "fprop", "tensor", 1000, 4096, 1024).speedup == pytest.approx(
        18_628_608 / 18_530_304, rel=1e-12)
    assert roofline.breakeven_m(EXACT, "fprop", "tensor", 4096, 1024, [512, 1000, 256]) == 256
    # a tie at the largest M is no win: FP8 does not pay from any M on
    assert roofline.breakeven_m(EXACT, "fprop", "tensor", 4096, 1024, [256, 512, 1024]) is None
    assert roofline.breakeven_m(EXACT, "fprop", "tensor", 4096, 1024, [256, 512, 1024, 1000]) is None


def test_memory_bound_step_never_pays_with_the_tensor_recipe():
    # the whole step, memory bound: BF16 3 passes x 2(MK + NK + MN) = 6(MK + NK + MN); FP8 GEMMs
    # 4(MK + NK + MN), casts fprop 5MK, dgrad 5MN + 2NK, wgrad 2MN + 2MK, the weight 5NK:
    # 11(MK + NK + MN): 6/11 at any shape, so no M pays although fprop alone does below N/4
    for m in (256, 1000, 4096):
        assert roofline.predict_step(EXACT, "tensor", m, 4096, 1024).speedup == pytest.approx(6 / 11, rel=1e-12)
    assert roofline.breakeven_m(EXACT, None, "tensor", 4096, 1024, [256, 512, 1000]) is None
    assert roofline.breakeven_m(EXACT, "fprop", "tensor", 4096, 1024, [256, 512, 1000]) == 256
