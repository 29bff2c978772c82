"""The executor's clocks (host clock on CPU, CUDA events on GPU) and synthetic fixed-duration stages."""

from __future__ import annotations

import time

import torch


class HostClock:
    def __init__(self):
        self.origin = self.host_origin = time.perf_counter()

    def mark(self):
        return time.perf_counter()

    def seconds(self, mark) -> float:
        return mark - self.origin


class CudaClock:
    """Events recorded on the current stream; resolved after the step (one sync, not per action)."""

    def __init__(self):
        self.origin = torch.cuda.Event(enable_timing=True)
        self.origin.record()
        self.host_origin = time.perf_counter()  # the step starts after a device sync: close to the event

    def mark(self):
        ev = torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def seconds(self, mark) -> float:
        return self.origin.elapsed_time(mark) / 1e3


class Synthetic:
    """Fixed per-action durations: the stage's real (tiny) compute is padded to them.

    On CPU the pad is a sleep to the target (cores stay free for the other ranks); on CUDA it is a
    calibrated `torch.cuda._sleep` spin of the full duration, added after the stage's kernels."""

    def __init__(self, durations_s: dict[str, float], device: torch.device):
        self.durations = durations_s
        self.cuda = device.type == "cuda"
        self.overruns = 0
        self._cycles_per_s = _calibrate_spin() if self.cuda else 0.0

    def pad(self, kind: str, started: float) -> None:
        target = self.durations[kind]
        if self.cuda:
            torch.cuda._sleep(int(target * self._cycles_per_s))
            return
        left = target - (time.perf_counter() - started)
        if left > 0:
            time.sleep(left)
        else:
            self.overruns += 1


def _calibrate_spin() -> float:
    torch.cuda._sleep(1_000_000)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / (start.elapsed_time(end) / 1e3)
