"""FP8 vs BF16 GEMM: every kernel at the smoke shape, verified against float64, then timed."""

import pytest

from hpcbench.testing import record_samples, smoke_points

FAMILY = "gemm"


@pytest.mark.parametrize("point", smoke_points(FAMILY))
def test_gemm(point, smoke, benchmark):
    record_samples(benchmark, smoke.row(FAMILY, point))
