"""Collectives' bus-bandwidth factors at world sizes where (n-1)/n, 1/n and 2(n-1)/n all differ,
the algbw/busbw a measured row reports for known bytes and times, and a wrong answer that must
end as a failed row, never as a speed.

Expected factors are nccl-tests' published definitions (doc/PERFORMANCE.md and src/*.cu `*GetBw`,
summarised in shared/reference/comm.md 1.1 and README "Collectives"), written out per world size
as plain numbers, not computed from a formula:

  all_reduce          2(n-1)/n   (n-1 additions and n assignments per element over n links)
  all_gather          (n-1)/n
  reduce_scatter      (n-1)/n
  all_to_all          (n-1)/n
  broadcast           1
  staged_all_reduce   hpcbench's HFReduce-like all-reduce (device -> host, gloo all-reduce on the
                      host, host -> device): it is an all-reduce of the same per-rank buffer, so
                      its busbw must be comparable with all_reduce's: 2(n-1)/n.
nccl-tests' reduce (factor 1) and send/recv (factor 1) are not in hpcbench's table: checked below
that the table holds exactly the six collectives above, so a new entry must come with its factor here.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.distributed as dist

from hpcbench.benchmarks import collectives as fam
from hpcbench.benchmarks._collective_ops import COLLECTIVES, Point, Prepared
from hpcbench.measure.rank_timing import rank_times
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK

# n:              1     2     3          4      8
EXPECTED = {
    # 2(n-1)/n: 0, 2*1/2, 2*2/3, 2*3/4, 2*7/8
    "all_reduce": {1: 0.0, 2: 1.0, 3: 4 / 3, 4: 1.5, 8: 1.75},
    "staged_all_reduce": {1: 0.0, 2: 1.0, 3: 4 / 3, 4: 1.5, 8: 1.75},
    # (n-1)/n: 0, 1/2, 2/3, 3/4, 7/8
    "all_gather": {1: 0.0, 2: 0.5, 3: 2 / 3, 4: 0.75, 8: 0.875},
    "reduce_scatter": {1: 0.0, 2: 0.5, 3: 2 / 3, 4: 0.75, 8: 0.875},
    "all_to_all": {1: 0.0, 2: 0.5, 3: 2 / 3, 4: 0.75, 8: 0.875},
    # the root's buffer crosses each link once, whatever n
    "broadcast": {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 8: 1.0},
}


def test_the_table_holds_exactly_the_collectives_with_published_factors():
    assert set(COLLECTIVES) == set(EXPECTED)
    for name, coll in COLLECTIVES.items():
        assert coll.name == name


@pytest.mark.parametrize("name,n", [(name, n) for name in EXPECTED for n in (1, 2, 3, 4, 8)])
def test_busbw_factor_is_nccl_tests_at_every_world_size(name, n):
    assert COLLECTIVES[name].busbw_factor(n) == pytest.approx(EXPECTED[name][n], rel=1e-12, abs=1e-12)


def test_ring_steps_are_the_ring_algorithm_latency_terms():
    # ring all-reduce: reduce-scatter then all-gather, n-1 steps each; the others one ring pass
    for n in (1, 2, 3, 4, 8):
        assert COLLECTIVES["all_reduce"].ring_steps(n) == 2 * (n - 1)
        assert COLLECTIVES["staged_all_reduce"].ring_steps(n) == 2 * (n - 1)
        for name in ("all_gather", "reduce_scatter", "all_to_all", "broadcast"):
            assert COLLECTIVES[name].ring_steps(n) == n - 1


# ---- a row's algbw and busbw from known bytes and times -----------------------------------------

def _times(n: int):
    """A [n ranks, 3 iterations] table whose rank mean per iteration is 2, 2, 3 ms (median 2 ms)
    while the slowest rank's per-iteration time is 3, 2, 3 ms (median 3 ms): nccl-tests' time is the
    rank average, so any row built on the slowest rank's time is off by 1.5x."""
    if n == 3:
        table = [[1e-3, 2e-3, 3e-3], [2e-3, 2e-3, 3e-3], [3e-3, 2e-3, 3e-3]]  # means 2, 2, 3 ms
    else:
        assert n == 4
        table = [[1e-3, 2e-3, 3e-3], [2e-3, 2e-3, 3e-3], [3e-3, 2e-3, 3e-3], [2e-3, 2e-3, 3e-3]]  # means 2, 2, 3
    return rank_times(np.array(table))


_CPU_CTX = types.SimpleNamespace(device=types.SimpleNamespace(kind="cpu"))

# size 6,000,000 B in 2 ms (rank-averaged median): algbw = 6e6 / 2e-3 / 1e9 = 3.0 GB/s (decimal GB)
# busbw = 3.0 x factor:
#   world 3: all_reduce 3 x 4/3 = 4.0; all_gather/reduce_scatter/all_to_all 3 x 2/3 = 2.0; broadcast 3.0
#   world 4: all_reduce 3 x 3/2 = 4.5; all_gather/reduce_scatter/all_to_all 3 x 3/4 = 2.25; broadcast 3.0
ROW_CASES = [
    (3, "all_reduce", 4.0), (3, "staged_all_reduce", 4.0), (3, "all_gather", 2.0), (3, "reduce_scatter", 2.0),
    (3, "all_to_all", 2.0), (3, "broadcast", 3.0),
    (4, "all_reduce", 4.5), (4, "staged_all_reduce", 4.5), (4, "all_gather", 2.25), (4, "reduce_scatter", 2.25),
    (4, "all_to_all", 2.25), (4, "broadcast", 3.0),
]


@pytest.mark.parametrize("n,name,busbw", ROW_CASES)
def test_row_bandwidths_for_known_bytes_and_time(n, name, busbw):
    point = Point(name, 6_000_000, "float32", "sum", COLLECTIVES[name].placements[0])
    cols = fam.speed_columns(point, _times(n), n, _CPU_CTX)
    assert cols["time_us"] == pytest.approx(2000.0, rel=1e-12)  # rank mean, median over iterations
    assert cols["algbw_GBps"] == pytest.approx(3.0, rel=1e-12)
    assert cols["busbw_GBps"] == pytest.approx(busbw, rel=1e-12)
    # the slowest rank's statistics: 3, 2, 3 ms per iteration
    assert cols["i_min_us"] == pytest.approx(2000.0) and cols["i_max_us"] == pytest.approx(3000.0)
    assert cols["i_p50_us"] == pytest.approx(3000.0)


# ---- a wrong answer is a failed row, without a speed --------------------------------------------

@pytest.fixture
def one_rank_world():
    """A real one-rank gloo process group in this process: the family's own measure() without
    launching ranks."""
    from hpcbench.runtime.device import resolve_device
    from hpcbench.runtime.distributed import World

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    device = resolve_device("cpu")
    try:
        yield World(0, 1, 0, 1, "gloo", device, dist.group.WORLD)
    finally:
        dist.destroy_process_group()


def _cfg(check: bool = True) -> fam.Config:
    return fam.Config(collectives=["all_reduce"], min_bytes="64", max_bytes="64", step_factor=2.0, step_bytes="0",
                      dtype="float32", op="sum", placements=["in_place", "out_of_place"], root=0, iters=3,
                      warmup_iters=1, agg_iters=1, blocking=False, check=check, fit_model=False,
                      project_world_sizes=[])


def _ctx(world, tmp_path):
    from hpcbench.core.runner import RunContext
    from hpcbench.measure.timing import TimingPolicy

    return RunContext(device=world.device, run_id="t", timing=TimingPolicy(), world=world, run_dir=tmp_path)


def _corrupting(monkeypatch, name: str):
    """Make `name`'s call write one wrong element into its output after the backend's own call."""
    real = Prepared.call

    def call(self, async_op=False):
        work = real(self, async_op=async_op)
        if work is not None:
            work.wait()
        if self.coll.name == name:
            self.out.view(-1)[0] += 1  # a small integer input + 1: exactly one element off
        return None

    monkeypatch.setattr(Prepared, "call", call)


CHECKED = [("all_reduce", "in_place"), ("all_gather", "out_of_place"), ("reduce_scatter", "out_of_place"),
           ("all_to_all", "out_of_place"), ("broadcast", "in_place"), ("staged_all_reduce", "in_place")]


@pytest.mark.parametrize("name,placement", CHECKED)
def test_a_correct_answer_is_an_ok_row_with_its_speed(one_rank_world, tmp_path, name, placement):
    row = fam.measure(Point(name, 64, "float32", "sum", placement), _cfg(), _ctx(one_rank_world, tmp_path))
    assert row["status"] == STATUS_OK and row["wrong"] == 0
    # world 1: algbw = 64 B / t; busbw = algbw x factor(1) (0 for every collective but broadcast)
    assert row["algbw_GBps"] == pytest.approx(64 / (row["time_us"] * 1e-6) / 1e9, rel=1e-9)
    assert row["busbw_GBps"] == pytest.approx(row["algbw_GBps"] * EXPECTED[name][1], abs=1e-12)


@pytest.mark.parametrize("name,placement", CHECKED)
def test_a_wrong_answer_is_a_failed_row_with_a_reason_and_no_speed(one_rank_world, tmp_path, monkeypatch,
                                                                  name, placement):
    _corrupting(monkeypatch, name)
    row = fam.measure(Point(name, 64, "float32", "sum", placement), _cfg(), _ctx(one_rank_world, tmp_path))
    assert row["status"] == STATUS_FAILED
    assert row["wrong"] == 1
    assert row["reason"] == "1 wrong elements across ranks"
    for column in ("algbw_GBps", "busbw_GBps", "time_us", "samples_s"):
        assert column not in row


def test_a_failed_check_reaches_the_run_rows(one_rank_world, tmp_path, monkeypatch):
    """Through the family's run(): the corrupted point is yielded failed, the next one still ok."""
    _corrupting(monkeypatch, "all_reduce")
    cfg = _cfg()
    cfg.collectives = ["all_reduce", "broadcast"]
    rows = list(fam.run(cfg, _ctx(one_rank_world, tmp_path)))
    by_name = {r["collective"]: r for r in rows}
    assert set(by_name) == {"all_reduce", "broadcast"} and len(rows) == 2
    assert by_name["all_reduce"]["status"] == STATUS_FAILED and "algbw_GBps" not in by_name["all_reduce"]
    assert by_name["broadcast"]["status"] == STATUS_OK and by_name["broadcast"]["wrong"] == 0


@pytest.mark.parametrize("name,placement", [("all_gather", "out_of_place"), ("all_to_all", "out_of_place"),
                                            ("reduce_scatter", "out_of_place")])
def test_the_check_does_not_read_the_timed_loops_leftovers(one_rank_world, tmp_path, monkeypatch, name, placement):
    """A collective that writes nothing once the timed loop is over fails its check: the check's
    output starts from the sentinel, not from the (correct) result the timed calls left there."""
    state = {"timed": False}
    real_call, real_time_ranks = Prepared.call, fam.time_ranks

    def call(self, async_op=False):
        return None if state["timed"] else real_call(self, async_op=async_op)

    def time_ranks(*args, **kwargs):
        out = real_time_ranks(*args, **kwargs)
        state["timed"] = True
        return out

    monkeypatch.setattr(Prepared, "call", call)
    monkeypatch.setattr(fam, "time_ranks", time_ranks)
    row = fam.measure(Point(name, 64, "float32", "sum", placement), _cfg(), _ctx(one_rank_world, tmp_path))
    assert state["timed"]
    # 64 B of float32 = 16 elements, none written by the check's call
    assert row["status"] == STATUS_FAILED and row["wrong"] == 16 and "algbw_GBps" not in row


def test_without_the_check_the_wrong_column_is_blank(one_rank_world, tmp_path):
    row = fam.measure(Point("all_reduce", 64, "float32", "sum", "in_place"), _cfg(check=False),
                      _ctx(one_rank_world, tmp_path))
    assert row["status"] == STATUS_OK and row["wrong"] is None


def test_sentinel_makes_a_call_that_writes_nothing_wrong(one_rank_world):
    """An output the collective never wrote is caught: every output element starts as NaN."""
    p = Prepared(Point("all_gather", 64, "float32", "sum", "out_of_place"), one_rank_world)
    p.reset()
    assert int(torch.isnan(p.out).sum()) == p.out.numel() == 16
    assert p.wrong() == 16
    p.call()
    assert p.wrong() == 0
