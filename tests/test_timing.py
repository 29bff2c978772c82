import math
import time

import pytest
import torch

from hpcbench.errors import ImpossibleMeasurement
from hpcbench.timing import TimingPolicy, summarize, tflops, time_fn


def test_summarize_known_answers():
    s = summarize([float(x) for x in range(1, 12)])  # 1..11
    assert s.n == 11 and s.median_s == 6 and s.min_s == 1 and s.max_s == 11
    assert s.p10_s == pytest.approx(2.0) and s.p90_s == pytest.approx(10.0)
    assert s.iqr_s == pytest.approx(5.0)
    assert s.cv == pytest.approx(math.sqrt(11.0) / 6.0)  # sample std of 1..11 is sqrt(11)


def test_summarize_single_sample_has_zero_cv():
    assert summarize([0.5]).cv == 0.0


@pytest.mark.parametrize("bad", [[], [0.0], [-1.0, 1.0], [float("nan")]])
def test_summarize_refuses_impossible_samples(bad):
    with pytest.raises((ValueError, ImpossibleMeasurement)):
        summarize(bad)


def test_host_timer_measures_real_time_and_respects_rep_bounds():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    policy = TimingPolicy(warmup=2, min_reps=4, max_reps=7, budget_s=10.0)
    t = time_fn(fn, torch.device("cpu"), policy)
    assert t.method == "perf_counter"
    assert len(t.samples_s) == 7  # budget allows more: capped by max_reps
    assert len(calls) == 2 + 7
    assert min(t.samples_s) >= 0.002 and t.stats.median_s < 0.05


def test_budget_limits_repetitions_but_not_below_min_reps():
    t = time_fn(lambda: time.sleep(0.01), torch.device("cpu"),
                TimingPolicy(warmup=1, min_reps=3, max_reps=100, budget_s=0.001))
    assert len(t.samples_s) == 3


def test_policy_validation():
    with pytest.raises(ValueError):
        TimingPolicy(min_reps=0)
    with pytest.raises(ValueError):
        TimingPolicy(min_reps=5, max_reps=2)
    with pytest.raises(ValueError):
        TimingPolicy(budget_s=0)


def test_tflops_formula_and_peak_guard():
    assert tflops(2e12, 1.0, peak_tflops=None) == pytest.approx(2.0)
    assert tflops(2e12, 0.5, peak_tflops=989.4) == pytest.approx(4.0)
    with pytest.raises(ImpossibleMeasurement, match="exceeds"):
        tflops(2 * 8192**3, 1e-4, peak_tflops=989.4)  # 11000 TFLOP/s on an H100: refused
    for bad_time in (0.0, -1.0, float("nan")):
        with pytest.raises(ImpossibleMeasurement):
            tflops(1.0, bad_time, None)
