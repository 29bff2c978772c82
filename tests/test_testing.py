"""hpcbench.core.testing: hpcbench's samples reach pytest-benchmark unchanged, and every family has cases."""

import json
import statistics
from pathlib import Path

import pytest

from hpcbench.api import registry
from hpcbench.core.testing import SampleClock, point_id, smoke_points

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]

CASE_FILE = '''
import pytest
from hpcbench.core.testing import record_samples

OK = {"status": "ok", "samples_s": [3e-3, 1e-3, 2e-3, 5e-3], "timing_method": "cuda_event",
      "M": 64, "N": 32, "K": 16, "kernel": "triton_bf16", "device": "H200", "n_samples": 4, "median_s": 2.5e-3,
      "unrelated": "not reported"}

def test_ok(benchmark):
    assert record_samples(benchmark, OK, params=("M", "N", "K", "kernel")) is OK

def test_failed(benchmark):
    record_samples(benchmark, {"status": "failed", "reason": "calc_diff 0.3 above tolerance"})

def test_skipped(benchmark):
    record_samples(benchmark, {"status": "skipped", "reason": "FP8 needs compute capability >= 8.9"})

@pytest.mark.parametrize("samples", [[], [1e-3, 0.0], None])
def test_no_samples(benchmark, samples):
    record_samples(benchmark, {"status": "ok", "samples_s": samples})
'''


def test_sample_clock_times_each_round_as_its_sample():
    clock = SampleClock([0.25, 1e-9, 3.0], "perf_counter")
    got = []
    for _ in range(3):  # pytest-benchmark's round: setup, timer, target, timer
        clock.rewind()
        start = clock()
        clock.advance()
        got.append(clock() - start)
    assert got == [0.25, 1e-9, 3.0] and clock.__name__ == "hpcbench:perf_counter"
    clock.rewind()
    clock.advance()  # a replay past the samples (cProfile's extra call) measures nothing
    assert clock() == 0.0


@pytest.mark.subprocess
def test_record_samples_reports_the_rows_samples_as_rounds(pytester):
    pytester.makepyfile(test_cases=CASE_FILE)
    out = pytester.runpytest("--benchmark-enable", "--benchmark-json=out.json", "-p", "no:cacheprovider")
    out.assert_outcomes(passed=1, failed=4, skipped=1)
    out.stdout.fnmatch_lines(["*calc_diff 0.3 above tolerance*", "*needs positive raw samples*"])
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    samples = [3e-3, 1e-3, 2e-3, 5e-3]
    stats = bench["stats"]
    assert stats["data"] == samples and stats["rounds"] == 4 and stats["iterations"] == 1
    assert stats["min"] == 1e-3 and stats["max"] == 5e-3 and stats["median"] == statistics.median(samples) == 2.5e-3
    assert stats["mean"] == pytest.approx(statistics.mean(samples))
    assert bench["options"]["timer"] == "hpcbench:cuda_event"
    assert bench["extra_info"] == {"M": 64, "N": 32, "K": 16, "kernel": "triton_bf16", "status": "ok",
                                   "timing_method": "cuda_event", "device": "H200", "n_samples": 4, "median_s": 2.5e-3}


def test_with_benchmarks_disabled_the_row_is_still_checked(pytester):
    pytester.makepyfile(test_cases=CASE_FILE)
    out = pytester.runpytest("--benchmark-disable", "-p", "no:cacheprovider")
    out.assert_outcomes(passed=1, failed=4, skipped=1)


def test_every_family_has_smoke_cases_with_unique_ids():
    assert set(registry.names()) >= {"gemm", "collectives", "overlap", "ddp_overlap", "pipeline", "moe_alltoall"}
    for family in registry.names():
        ids = smoke_points(family)
        assert ids and len(set(ids)) == len(ids), family
    gemm_row = {"kernel": "triton_fp8_block", "M": 48.0, "N": 40, "K": 160}  # 48.0: as pandas may give it back
    assert point_id("gemm", gemm_row) == "triton_fp8_block-48x40x160"
    assert point_id("collectives", {"collective": "all_gather", "placement": "in_place", "size_bytes": 4096}) == \
        "all_gather-in_place-4KiB"
    assert point_id("ddp_overlap", {"mode": "ddp", "bucket_cap_mb": 25.0}) == "ddp-25MB"
    assert point_id("ddp_overlap", {"mode": "no_comm", "bucket_cap_mb": None}) == "no_comm"
