"""Dense datasheet peaks, keyed by the device name torch reports.

Only dense figures: the FP8 numbers of ~3958 TFLOP/s on Hopper datasheets include 2:4 sparsity
and are never used. A device that is not in the table gets no peak (blank), never a guess.
"""

from __future__ import annotations

import re

# (pattern on torch.cuda.get_device_name(), excluding pattern, {dtype: dense TFLOP/s})
# Variants with a different power envelope (PCIe, NVL) are excluded rather than guessed.
_PEAKS: list[tuple[str, str | None, dict[str, float]]] = [
    (r"H100", r"PCIe|NVL", {"bf16": 989.4, "fp8": 1978.9}),
    (r"H200", r"NVL", {"bf16": 989.4, "fp8": 1978.9}),
    (r"H800", r"PCIe", {"bf16": 989.4, "fp8": 1978.9}),
    (r"A100", None, {"bf16": 312.0}),
    (r"L40S", None, {"bf16": 362.05, "fp8": 733.0}),
]

FP8_MIN_CAPABILITY = (8, 9)


def peak_tflops(device_name: str | None, dtype: str) -> float | None:
    """Dense peak TFLOP/s of `dtype` ("bf16" or "fp8") on the named device, or None if unknown."""
    if not device_name:
        return None
    for pattern, exclude, peaks in _PEAKS:
        if re.search(pattern, device_name) and not (exclude and re.search(exclude, device_name)):
            return peaks.get(dtype)
    return None


def supports_fp8(capability: tuple[int, int] | None) -> bool:
    """FP8 tensor cores need compute capability 8.9 (Ada) or newer."""
    return capability is not None and tuple(capability) >= FP8_MIN_CAPABILITY
