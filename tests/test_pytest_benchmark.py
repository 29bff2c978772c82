"""hpcbench kernels under pytest-benchmark: a verified result, then the timing.

Run with `pytest tests/test_pytest_benchmark.py --benchmark-enable` to collect timings; the
default test run (benchmarks disabled) executes each once as a smoke test.
"""

import torch

from hpcbench.accuracy import calc_diff
from hpcbench.kernels.matmul import matmul


def test_triton_bf16_matmul_benchmark(benchmark):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 128, generator=g).bfloat16()
    b = torch.randn(64, 128, generator=g).bfloat16()
    c = benchmark(matmul, a, b)
    assert calc_diff(c, a.double() @ b.double().T) < 1e-5  # verified before the number counts
