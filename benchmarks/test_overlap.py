"""Compute-communication overlap: the overlapped step (T_ovl, slowest rank), with the collective's result checked."""

import pytest

from hpcbench.testing import record_samples, smoke_points

FAMILY = "overlap"


@pytest.mark.parametrize("point", smoke_points(FAMILY))
def test_overlap(point, smoke, benchmark):
    record_samples(benchmark, smoke.row(FAMILY, point))
