"""DDP bucketed backward: step time without communication, with one all-reduce after backward, and per bucket size."""

import pytest

from hpcbench.testing import record_samples, smoke_points

FAMILY = "ddp_overlap"


@pytest.mark.parametrize("point", smoke_points(FAMILY))
def test_ddp_overlap(point, smoke, benchmark):
    record_samples(benchmark, smoke.row(FAMILY, point))
