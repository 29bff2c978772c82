"""The MoE all-to-all speed columns from known per-rank times and bytes, at world sizes 2, 3 and 4,
with unequal per-rank bytes so that the busiest rank moves more than the mean.

Definitions (the module docstring and README's moe_alltoall table; nccl-tests' alltoallv for busiest):
  t              the median over iterations of the slowest rank's time
  algbw_GBps     mean over ranks of the wire bytes each rank sends / t
  busiest_GBps   max over ranks of max(wire bytes sent, received) / t   (nccl-tests alltoallv)
  logical_GBps   mean over ranks of the logical bytes / t               (DeepEP's convention)
GB is decimal (1e9 B), as in nccl-tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from hpcbench.benchmarks.moe_alltoall.metrics import speed
from hpcbench.measure.rank_timing import rank_times

MS = 1e-3


def _times(n: int):
    """n ranks x 3 iterations. Per iteration the rank mean is 2, 2, 3 ms (median 2 ms) and the
    slowest rank takes 3, 2, 3 ms (median 3 ms): bandwidths divide by 3 ms, time_us is 2000."""
    tables = {
        2: [[1, 2, 3], [3, 2, 3]],  # means 2, 2, 3
        3: [[1, 2, 3], [2, 2, 3], [3, 2, 3]],  # means 2, 2, 3
        4: [[1, 2, 3], [2, 2, 3], [3, 2, 3], [2, 2, 3]],  # means 2, 2, 3
    }
    return rank_times(np.array(tables[n], dtype=float) * MS)


# per-rank wire bytes; every exchange conserves bytes (sum sent == sum received)
CASES = {
    # world 2: sent 6 + 3 = 9 MB, received 1.5 + 7.5 = 9 MB
    #   algbw   mean sent 4.5e6 B / 3e-3 s = 1.5e9 B/s = 1.5 GB/s
    #   busiest rank 1: max(3e6, 7.5e6) = 7.5e6 B (rank 0: max(6e6, 1.5e6) = 6e6) -> 7.5e6 / 3e-3 = 2.5 GB/s
    2: dict(sent=[6e6, 3e6], recv=[1.5e6, 7.5e6], algbw=1.5, busiest=2.5),
    # world 3: sent 3 + 9 + 6 = 18 MB, received 12 + 3 + 3 = 18 MB
    #   algbw   mean sent 6e6 / 3e-3 = 2.0 GB/s
    #   busiest rank 0 receives 12e6 (the largest sender sends only 9e6) -> 12e6 / 3e-3 = 4.0 GB/s
    3: dict(sent=[3e6, 9e6, 6e6], recv=[12e6, 3e6, 3e6], algbw=2.0, busiest=4.0),
    # world 4: sent 4 + 2 + 8 + 10 = 24 MB, received 6 + 15 + 2 + 1 = 24 MB
    #   algbw   mean sent 6e6 / 3e-3 = 2.0 GB/s
    #   busiest rank 1: max(2e6, 15e6) = 15e6 -> 5.0 GB/s
    4: dict(sent=[4e6, 2e6, 8e6, 10e6], recv=[6e6, 15e6, 2e6, 1e6], algbw=2.0, busiest=5.0),
}


@pytest.mark.parametrize("n", [2, 3, 4])
def test_algbw_and_busiest_from_known_bytes_and_times(n):
    case = CASES[n]
    out = speed(_times(n), {"bytes_sent_per_rank": case["sent"], "bytes_recv_per_rank": case["recv"]},
                "perf_counter")
    assert out["algbw_GBps"] == pytest.approx(case["algbw"], rel=1e-12)
    assert out["busiest_GBps"] == pytest.approx(case["busiest"], rel=1e-12)
    assert out["busiest_GBps"] > out["algbw_GBps"]
    assert "logical_GBps" not in out  # no logical bytes given
    # the time column is nccl-tests' rank average (median 2 ms); the bandwidths use the slowest rank
    assert out["time_us"] == pytest.approx(2000.0, rel=1e-12)
    assert out["median_s"] == pytest.approx(3 * MS, rel=1e-12)
    assert out["samples_s"] == pytest.approx([3 * MS, 2 * MS, 3 * MS])
    assert out["rank_mean_samples_s"] == pytest.approx([2 * MS, 2 * MS, 3 * MS])
    assert out["timing_method"] == "perf_counter"


def test_logical_bandwidth_is_the_mean_of_the_logical_bytes():
    # world 4, logical bytes 3 + 6 + 9 + 12 MB: mean 7.5e6 / 3e-3 s = 2.5 GB/s
    case = CASES[4]
    out = speed(_times(4), {"bytes_sent_per_rank": case["sent"], "bytes_recv_per_rank": case["recv"],
                            "logical_bytes_per_rank": [3e6, 6e6, 9e6, 12e6]}, "cuda_event")
    assert out["logical_GBps"] == pytest.approx(2.5, rel=1e-12)
    assert out["algbw_GBps"] == pytest.approx(2.0, rel=1e-12)
    assert out["busiest_GBps"] == pytest.approx(5.0, rel=1e-12)


def test_algbw_counts_bytes_sent_not_received():
    # not a closed exchange (sum sent 4e6 != received 16e6), only to tell the two apart:
    # algbw = mean sent 2e6 / 3e-3 = 0.666.. GB/s; busiest = max(1e6, 10e6, 3e6, 6e6) = 10e6 -> 3.333.. GB/s
    out = speed(_times(2), {"bytes_sent_per_rank": [1e6, 3e6], "bytes_recv_per_rank": [10e6, 6e6]}, "perf_counter")
    assert out["algbw_GBps"] == pytest.approx(2e6 / 3e-3 / 1e9, rel=1e-12)
    assert out["busiest_GBps"] == pytest.approx(10e6 / 3e-3 / 1e9, rel=1e-12)


def test_a_local_phase_has_no_bandwidth():
    out = speed(_times(3), None, "perf_counter")
    assert out["time_us"] == pytest.approx(2000.0, rel=1e-12)
    assert not {"algbw_GBps", "busiest_GBps", "logical_GBps"} & set(out)


def test_the_slowest_rank_is_named():
    # per-rank ms: rank 0 [1, 1, 1], rank 1 [2, 5, 2], rank 2 [3, 2, 4]: the slowest per iteration is
    # rank 2, 1, 2 (3, 5, 4 ms; median 4 ms), so rank 2 in 2 of 3 iterations; 6 MB sent per rank on
    # average over 4 ms = 1.5 GB/s
    times = rank_times(np.array([[1, 1, 1], [2, 5, 2], [3, 2, 4]], dtype=float) * MS)
    out = speed(times, {"bytes_sent_per_rank": [6e6] * 3, "bytes_recv_per_rank": [6e6] * 3}, "perf_counter")
    assert out["slowest_rank"] == 2 and out["slowest_rank_share"] == pytest.approx(2 / 3)
    assert out["algbw_GBps"] == pytest.approx(1.5, rel=1e-12) and out["busiest_GBps"] == pytest.approx(1.5)
