"""Every registered family's smoke points as pytest-benchmark cases: the case reports the point's
own raw samples (see hpcbench.core.testing). A family registered later shows up here by itself."""

import pytest

from hpcbench.api import registry
from hpcbench.core.testing import record_samples, smoke_points

CASES = [(family, point) for family in registry.names() for point in smoke_points(family)]


@pytest.mark.smoke
@pytest.mark.subprocess
@pytest.mark.world
@pytest.mark.parametrize(("family", "point"), CASES, ids=[f"{f}:{p}" for f, p in CASES])
def test_point(family, point, smoke, benchmark):
    record_samples(benchmark, smoke.row(family, point))
