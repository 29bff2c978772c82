"""Accuracy measures and the FP8 accumulation tolerance against values worked out by hand.

calc_diff is DeepGEMM's 1 - 2 sum(xy) / sum(x^2 + y^2), sqnr_db 10 log10(|ref|^2 / |out - ref|^2),
max_rel_err max |out - ref| / max(|ref|, 1% of RMS(ref)); each checked on vectors of one to four
elements whose answers are small fractions. The tolerance model's numbers are the ones in
accuracy.py's docstring, written out to four or five digits:

  rho(13 bits) = 2^-13 / (4 ln 2) = 4.4028e-5
  calc_diff(K) = (rho K / 32)^2 / 6 (32: the k of an FP8 WGMMA / mma.sync step)
      K = 8192:  (2^-5 / (4 ln 2))^2 / 6 = 1 / (98304 (ln 2)^2) = 2.11728e-5
      K = 128:   (2^-13 / ln 2)^2 / 6 = 5.16914e-9
      K = 1:     3.15499e-13
  DeepSeek-V3 (sec. 3.3.2) promotes the tensor-core partial sums to FP32 every N_C = 128 elements
  of K (4 WGMMAs of k = 32), so a promoted kernel's unpromoted run is min(K, 128).
In-process, no kernels.
"""

import math

import pytest
import torch

from hpcbench.measure.accuracy import (
    FAST,
    FP32,
    PROMOTED_K128,
    accumulation_calc_diff,
    accuracy,
    calc_diff,
    fp8_tolerance,
    max_rel_err,
    sqnr_db,
    unpromoted_k,
)


def _t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# ---- calc_diff --------------------------------------------------------------------------------------

@pytest.mark.parametrize("out,ref,want", [
    ((4.0,), (3.0,), 0.04),              # 1 - 2*12 / (16 + 9) = 1 - 24/25
    ((2.0,), (1.0,), 0.2),               # 1 - 2*2 / (4 + 1) = 1 - 4/5
    ((1.0,), (0.0,), 1.0),               # sum x^2 + y^2 = 1 exactly: nothing shared
    ((1.0, 0.0), (0.0, 1.0), 1.0),       # orthogonal
    ((3.0, -4.0), (-3.0, 4.0), 2.0),     # opposite: 1 - 2*(-25) / 50
    ((1.0, 2.0), (1.0, 2.0), 0.0),       # equal
    ((3.0, 4.0), (4.0, 3.0), 0.04),      # 1 - 2*24 / 50
    ((0.0, 0.0), (0.0, 0.0), 0.0),       # both zero: defined as no difference
])
def test_calc_diff_known_answers(out, ref, want):
    assert calc_diff(_t(*out), _t(*ref)) == pytest.approx(want, abs=1e-15)


def test_calc_diff_is_computed_in_double_precision():
    # float32 inputs: 1 + 2^-12 squared differs from 1 only in the 2^-11 place, which float32
    # keeps, but 1 - calc_diff's terms cancel to ~2^-26, below float32's resolution
    x, y = torch.tensor([1.0 + 2**-12], dtype=torch.float32), torch.tensor([1.0], dtype=torch.float32)
    # 1 - 2(1 + e) / (1 + (1 + e)^2) = e^2 / (2 + 2e + e^2), e = 2^-12
    e = 2.0**-12
    assert calc_diff(x, y) == pytest.approx(e * e / (2 + 2 * e + e * e), rel=1e-9, abs=0)


# ---- sqnr_db -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("out,ref,want", [
    ((11.0,), (10.0,), 20.0),            # signal 100, noise 1
    ((12.0,), (10.0,), 13.979400086720377),  # 10 log10(100 / 4) = 20 - 20 log10(2)
    ((1.1,), (1.0,), 20.0),              # signal 1, noise 0.01
    ((8.0, -9.0), (10.0, -10.0), 10 * math.log10(200 / 5)),  # errors 2 and 1: noise 5, signal 200
    ((4.0,), (3.0,), 10 * math.log10(9.0)),
])
def test_sqnr_db_known_answers(out, ref, want):
    assert sqnr_db(_t(*out), _t(*ref)) == pytest.approx(want, rel=1e-9, abs=0)


def test_sqnr_db_exact_is_infinite_and_a_zero_reference_minus_infinite():
    assert sqnr_db(_t(1.0, -2.0), _t(1.0, -2.0)) == math.inf
    assert sqnr_db(_t(0.5, 0.0), _t(0.0, 0.0)) == -math.inf
    assert sqnr_db(_t(0.0), _t(0.0)) == math.inf  # nothing, exactly


# ---- max_rel_err -------------------------------------------------------------------------------------
# ref = (3, 4, 0, 0): RMS = sqrt(25 / 4) = 2.5, floor = 1% of it = 0.025

REF = (3.0, 4.0, 0.0, 0.0)


@pytest.mark.parametrize("out,want", [
    ((3.3, 4.0, 0.0, 0.0), 0.1),         # 0.3 / 3
    ((3.0, 3.0, 0.0, 0.0), 0.25),        # 1 / 4
    ((3.0, 4.0, 0.05, 0.0), 2.0),        # 0.05 / the floor 0.025, not / 0
    ((3.0, 4.0, 0.0, -0.01), 0.4),       # 0.01 / 0.025
    ((3.0, 4.0, 0.0, 0.0), 0.0),
])
def test_max_rel_err_known_answers(out, want):
    assert max_rel_err(_t(*out), _t(*REF)) == pytest.approx(want, rel=1e-12, abs=0)


def test_max_rel_err_floor_fraction_is_a_parameter():
    # floor 10% of 2.5 = 0.25: 0.05 / 0.25 = 0.2; floor 0 would divide by |ref| = 0
    assert max_rel_err(_t(3.0, 4.0, 0.05, 0.0), _t(*REF), floor_frac=0.1) == pytest.approx(0.2, rel=1e-12, abs=0)


def test_max_rel_err_of_an_all_zero_reference():
    # no scale to take a floor from: equal outputs are exact, any other output is off by ~1e300
    assert max_rel_err(_t(0.0, 0.0), _t(0.0, 0.0)) == 0.0
    assert max_rel_err(_t(1e-3, 0.0), _t(0.0, 0.0)) > 1e290


def test_accuracy_reports_the_three_measures_of_out_against_ref():
    got = accuracy(_t(4.0), _t(3.0))
    assert got.keys() == {"calc_diff", "sqnr_db", "max_rel_err"}
    assert got["calc_diff"] == pytest.approx(0.04, abs=1e-15)
    assert got["sqnr_db"] == pytest.approx(10 * math.log10(9.0), rel=1e-12, abs=0)  # |3|^2 / |1|^2
    assert got["max_rel_err"] == pytest.approx(1 / 3, rel=1e-12, abs=0)  # relative to ref = 3, not out = 4


# ---- the accumulation model and the FP8 tolerance ---------------------------------------------------

@pytest.mark.parametrize("K,want", [(8192, 2.11728e-5), (128, 5.16914e-9), (1, 3.15499e-13),
                                    (16384, 8.46911e-5), (28672, 2.59367e-4)])
def test_accumulation_calc_diff_known_answers(K, want):
    assert accumulation_calc_diff(K) == pytest.approx(want, rel=1e-5, abs=0)


def test_accumulation_calc_diff_bits_and_group():
    # one more bit halves rho: a quarter of the calc_diff; groups of 16 double the steps: x4
    assert accumulation_calc_diff(8192, bits=14) == pytest.approx(2.11728e-5 / 4, rel=1e-5, abs=0)
    assert accumulation_calc_diff(8192, bits=12) == pytest.approx(2.11728e-5 * 4, rel=1e-5, abs=0)
    assert accumulation_calc_diff(8192, group=16) == pytest.approx(2.11728e-5 * 4, rel=1e-5, abs=0)
    # nothing accumulated, nothing lost: whatever the accumulator's other parameters
    assert accumulation_calc_diff(0) == 0.0 and accumulation_calc_diff(-128) == 0.0
    assert accumulation_calc_diff(0, bits=0, group=0) == 0.0


def test_unpromoted_k_per_mode():
    assert [unpromoted_k(K, FAST) for K in (1, 128, 4096)] == [1, 128, 4096]
    assert [unpromoted_k(K, PROMOTED_K128) for K in (1, 127, 128, 129, 4096)] == [1, 127, 128, 128, 128]
    assert [unpromoted_k(K, FP32) for K in (1, 4096)] == [0, 0]
    with pytest.raises(ValueError, match="unknown accumulation mode 'fp16'"):
        unpromoted_k(4096, "fp16")


@pytest.mark.parametrize("K,mode,want", [
    (8192, FAST, 2e-5 + 4 * 2.11728e-5),           # 1.046912e-4
    (8192, PROMOTED_K128, 2e-5 + 4 * 5.16914e-9),  # the model at K = 128
    (100, PROMOTED_K128, 2e-5 + 4 * 3.15499e-13 * 100**2),  # K below the interval: all of it
    (8192, FP32, 2e-5),
])
def test_fp8_tolerance_defaults_are_13_bits_and_a_margin_of_4(K, mode, want):
    assert fp8_tolerance(2e-5, K, mode) == pytest.approx(want, rel=1e-5, abs=0)


def test_fp8_tolerance_takes_bits_and_margin():
    assert fp8_tolerance(0.0, 8192, FAST, bits=14, margin=1.0) == pytest.approx(2.11728e-5 / 4, rel=1e-5, abs=0)
    assert fp8_tolerance(1e-6, 8192, FAST, bits=13, margin=2.0) == pytest.approx(1e-6 + 2 * 2.11728e-5, rel=1e-5, abs=0)
    with pytest.raises(ValueError, match="unknown accumulation mode"):
        fp8_tolerance(2e-5, 128, "fp16")
