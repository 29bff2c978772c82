"""Energy, power and clock columns, with a fake NVML (the real one is checked on a GPU)."""

import threading
import time

import pytest

from hpcbench.energy import (
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
    assert set(cols) == set(COLUMNS)
    assert energy_columns(r, {})["J_per_TFLOP"] is None  # no throughput: no energy per TFLOP


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


@pytest.mark.slow
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
