"""Collectives on hpcbench's local ranks: every collective, placement and size, checked exactly, then
timed (the slowest rank per iteration)."""

import pytest

from hpcbench.testing import record_samples, smoke_points

FAMILY = "collectives"


@pytest.mark.parametrize("point", smoke_points(FAMILY))
def test_collectives(point, smoke, benchmark):
    record_samples(benchmark, smoke.row(FAMILY, point))
