import pytest

from hpcbench.models.hardware import peak_tflops, supports_fp8


@pytest.mark.parametrize("name,dtype,peak", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H200", "fp8", 1978.9),
    ("NVIDIA H800", "bf16", 989.4),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
    ("NVIDIA L40S", "fp8", 733.0),
])
def test_dense_peaks(name, dtype, peak):
    assert peak_tflops(name, dtype) == peak


@pytest.mark.parametrize("name,dtype", [
    ("NVIDIA A100-SXM4-80GB", "fp8"),  # no FP8 tensor cores
    ("NVIDIA H100 PCIe", "bf16"),  # different power envelope: not guessed
    ("NVIDIA H200 NVL", "fp8"),
    ("NVIDIA GeForce RTX 4090", "bf16"),
    ("Intel(R) Xeon(R) CPU", "bf16"),
    (None, "bf16"),
])
def test_unknown_devices_have_no_peak(name, dtype):
    assert peak_tflops(name, dtype) is None


def test_fp8_needs_sm89():
    assert supports_fp8((9, 0)) and supports_fp8((8, 9))
    assert not supports_fp8((8, 0)) and not supports_fp8(None)


@pytest.mark.parametrize("name,bandwidth", [
    ("NVIDIA H100 80GB HBM3", 3350.0),
    ("NVIDIA H200", 4800.0),
    ("NVIDIA H800", 3350.0),
    ("NVIDIA A100-SXM4-80GB", 2039.0),
    ("NVIDIA A100-SXM4-40GB", 1555.0),
    ("NVIDIA L40S", 864.0),
])
def test_peak_bandwidth(name, bandwidth):
    from hpcbench.models.hardware import peak_bandwidth_GBps

    assert peak_bandwidth_GBps(name) == bandwidth


@pytest.mark.parametrize("name", ["NVIDIA A100 80GB PCIe", "NVIDIA A100", "NVIDIA H100 PCIe", "NVIDIA H200 NVL",
                                  "NVIDIA GeForce RTX 4090", "Intel(R) Xeon(R) CPU", None])
def test_unknown_bandwidth_is_none(name):
    from hpcbench.models.hardware import peak_bandwidth_GBps

    assert peak_bandwidth_GBps(name) is None
