"""Dense datasheet peaks and memory bandwidths, keyed by the device name torch reports.

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

# (pattern, excluding pattern, peak DRAM bandwidth in GB/s, decimal), first match wins. Sources:
#   H100 SXM5 3.35 TB/s HBM3 and H800 SXM 3.35 TB/s: NVIDIA H100 datasheet (H800: same memory
#     system, NVLink cut; notes in the project's GEMM reference, glennklockwood.com/garden/processors/h100)
#   H200 SXM 4.8 TB/s HBM3e: NVIDIA H200 datasheet (also stas00/ml-engineering compute/accelerator/README.md)
#   A100 SXM4 80GB 2,039 GB/s, A100 40GB 1,555 GB/s: NVIDIA A100 datasheet (80GB PCIe, 1,935 GB/s, is
#     not listed: its name does not say SXM; an A100 whose name gives no memory size is left blank)
#   L40S 864 GB/s GDDR6: NVIDIA L40S datasheet
# PCIe and NVL variants run other memory clocks and are excluded, as for the FLOP/s peaks.
_BANDWIDTH: list[tuple[str, str | None, float]] = [
    (r"H100", r"PCIe|NVL", 3350.0),
    (r"H200", r"NVL", 4800.0),
    (r"H800", r"PCIe", 3350.0),
    (r"A100.*SXM.*80\s?GB", None, 2039.0),
    (r"A100.*40\s?GB", None, 1555.0),
    (r"L40S", None, 864.0),
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


def peak_bandwidth_GBps(device_name: str | None) -> float | None:
    """Peak DRAM bandwidth (GB/s, decimal) of the named device, or None if unknown."""
    if not device_name:
        return None
    for pattern, exclude, bandwidth in _BANDWIDTH:
        if re.search(pattern, device_name) and not (exclude and re.search(exclude, device_name)):
            return bandwidth
    return None


def supports_fp8(capability: tuple[int, int] | None) -> bool:
    """FP8 tensor cores need compute capability 8.9 (Ada) or newer."""
    return capability is not None and tuple(capability) >= FP8_MIN_CAPABILITY
