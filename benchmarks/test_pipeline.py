"""Pipeline schedules: step makespan of each schedule, gradients checked against the non-pipelined reference."""

import pytest

from hpcbench.testing import record_samples, smoke_points

FAMILY = "pipeline"


@pytest.mark.parametrize("point", smoke_points(FAMILY))
def test_pipeline(point, smoke, benchmark):
    record_samples(benchmark, smoke.row(FAMILY, point))
