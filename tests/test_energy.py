"""Energy, power and clock columns, with a fake NVML (the real one is checked on a GPU)."""

import threading
import time

import pytest

from hpcbench.measure.energy import (
    COLUMNS,
    EnergyMeter,
    Reading,
    combine,
    decode_throttle,
    energy_columns,
    from_floats,
    open_meter,
    to_floats,
)


class FakeNvml:
    """Just the NVML calls the meter makes: an energy counter (mJ) read in turn, an SM clock that
    drops to 1350 MHz while the point runs, and throttle bits (power cap seen once)."""

    NVML_CLOCK_SM = 1

    def __init__(self, energy_mj, clocks=(1980, 1350, 1980), masks=(0x0, 0x4, 0x1)):
        self.energy = list(energy_mj)
        self.clocks, self.masks = list(clocks), list(masks)
        self.clock_types = set()
        self.lock = threading.Lock()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        assert handle == "gpu0"
        return self.energy.pop(0)

    def nvmlDeviceGetClockInfo(self, handle, kind):
        self.clock_types.add(kind)
        with self.lock:
            return self.clocks.pop(0) if len(self.clocks) > 1 else self.clocks[0]

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        with self.lock:
            return self.masks.pop(0) if len(self.masks) > 1 else self.masks[0]


def test_throttle_reasons_decode_by_nvml_bits():
    assert decode_throttle(0) == []
    assert decode_throttle(0x4) == ["sw_power_cap"]
    assert decode_throttle(0x1 | 0x20 | 0x40) == ["gpu_idle", "sw_thermal_slowdown", "hw_thermal_slowdown"]
    assert decode_throttle(0x8 | 0x80) == ["hw_slowdown", "hw_power_brake_slowdown"]
    assert decode_throttle(0x10000 | 0x4) == ["sw_power_cap", "0x10000"]


def test_meter_reads_energy_lowest_clock_and_every_reason_seen():
    nvml = FakeNvml(energy_mj=[1_000_000, 1_350_000])  # 350 J between start and stop
    meter = EnergyMeter(nvml, "gpu0", sample_s=0.01)
    meter.start()
    time.sleep(0.05)
    reading = meter.stop()
    assert reading.energy_J == pytest.approx(350.0) and reading.reason is None
    assert reading.sm_clock_min_MHz == 1350 and nvml.clock_types == {1}
    assert decode_throttle(reading.throttle_mask) == ["gpu_idle", "sw_power_cap"]
    assert reading.interval_s >= 0.05


def test_power_and_energy_per_tflop_arithmetic():
    r = Reading(energy_J=350.0, interval_s=0.5, sm_clock_min_MHz=1350.0, throttle_mask=0x4)
    cols = energy_columns(r, {"tflops": 700.0})
    assert cols["avg_W"] == pytest.approx(700.0)  # 350 J / 0.5 s
    assert cols["J_per_TFLOP"] == pytest.approx(1.0)  # 700 W / 700 TFLOP/s
    assert cols["throttle_reasons"] == ["sw_power_cap"] and cols["energy_reason"] is None
    assert set(cols) | {"energy_point_J", "energy_point_interval_s"} == set(COLUMNS)
    assert energy_columns(r, {})["J_per_TFLOP"] is None  # no throughput: no energy per TFLOP


def test_a_row_without_timed_loops_keeps_the_whole_point_and_says_so():
    from hpcbench.measure.energy import NO_TIMED_SPAN, row_energy

    whole = Reading(energy_J=90.0, interval_s=3.0, sm_clock_min_MHz=1400.0, throttle_mask=0)
    cols = row_energy(None, whole, {"tflops": 10.0})
    assert set(cols) == set(COLUMNS)
    assert cols["energy_J"] is None and cols["avg_W"] is None and cols["J_per_TFLOP"] is None
    assert cols["energy_point_J"] == 90.0 and cols["energy_reason"] == NO_TIMED_SPAN
    timed = row_energy(Reading(12.0, 0.04, 1380.0, 0), whole, {"tflops": 10.0})
    assert timed["avg_W"] == pytest.approx(300.0) and timed["energy_point_J"] == 90.0


def test_a_counter_that_did_not_advance_is_blank_with_the_reason():
    meter = EnergyMeter(FakeNvml(energy_mj=[5000, 5000]), "gpu0", sample_s=1)
    meter.start()
    reading = meter.stop()
    assert reading.energy_J is None and "did not advance" in reading.reason
    cols = energy_columns(reading, {"tflops": 1.0})
    assert cols["avg_W"] is None and cols["J_per_TFLOP"] is None


def test_ranks_combine_summed_energy_lowest_clock_all_reasons():
    a = Reading(100.0, 1.0, 1500.0, 0x4)
    b = Reading(120.0, 1.0, 1300.0, 0x20)
    both = combine([from_floats(to_floats(x), None) for x in (a, b)])
    assert both.energy_J == pytest.approx(220.0) and both.sm_clock_min_MHz == 1300
    assert decode_throttle(both.throttle_mask) == ["sw_power_cap", "sw_thermal_slowdown"]
    missing = combine([a, Reading(None, 1.0, None, 0, "NVML not available: x")])
    assert missing.energy_J is None and missing.reason == "NVML not available: x"  # never a partial sum


def test_without_nvml_every_column_is_blank_with_the_reason():
    meter = open_meter("cpu")
    meter.start()
    cols = energy_columns(meter.stop(), {"tflops": 3.0})
    assert cols["energy_reason"] == "NVML not available: the device is cpu, not an NVIDIA GPU"
    assert all(cols[c] is None for c in ("energy_J", "avg_W", "J_per_TFLOP", "sm_clock_min_MHz", "throttle_reasons"))


def test_nvml_that_fails_to_initialise_says_why():
    class Broken:
        def nvmlInit(self):
            raise RuntimeError("Driver Not Loaded")

    meter = open_meter("cuda", 0, nvml=Broken())
    assert not meter.available and meter.reason == "NVML not available: RuntimeError: Driver Not Loaded"


@pytest.mark.subprocess
def test_cpu_run_rows_carry_the_energy_columns_blank(cli, tmp_path):
    import json

    out = cli("benchmark=gemm", "gemm.shapes=custom", "gemm.custom=[[48,40,160]]", "gemm.dtypes=[bf16]",
              "gemm.backends=[torch]", "gemm.time_quantization=false", "timing.cpu.max_reps=3",
              "timing.cpu.min_reps=2")
    assert out.returncode == 0, out.stderr
    (run_dir,) = [p for p in (tmp_path / "results").iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (run_dir / "rows.jsonl").read_text().splitlines()]
    assert rows and all(r["energy_reason"].startswith("NVML not available: the device is cpu") for r in rows)
    assert all(r["energy_J"] is None and r["energy_interval_s"] > 0 for r in rows)


class _FakeMeter:
    """A meter drawing a fixed power: every start/stop pair reads `watts` x the pair's interval,
    stated (not measured) as `interval_s`, so the arithmetic is exact; `active` while started."""

    available = True

    def __init__(self, watts: float, interval_s: float):
        self.watts, self.interval_s, self.active, self.reason = watts, interval_s, False, None

    def start(self):
        self.active = True

    def stop(self):
        self.active = False
        return Reading(self.watts * self.interval_s, self.interval_s, 1500.0, 0x4)

    def close(self):
        pass


def test_only_the_timed_repetitions_are_metered_not_warm_up_or_estimates():
    import torch

    from hpcbench.measure.energy import TimedEnergy
    from hpcbench.measure.timing import TimingPolicy, observing_timed_spans, time_fn

    timed = TimedEnergy(_FakeMeter(watts=300.0, interval_s=0.25))
    inside, outside = [], []

    def fn():
        (inside if timed.meter.active else outside).append(1)

    with observing_timed_spans(timed.span):
        t = time_fn(fn, torch.device("cpu"), TimingPolicy(warmup=4, min_reps=5, max_reps=5))
        time_fn(fn, torch.device("cpu"), TimingPolicy(warmup=1, min_reps=3, max_reps=3))
    assert len(inside) == 5 + 3 and len(outside) == 4 + 1 and t.stats.n == 5
    r = timed.reading()
    assert r.energy_J == pytest.approx(2 * 300 * 0.25) and r.interval_s == pytest.approx(0.5)  # two timed loops
    time_fn(fn, torch.device("cpu"), TimingPolicy(warmup=1, min_reps=2, max_reps=2))  # not observed: not metered
    assert len(timed.readings) == 2
    timed.begin_point()
    assert timed.reading() is None


def test_a_rows_energy_is_its_timed_work_and_the_whole_point_is_kept_beside_it(tmp_path, monkeypatch):
    from hpcbench.measure import energy
    from hpcbench.core.testing import run_in_process

    meters = iter([_FakeMeter(watts=50.0, interval_s=2.0),  # the runner's first meter: the whole point
                   _FakeMeter(watts=400.0, interval_s=0.1)])  # its second: the timed loops
    monkeypatch.setattr(energy, "open_meter", lambda kind, index=0, nvml=None: next(meters))
    rows = run_in_process(["gemm"], tmp_path, ["gemm.dtypes=[bf16]", "gemm.backends=[torch]"])["gemm"]
    timed = [r for r in rows if r["status"] == "ok"]
    assert timed
    for r in timed:
        loops = round(r["energy_interval_s"] / 0.1)
        assert loops >= 1 and r["energy_J"] == pytest.approx(400.0 * 0.1 * loops)
        assert r["avg_W"] == pytest.approx(400.0)  # the timed work's power, not diluted by the point's 50 W
        assert r["J_per_TFLOP"] == pytest.approx(400.0 / r["tflops"])
        assert r["energy_point_J"] == pytest.approx(100.0) and r["energy_point_interval_s"] == pytest.approx(2.0)
        assert r["energy_reason"] is None
