"""FP8 accumulation error: the model behind the gemm tolerances, checked against a direct emulation.

The emulation is the model's hardware picture run step by step, in float64: FP8-representable
inputs, `group` exact products added per tensor-core step to an accumulator that keeps `bits`
mantissa bits and truncates; optionally promoted into a float64 sum every 128 of K (DeepSeek-V3);
the result rounded to BF16 as the kernels store it. Its calc_diff against the exact product of the
same FP8 inputs is what a correct kernel of that accumulation mode shows against its dequantized
reference, so: fast accumulation must stay within the fast tolerance at every K, and exceed the
tolerance of promoted/FP32 accumulation at large K (the tolerance separates the modes: a kernel
that should promote and does not is caught, a correct fast kernel is not failed).
"""

import math

import numpy as np
import pytest
import torch

from hpcbench.measure.accuracy import FAST, FP32, PROMOTED_K128, accumulation_calc_diff, calc_diff, fp8_tolerance

FLOOR = 2e-5  # gemm.tol_fp8_kernel's default (conf/benchmark/gemm.yaml)
KS = (8192, 16384, 28672)


def _round_bits(x: np.ndarray, bits: int, truncate: bool) -> np.ndarray:
    """x rounded to `bits` mantissa bits (bits + 1 significant bits), toward zero or to nearest."""
    m, e = np.frexp(x)  # x = m * 2^e, 0.5 <= |m| < 1
    scaled = m * 2.0 ** (bits + 1)
    return np.ldexp(np.trunc(scaled) if truncate else np.round(scaled), e - (bits + 1))


def emulate(a: np.ndarray, b: np.ndarray, bits: int, group: int = 32, promote_every: int | None = None,
            truncate: bool = True) -> np.ndarray:
    """a (M, K) @ b (N, K)^T with a `bits`-bit accumulator fed `group` exact products per step."""
    M, K = a.shape
    acc = np.zeros((M, b.shape[0]))
    promoted = np.zeros_like(acc)
    for k0 in range(0, K, group):
        # a group's sum is exact in float64: FP8 products have 8 significant bits, 32 of them fit
        acc = _round_bits(acc + a[:, k0:k0 + group] @ b[:, k0:k0 + group].T, bits, truncate)
        if promote_every and (k0 + group) % promote_every == 0:
            promoted += acc
            acc = np.zeros_like(acc)
    return promoted + acc


def _fp8_inputs(M: int, N: int, K: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(M, K, generator=g).to(torch.float8_e4m3fn).double().numpy()
    b = torch.randn(N, K, generator=g).to(torch.float8_e4m3fn).double().numpy()
    return a, b


def _bf16(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).to(torch.bfloat16)


@pytest.fixture(scope="module")
def emulated() -> dict:
    """calc_diff against the exact product, per K, for each accumulation (BF16 output, as stored)."""
    out = {}
    for K in KS:
        a, b = _fp8_inputs(48, 40, K, seed=K)
        exact = torch.from_numpy(a @ b.T)
        out[K] = {
            "fast13": calc_diff(_bf16(emulate(a, b, 13)), exact),
            "fast14": calc_diff(_bf16(emulate(a, b, 14)), exact),
            "promoted13": calc_diff(_bf16(emulate(a, b, 13, promote_every=128)), exact),
            "fp32": calc_diff(_bf16(a @ b.T), exact),
            "fast13_raw": calc_diff(torch.from_numpy(emulate(a, b, 13)), exact),  # no output rounding
            "nearest13_raw": calc_diff(torch.from_numpy(emulate(a, b, 13, truncate=False)), exact),
        }
    return out


def test_round_bits_known_answers():
    x = np.array([1.0 + 2**-13 + 2**-14, -(1.0 + 2**-13 + 2**-14), 3.0, 0.0])
    assert _round_bits(x, 13, truncate=True).tolist() == [1.0 + 2**-13, -(1.0 + 2**-13), 3.0, 0.0]
    assert _round_bits(x, 13, truncate=False)[0] == 1.0 + 2**-12
    assert _round_bits(np.array([1.0 + 2**-14]), 13, truncate=True)[0] == 1.0  # below the last bit: dropped


def test_emulation_with_a_wide_accumulator_is_exact():
    a, b = _fp8_inputs(8, 8, 1024)
    np.testing.assert_array_equal(emulate(a, b, 52), a @ b.T)


def test_model_matches_the_emulation(emulated):
    """The closed form (rho K / 32)^2 / 6 against the step-by-step emulation, bits=13, no BF16."""
    for K in KS:
        model = accumulation_calc_diff(K, bits=13)
        assert 0.7 * model < emulated[K]["fast13_raw"] < 1.4 * model, (K, emulated[K]["fast13_raw"], model)
    # the brief's anchors: ~2e-5 at K=8192, ~9e-5 at 16384, ~2.6e-4 at 28672; growth ~K^2
    assert accumulation_calc_diff(8192) == pytest.approx(2.1e-5, rel=0.05)
    assert accumulation_calc_diff(16384) == pytest.approx(8.5e-5, rel=0.05)
    assert accumulation_calc_diff(28672) == pytest.approx(2.6e-4, rel=0.05)
    assert accumulation_calc_diff(16384) / accumulation_calc_diff(8192) == pytest.approx(4.0)
    assert accumulation_calc_diff(8192, bits=14) == pytest.approx(accumulation_calc_diff(8192) / 4)
    # truncation is what makes it ~K^2: rounding to nearest is unbiased and two orders smaller
    assert emulated[28672]["nearest13_raw"] < emulated[28672]["fast13_raw"] / 100


def test_fast_accumulation_passes_its_tolerance_at_every_k(emulated):
    for K in KS:
        tol = fp8_tolerance(FLOOR, K, FAST, bits=13, margin=4.0)
        assert emulated[K]["fast13"] <= tol and emulated[K]["fast14"] <= tol, (K, emulated[K], tol)


def test_fast_accumulation_fails_the_promoted_and_fp32_tolerance_at_large_k(emulated):
    for K in (16384, 28672):
        for mode in (PROMOTED_K128, FP32):
            assert emulated[K]["fast13"] > fp8_tolerance(FLOOR, K, mode, bits=13, margin=4.0)
    # the old fixed tolerance (1e-4) failed a correct fast kernel at K=28672
    assert emulated[28672]["fast13"] > 1e-4


def test_promoted_and_fp32_accumulation_stay_at_the_floor(emulated):
    for K in KS:
        for key, mode in (("promoted13", PROMOTED_K128), ("fp32", FP32)):
            tol = fp8_tolerance(FLOOR, K, mode, bits=13, margin=4.0)
            assert tol == pytest.approx(FLOOR, rel=1e-2)
            assert emulated[K][key] <= tol
    # promotion every 128 leaves only the BF16 output rounding: at most (2^-8)^2 / 2
    assert max(emulated[K]["promoted13"] for K in KS) < (2.0 ** -8) ** 2 / 2


def test_unknown_accumulation_mode_is_an_error():
    with pytest.raises(ValueError, match="accumulation"):
        fp8_tolerance(FLOOR, 128, "fp16")
    assert accumulation_calc_diff(0) == 0.0
    assert math.isfinite(fp8_tolerance(FLOOR, 1, FAST))
