"""Energy, power and clocks of each measured point, from NVML (NVIDIA GPUs; optional extra `nvml`).

The runner reads the GPU's total energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ since the
driver loaded) around each point, and around each of its timed loops (`TimedEnergy`, through
`hpcbench.measure.timing.observing_timed_spans`), and records, per row:
  energy_J         the energy the point's GPUs drew during its timed repetitions (every rank's GPU
                   summed on a multi-rank run): compiles, autotuning, float64 checks and warm-up
                   are left out, so the power and energy per TFLOP are those of the timed work.
                   The L2 flush before each repetition is inside the timed loop, so it is counted:
                   for kernels much shorter than a flush (~35 us on an H100) the power is mostly
                   the flush's
  energy_interval_s  the timed repetitions' time (their loops added up)
  avg_W            energy_J / energy_interval_s (a multi-rank run: all its GPUs together)
  J_per_TFLOP      avg_W / the row's TFLOP/s (`tflops`), when it has one: the energy of a TFLOP
  energy_point_J, energy_point_interval_s  the whole point, set-up and checks included (what the
                   point cost, not what its timed work draws)
  sm_clock_min_MHz the lowest SM clock sampled during the point (every rank's GPU)
  throttle_reasons the clock-throttle reasons seen during the point, decoded (gpu_idle included: a GPU
                   idle between launches also drops its clock)
  energy_reason    why the columns are blank (no NVML, no counter on this GPU, an interval the
                   counter did not advance in), else None
The SM clock and the throttle reasons are sampled by a light background thread every 50 ms, and once
at each end: throttling happens under load (power capping, heat) and the clocks recover within
milliseconds once the GPU idles, so reading them only before and after the point would miss it.
An NVML query costs tens of microseconds of host time; 20 a second cost nothing a point notices.
Rows yielded together (a point measured once, stored as several rows) give the first row the
interval; the others get a blank with the reason.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

# NVML's clocks-throttle (since driver 535: "clocks event") reason bits, as nvml.h defines them
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
NVML_CLOCK_SM = 1  # nvmlClockType_t: NVML_CLOCK_GRAPHICS 0, SM 1, MEM 2
SAMPLE_EVERY_S = 0.05
COLUMNS = ("energy_J", "energy_interval_s", "avg_W", "J_per_TFLOP", "energy_point_J", "energy_point_interval_s",
           "sm_clock_min_MHz", "throttle_reasons", "energy_reason")
NO_TIMED_SPAN = "no timed repetitions were metered in this row (energy_point_J: the whole point)"


def decode_throttle(mask: int) -> list[str]:
    """Names of the reason bits set in `mask`, lowest bit first; unknown bits as hex."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    return names + ([f"0x{unknown:x}"] if unknown else [])


@dataclass(frozen=True)
class Reading:
    """One rank's GPU over one point."""

    energy_J: float | None
    interval_s: float
    sm_clock_min_MHz: float | None
    throttle_mask: int
    reason: str | None = None


class EnergyMeter:
    """Energy counter and clock sampler of one GPU (`nvml`: the pynvml module, or a test's fake)."""

    def __init__(self, nvml, handle, sample_s: float = SAMPLE_EVERY_S):
        self.nvml, self.handle, self.sample_s = nvml, handle, sample_s
        self.available, self.reason = True, None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._e0 = self._energy_mj()
        self._min_clock, self._mask = None, 0
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hpcbench-nvml", daemon=True)
        self._thread.start()

    def stop(self) -> Reading:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()
        interval = time.monotonic() - self._t0
        e1 = self._energy_mj()
        if self._e0 is None or e1 is None:
            energy, reason = None, "NVML: this GPU has no total energy counter"
        elif e1 <= self._e0:
            energy, reason = None, f"NVML's energy counter did not advance in {interval * 1e3:.3g} ms"
        else:
            energy, reason = (e1 - self._e0) / 1e3, None
        return Reading(energy, interval, self._min_clock, self._mask, reason)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.sample_s):
            self._sample()

    def _energy_mj(self) -> float | None:
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported (pre-Volta) and kin
            return None

    def _sample(self) -> None:
        try:
            clock = float(self.nvml.nvmlDeviceGetClockInfo(self.handle, getattr(self.nvml, "NVML_CLOCK_SM",
                                                                                NVML_CLOCK_SM)))
            self._min_clock = clock if self._min_clock is None else min(self._min_clock, clock)
        except Exception:  # noqa: BLE001 - a query this GPU does not support leaves the column blank
            pass
        reasons = (getattr(self.nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or getattr(self.nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
        try:
            self._mask |= int(reasons(self.handle)) if reasons else 0
        except Exception:  # noqa: BLE001
            pass


class Absent:
    """The meter where NVML is not there: every reading blank, with the reason."""

    available = False

    def __init__(self, reason: str):
        self.reason = f"NVML not available: {reason}"

    def start(self) -> None:
        self._t0 = time.monotonic()

    def stop(self) -> Reading:
        return Reading(None, time.monotonic() - self._t0, None, 0, self.reason)

    def close(self) -> None:
        pass


def open_meter(device_kind: str, device_index: int = 0, nvml=None):
    """An EnergyMeter on this process's GPU, or `Absent` saying why not."""
    if device_kind != "cuda":
        return Absent(f"the device is {device_kind}, not an NVIDIA GPU")
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return Absent("pynvml is not installed (pip install 'hpcbench-ml[nvml]')")
    try:
        nvml.nvmlInit()
        return EnergyMeter(nvml, _handle(nvml, device_index))
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return Absent(f"{type(exc).__name__}: {exc}".strip())


def _handle(nvml, index: int):
    """NVML numbers GPUs physically, CUDA after CUDA_VISIBLE_DEVICES: match them by UUID."""
    import torch

    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        text = f"GPU-{uuid}"
        try:
            return nvml.nvmlDeviceGetHandleByUUID(text)
        except Exception:  # noqa: BLE001 - older bindings want bytes
            return nvml.nvmlDeviceGetHandleByUUID(text.encode())
    return nvml.nvmlDeviceGetHandleByIndex(index)


def combine(readings: list[Reading]) -> Reading:
    """Every rank's reading of one point as one: energy summed over GPUs, the lowest clock, every
    throttle reason. Blank energy when any rank's is (a partial sum would understate it)."""
    first = readings[0]
    energies = [r.energy_J for r in readings]
    clocks = [r.sm_clock_min_MHz for r in readings if r.sm_clock_min_MHz is not None]
    mask = 0
    for r in readings:
        mask |= r.throttle_mask
    reason = next((r.reason for r in readings if r.reason), None)
    energy = None if any(e is None for e in energies) else sum(energies)
    return Reading(energy, first.interval_s, min(clocks) if clocks else None, mask,
                   reason if energy is None else None)


class TimedEnergy:
    """The energy of a point's timed repetitions: a meter of its own (the runner's other meter
    spans the whole point), started and stopped around each timed loop, the readings added up."""

    def __init__(self, meter):
        self.meter = meter
        self.readings: list[Reading] = []

    def begin_point(self) -> None:
        self.readings = []

    @contextlib.contextmanager
    def span(self):
        self.meter.start()
        try:
            yield
        finally:
            self.readings.append(self.meter.stop())

    def reading(self) -> Reading | None:
        """The point's timed loops as one reading (None where it had none): energies and times
        added, the lowest clock, every reason; blank energy if any loop's is (never a partial sum)."""
        if not self.readings:
            return None
        energies = [r.energy_J for r in self.readings]
        clocks = [r.sm_clock_min_MHz for r in self.readings if r.sm_clock_min_MHz is not None]
        mask = 0
        for r in self.readings:
            mask |= r.throttle_mask
        blank = next((r.reason for r in self.readings if r.energy_J is None), None)
        return Reading(None if blank else sum(energies), sum(r.interval_s for r in self.readings),
                       min(clocks) if clocks else None, mask, blank)

    def close(self) -> None:
        self.meter.close()


def row_energy(timed: Reading | None, point: Reading, row: dict) -> dict:
    """The row's energy columns: the timed repetitions' reading (where there were any) and the
    whole point's energy beside it."""
    cols = energy_columns(timed, row) if timed is not None else {
        **energy_columns(Reading(None, point.interval_s, point.sm_clock_min_MHz, point.throttle_mask,
                                 point.reason or NO_TIMED_SPAN), row), "energy_interval_s": None}
    return {**cols, "energy_point_J": point.energy_J, "energy_point_interval_s": point.interval_s}


def energy_columns(reading: Reading, row: dict) -> dict:
    """The energy columns of one reading (pure)."""
    e, t = reading.energy_J, reading.interval_s
    watts = e / t if e is not None and t > 0 else None
    tflops = row.get("tflops")
    per_tflop = watts / tflops if watts is not None and isinstance(tflops, (int, float)) and tflops > 0 else None
    return {"energy_J": e, "energy_interval_s": t, "avg_W": watts, "J_per_TFLOP": per_tflop,
            "sm_clock_min_MHz": reading.sm_clock_min_MHz,
            "throttle_reasons": decode_throttle(reading.throttle_mask) if reading.sm_clock_min_MHz is not None
            or reading.throttle_mask else None,
            "energy_reason": reading.reason}


def to_floats(r: Reading) -> list[float]:
    """A reading as four floats (NaN for blanks), for gathering over the ranks."""
    nan = float("nan")
    return [nan if r.energy_J is None else r.energy_J, r.interval_s,
            nan if r.sm_clock_min_MHz is None else r.sm_clock_min_MHz, float(r.throttle_mask)]


def from_floats(values, reason: str | None) -> Reading:
    import math

    e, t, clock, mask = (float(v) for v in values)
    return Reading(None if math.isnan(e) else e, t, None if math.isnan(clock) else clock, int(mask),
                   reason if math.isnan(e) else None)
