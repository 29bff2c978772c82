import math
import time

import pytest
import torch

from hpcbench.api.errors import ImpossibleMeasurement
from hpcbench.measure.timing import TimingPolicy, summarize, tflops, time_fn


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


def test_host_warm_up_goes_by_time_so_a_slow_first_call_is_no_sample():
    calls = []

    def fn():
        calls.append(time.perf_counter())
        if len(calls) <= 2:
            time.sleep(0.02)  # the first calls land on a scheduler quantum (20 ms beside ~0 ms)

    t = time_fn(fn, torch.device("cpu"), TimingPolicy(warmup=1, warmup_s=0.05, min_reps=3, max_reps=3, budget_s=1.0))
    assert max(t.samples_s) < 0.015  # by count alone (warmup=1), the second slow call is the first sample
    warm = len(calls) - 3
    assert warm >= 3 and calls[warm] - calls[0] >= 0.05  # the first sample starts after 50 ms of warm-up
    start = time.perf_counter()
    time_fn(lambda: None, torch.device("cpu"), TimingPolicy(warmup=1, warmup_s=0.02, min_reps=3, max_reps=3))
    assert time.perf_counter() - start < 0.5  # the stated cost: about warmup_s per point


def test_the_cpu_defaults_warm_up_for_20_ms():
    from hpcbench.core.config import compose, parse_timing

    assert parse_timing(compose().timing.cpu, "cpu").warmup_s == pytest.approx(0.02)
    assert parse_timing(compose().timing.gpu, "gpu").warmup_s == 0


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
    with pytest.raises(ValueError):
        TimingPolicy(warmup_s=-0.1)


def test_tflops_formula_and_peak_guard():
    assert tflops(2e12, 1.0, peak_tflops=None) == pytest.approx(2.0)
    assert tflops(2e12, 0.5, peak_tflops=989.4) == pytest.approx(4.0)
    with pytest.raises(ImpossibleMeasurement, match="exceeds"):
        tflops(2 * 8192**3, 1e-4, peak_tflops=989.4)  # 11000 TFLOP/s on an H100: refused
    for bad_time in (0.0, -1.0, float("nan")):
        with pytest.raises(ImpossibleMeasurement):
            tflops(1.0, bad_time, None)


# ---- CUDA paths, checked on the CPU: the decisions are pure, the flush is read-only --------------

def test_graph_timing_is_chosen_for_short_calls_only():
    from hpcbench.measure.timing import choose_cuda_method

    auto = TimingPolicy()  # cuda_graph="auto", graph_below_us=50
    assert auto.cuda_graph == "auto" and auto.graph_below_us == 50
    assert choose_cuda_method(10e-6, auto) == "cuda_graph"  # a small-M GEMM: launch overhead dominates
    assert choose_cuda_method(49.9e-6, auto) == "cuda_graph"
    assert choose_cuda_method(50e-6, auto) == "cuda_event"
    assert choose_cuda_method(2e-3, auto) == "cuda_event"
    assert choose_cuda_method(10e-6, TimingPolicy(graph_below_us=5)) == "cuda_event"
    assert choose_cuda_method(1.0, TimingPolicy(cuda_graph=True)) == "cuda_graph"
    assert choose_cuda_method(1e-6, TimingPolicy(cuda_graph=False)) == "cuda_event"
    for bad in ("yes", "graph", 1.5):
        with pytest.raises(ValueError, match="cuda_graph"):
            TimingPolicy(cuda_graph=bad)
    with pytest.raises(ValueError):
        TimingPolicy(graph_below_us=-1)


def _fake_cuda(monkeypatch, estimate_s: float, replay_s: float | None = None, graph_fails: bool = False) -> list[str]:
    """Replace the device-only pieces of the CUDA timer with injected timings: `estimate_s` from
    back-to-back calls (host-bound where the host is slower), `replay_s` the GPU's time per call in
    a captured replay. Returns the log of which path ran."""
    from hpcbench.measure import timing

    log = []
    replay_s = estimate_s if replay_s is None else replay_s

    def capture(fn, device, policy):
        log.append("capture")
        if graph_fails:
            raise RuntimeError("operation not permitted when stream is capturing")
        return timing.Captured(lambda: None, None, policy.graph_calls)

    def replays(captured, device, reps):
        log.append(f"replay x{reps}")
        return [replay_s] * reps

    def events(fn, device, policy, estimate):
        log.append(f"events@{estimate:g}")
        return [2e-3] * 3

    monkeypatch.setattr(timing, "_cuda_estimate", lambda fn, device, calls: estimate_s)
    monkeypatch.setattr(timing, "_capture", capture)
    monkeypatch.setattr(timing, "_replay_samples", replays)
    monkeypatch.setattr(timing, "_time_cuda_events", events)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    return log


@pytest.mark.parametrize("estimate_s,replay_s,method", [
    (8e-6, 8e-6, "cuda_graph"),
    (60e-6, 15e-6, "cuda_graph"),  # host-bound: 60 us of Python around a 15 us kernel
    (60e-6, 55e-6, "cuda_event"),  # the kernel itself is long enough for events
    (5e-4, 5e-4, "cuda_event"),
])
def test_time_fn_on_cuda_decides_from_the_gpu_time_of_a_replay(monkeypatch, estimate_s, replay_s, method):
    log = _fake_cuda(monkeypatch, estimate_s, replay_s)
    calls = []
    t = time_fn(lambda: calls.append(1), torch.device("cuda"), TimingPolicy(warmup=2))
    assert t.method == method and len(calls) == 2  # warm-up ran before the estimate
    assert log[:2] == ["capture", "replay x3"]  # the decision is the device's, not the host's
    assert log[2].startswith("replay") if method == "cuda_graph" else log[2] == f"events@{estimate_s:g}"


def test_a_call_far_longer_than_any_launch_path_is_timed_with_events_without_a_capture(monkeypatch):
    from hpcbench.measure.timing import HOST_BOUND_MAX_S

    log = _fake_cuda(monkeypatch, HOST_BOUND_MAX_S)
    assert time_fn(lambda: None, torch.device("cuda"), TimingPolicy()).method == "cuda_event"
    assert log == [f"events@{HOST_BOUND_MAX_S:g}"]
    log = _fake_cuda(monkeypatch, 2 * HOST_BOUND_MAX_S)
    assert time_fn(lambda: None, torch.device("cuda"), TimingPolicy(cuda_graph=True)).method == "cuda_graph"


def test_auto_falls_back_to_events_when_capture_fails_but_forced_graphs_raise(monkeypatch):
    log = _fake_cuda(monkeypatch, 5e-6, graph_fails=True)
    assert time_fn(lambda: None, torch.device("cuda"), TimingPolicy()).method == "cuda_event"
    assert log == ["capture", "events@5e-06"]
    with pytest.raises(RuntimeError, match="capturing"):
        time_fn(lambda: None, torch.device("cuda"), TimingPolicy(cuda_graph=True))


def test_graph_samples_subtract_the_captured_flushes():
    from hpcbench.measure.timing import per_call_samples

    # 20 calls per replay, each after a flush; the flushes alone take 400 us (median of 390, 400, 900)
    assert per_call_samples([600e-6, 620e-6], [390e-6, 400e-6, 900e-6], 20) == pytest.approx([10e-6, 11e-6])
    assert per_call_samples([600e-6], None, 20) == pytest.approx([30e-6])  # no flush: nothing to subtract


def test_l2_flush_reads_the_buffer_and_never_writes_it():
    from hpcbench.measure.timing import L2Flusher

    flush = L2Flusher(torch.device("cpu"), enabled=True, nbytes=4 << 20)
    buf = flush.buffer
    assert buf.numel() * buf.element_size() == 4 << 20
    before, version = buf.clone(), buf._version
    for _ in range(3):
        flush()
    assert buf._version == version and torch.equal(buf, before)  # not one write to the big buffer
    assert flush.sink.numel() == 1  # the reduction's one output element, preallocated
    assert int(flush.sink) == int(before.sum(dtype=torch.int64))  # it did read all of it
    buf.zero_()  # what the flush used to do: this test sees it
    assert buf._version > version
    off = L2Flusher(torch.device("cpu"), enabled=False)
    off()
    assert off.buffer is None


def test_config_timing_sections_build_policies():
    from hpcbench.core.config import compose
    from hpcbench.core.plan import plan_run

    plan = plan_run(compose([]), local=False)
    gpu, cpu = plan.timing_for("cuda"), plan.timing_for("cpu")
    assert gpu.cuda_graph == "auto" and gpu.graph_below_us == 50 and gpu.flush_l2
    assert cpu.cuda_graph is False
