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

Then, without a process group, world sizes 2 to 4 in one process: every rank's buffers and exact answer
against a reference implementation of NCCL's collective semantics, nccl-tests' counts, NCCL's in-place
buffer layouts, and the crafted inputs' bounds (each dtype's largest exactly representable integer).
"""

from __future__ import annotations

import threading
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


# ---- n ranks in this process: buffers, crafted inputs and exact answers at world sizes 2 to 4 ------------
# Prepared needs of its world only the rank, the size, the device and the host group; the collective
# calls go to `_Collectives` below, a reference implementation of NCCL's semantics (NCCL user guide,
# "Collective Operations" and "In-place Operations") that completes a collective once every rank has
# called it. No process group: what a gloo world checks at 2-3 ranks, at 2-4 ranks in milliseconds.

GROUP, CPU_GROUP = object(), object()  # the benchmark's group and the host (gloo) group, as sentinels


def _world(rank: int, n: int):
    return types.SimpleNamespace(rank=rank, size=n, device=types.SimpleNamespace(torch_device=torch.device("cpu"),
                                                                                 kind="cpu"), cpu_group=CPU_GROUP)


class _Work:
    def __init__(self):
        self.waited = 0

    def wait(self):
        self.waited += 1


class _Collectives:
    """Records each rank's call (its buffers, op, group, async flag) and, once all n ranks have called
    (each from its own thread, as `_call_all` runs them), computes the result from the inputs as NCCL
    defines it and writes every rank's output before any call returns. With complete=False it only
    records (the calls of a loop that is never completed)."""

    OPS = [(dist.ReduceOp.SUM, "sum"), (dist.ReduceOp.PRODUCT, "prod"), (dist.ReduceOp.MIN, "min"),
           (dist.ReduceOp.MAX, "max"), (dist.ReduceOp.AVG, "avg")]

    def __init__(self, monkeypatch, n: int, complete: bool = True):
        import hpcbench.benchmarks._collective_ops as ops

        self.n, self.calls, self.log, self.works = n, {}, [], []
        self.local = threading.local()
        self.barrier = threading.Barrier(n, action=self._complete, timeout=2) if complete else None
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)
        monkeypatch.setattr(dist, "broadcast", self.broadcast)
        monkeypatch.setattr(dist, "all_to_all_single", self.all_to_all_single)
        monkeypatch.setattr(ops, "all_gather_flat", self.all_gather_flat)
        monkeypatch.setattr(ops, "reduce_scatter_flat", self.reduce_scatter_flat)

    def _record(self, name, async_op, **kw):
        self.log.append((name, kw | {"async_op": async_op}))
        if self.barrier is not None:
            self.calls[self.local.rank] = (name, kw)
            self.barrier.wait()
        work = _Work() if async_op else None
        self.works.append(work)
        return work

    # the torch.distributed signatures and defaults: an argument left out takes its default
    def all_reduce(self, tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        return self._record("all_reduce", async_op, tensor=tensor, op=op, group=group)

    def broadcast(self, tensor, src=None, group=None, async_op=False):
        return self._record("broadcast", async_op, tensor=tensor, src=src, group=group)

    def all_to_all_single(self, output, input, output_split_sizes=None, input_split_sizes=None, group=None,
                          async_op=False):
        return self._record("all_to_all", async_op, output=output, input=input, group=group)

    def all_gather_flat(self, output, input, group=None, async_op=False):
        return self._record("all_gather", async_op, output=output, input=input, group=group)

    def reduce_scatter_flat(self, output, input, op, group=None, async_op=False):
        return self._record("reduce_scatter", async_op, output=output, input=input, op=op, group=group)

    def _reduce(self, op, tensors):
        name = next(n for o, n in self.OPS if o == op)
        x = torch.stack([t.double() for t in tensors])
        return {"sum": x.sum(0), "prod": x.prod(0), "min": x.amin(0), "max": x.amax(0),
                "avg": x.sum(0) / len(tensors)}[name]

    def _complete(self):
        (name,) = {c[0] for c in self.calls.values()}
        kw = [self.calls[r][1] for r in range(self.n)]
        n = self.n
        if name == "all_reduce":
            result = self._reduce(kw[0]["op"], [k["tensor"] for k in kw])
            for k in kw:
                k["tensor"].copy_(result)
        elif name == "broadcast":
            root = kw[kw[0]["src"]]["tensor"].clone()
            for k in kw:
                k["tensor"].copy_(root)
        elif name == "all_gather":  # recv[q*c:(q+1)*c] = rank q's send
            sent = [k["input"].clone() for k in kw]
            for k in kw:
                k["output"].copy_(torch.cat(sent))
        elif name == "reduce_scatter":  # rank r gets the reduction of every rank's chunk r
            sent = [k["input"].clone() for k in kw]
            c = sent[0].numel() // n
            for r, k in enumerate(kw):
                k["output"].copy_(self._reduce(kw[0]["op"], [s[r * c:(r + 1) * c] for s in sent]))
        else:  # all_to_all: rank r's chunk q goes to rank q's chunk r
            sent = [k["input"].clone() for k in kw]
            c = sent[0].numel() // n
            for r, k in enumerate(kw):
                k["output"].copy_(torch.cat([s[r * c:(r + 1) * c] for s in sent]))
        self.calls = {}


def _call_all(fake: _Collectives, ranks: list) -> list:
    """Every rank's call() at once, one thread per rank (a collective returns when all have called)."""
    results, errors = [None] * len(ranks), []

    def run(r):
        fake.local.rank = r
        try:
            results[r] = ranks[r].call()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            fake.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(ranks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


WORLD_CASES = [(name, placement) for name, coll in COLLECTIVES.items() for placement in coll.placements]


def _ranks(name, placement, n, dtype="float32", op="sum", size=None, root=0):
    size = size or 6 * n * torch.empty((), dtype=getattr(torch, dtype)).element_size()
    return [Prepared(Point(name, size, dtype, op, placement, root), _world(r, n), group=GROUP) for r in range(n)]


# world sizes and dtypes: 3 ranks in each dtype kind (bfloat16: the narrowest exact range), 2 and 4 in float32
WORLDS = [(2, "float32"), (3, "float32"), (3, "int32"), (3, "bfloat16"), (4, "float32")]


@pytest.mark.parametrize("name,placement", WORLD_CASES)
def test_every_rank_is_exact_against_the_reference_collective(monkeypatch, name, placement):
    ops_to_run = ["sum", "prod", "min", "max", "avg"] if COLLECTIVES[name].reduces else ["sum"]
    for n, dtype in WORLDS:
        for op in ops_to_run:
            fake = _Collectives(monkeypatch, n)
            ranks = _ranks(name, placement, n, dtype, op, root=n - 1)
            for p in ranks:
                p.reset()
            inputs = [p.inp.clone() for p in ranks]
            # before the call: the sentinel, or the rank's own input (the root's is already the broadcast)
            assert all(p.wrong() > 0 for p in (ranks[:-1] if name == "broadcast" else ranks))
            assert _call_all(fake, ranks) == [None] * n
            for r, p in enumerate(ranks):
                assert p.wrong() == 0, (name, placement, n, dtype, op, r)
            # the inputs are not all alike: a collective that mixed up ranks would show
            assert any(not torch.equal(inputs[0], x) for x in inputs[1:]), (name, n, dtype, op)
            want = CPU_GROUP if name == "staged_all_reduce" else GROUP
            assert len(fake.log) == n
            assert all(kw["group"] is want and kw["async_op"] is False for _, kw in fake.log)
            if "op" in fake.log[0][1]:
                assert all(kw["op"] == REDUCE_OPS_BY_NAME[op] for _, kw in fake.log)
            if name == "broadcast":
                assert all(kw["src"] == n - 1 for _, kw in fake.log)


REDUCE_OPS_BY_NAME = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT, "min": dist.ReduceOp.MIN,
                      "max": dist.ReduceOp.MAX, "avg": dist.ReduceOp.AVG}


@pytest.mark.parametrize("name,placement", [("all_gather", "out_of_place"), ("all_gather", "in_place"),
                                            ("all_to_all", "out_of_place"), ("reduce_scatter", "out_of_place"),
                                            ("reduce_scatter", "in_place")])
def test_a_chunk_from_or_to_the_wrong_rank_is_caught(monkeypatch, name, placement):
    """The reference with what ranks 0 and 1 sent swapped (all_gather, all_to_all), or what they
    received (reduce_scatter: a sum does not care who sent what): wrong elements on the ranks hit."""
    n = 3
    fake = _Collectives(monkeypatch, n)
    complete = fake._complete

    def swapped():
        a, b = fake.calls[0][1], fake.calls[1][1]
        key = "output" if name == "reduce_scatter" else "input"
        if name != "reduce_scatter":
            x, y = a[key].clone(), b[key].clone()
            a[key].copy_(y), b[key].copy_(x)
        complete()
        if name == "reduce_scatter":
            x, y = a[key].clone(), b[key].clone()
            a[key].copy_(y), b[key].copy_(x)

    fake.barrier = threading.Barrier(n, action=swapped, timeout=2)
    ranks = _ranks(name, placement, n, op="sum")
    for p in ranks:
        p.reset()
    _call_all(fake, ranks)
    hit = [True, True, False] if name == "reduce_scatter" else [True, True, True]
    assert [p.wrong() > 0 for p in ranks] == hit


@pytest.mark.parametrize("name,placement", WORLD_CASES)
def test_without_blocking_every_call_is_in_flight_and_then_waited_for(monkeypatch, name, placement):
    from hpcbench.benchmarks._collective_ops import run_calls

    n = 2
    fake = _Collectives(monkeypatch, n, complete=False)  # only the calls matter here
    ranks = _ranks(name, placement, n)
    for p in ranks:
        p.reset()
        run_calls(p, 3, blocking=False)
    if name == "staged_all_reduce":  # the host all-reduce is synchronous: nothing is left in flight
        assert fake.works == [None] * 6 and all(kw["async_op"] is False for _, kw in fake.log)
    else:
        assert len(fake.works) == 6 and all(w is not None and w.waited == 1 for w in fake.works)
        assert all(kw["async_op"] is True for _, kw in fake.log)
    fake.log, fake.works = [], []
    run_calls(ranks[0], 2, blocking=True)
    assert fake.works == [None, None] and all(kw["async_op"] is False for _, kw in fake.log)


# ---- buffers: sizes as nccl-tests counts them, in-place views, the device -------------------------------

# 64 B of float32 = 16 elements at 4 ranks: all_reduce/broadcast count the per-rank buffer (16), the
# split collectives the whole buffer cut in 4 chunks of 4
SIZES = {"all_reduce": (16, 16, 16), "broadcast": (16, 16, 16), "staged_all_reduce": (16, 16, 16),
         "all_gather": (4, 4, 16), "reduce_scatter": (4, 16, 4), "all_to_all": (4, 16, 16)}  # count, input, output


@pytest.mark.parametrize("name,placement", WORLD_CASES)
def test_counts_and_buffer_sizes_follow_nccl_tests(name, placement):
    for rank in range(4):
        p = Prepared(Point(name, 64, "float32", "sum", placement), _world(rank, 4))
        assert (p.count, p.inp.numel(), p.out.numel()) == SIZES[name]
        assert p.inp.dtype == p.out.dtype == torch.float32


@pytest.mark.parametrize("rank", [0, 1, 2, 3])
def test_in_place_all_gather_and_reduce_scatter_buffers_are_nccls_views(rank):
    # NCCL: all_gather is in place when sendbuff == recvbuff + rank * sendcount; reduce_scatter when
    # recvbuff == sendbuff + rank * recvcount (4 float32 elements = 16 B per chunk here)
    ag = Prepared(Point("all_gather", 64, "float32", "sum", "in_place"), _world(rank, 4))
    assert ag.inp.data_ptr() == ag.out.data_ptr() + rank * 16 and ag.inp.numel() == 4
    rs = Prepared(Point("reduce_scatter", 64, "float32", "sum", "in_place"), _world(rank, 4))
    assert rs.out.data_ptr() == rs.inp.data_ptr() + rank * 16 and rs.out.numel() == 4
    for name in ("all_gather", "reduce_scatter", "all_to_all"):  # out of place: two separate buffers
        p = Prepared(Point(name, 64, "float32", "sum", "out_of_place"), _world(rank, 4))
        assert p.inp.untyped_storage().data_ptr() != p.out.untyped_storage().data_ptr()


@pytest.mark.parametrize("name,placement", WORLD_CASES)
def test_buffers_and_the_expected_answer_are_made_on_the_worlds_device(monkeypatch, name, placement):
    """On a GPU a tensor made without the world's device lands on the host, and comparing it with the
    output fails: every tensor made for the buffers and the expected answer names the world's device."""
    device, made = torch.device("cpu"), []
    for factory in ("arange", "empty"):
        real = getattr(torch, factory)

        def spy(*args, _real=real, _name=factory, **kw):
            made.append((_name, kw.get("device", "not given")))
            return _real(*args, **kw)

        monkeypatch.setattr(torch, factory, spy)
    for rank in (0, 1):
        made.clear()
        p = Prepared(Point(name, 64, "float32", "sum", placement), _world(rank, 2))
        p.expected()
        on_device = [m for m in made if m != ("empty", "not given")]  # the element size probe: a 0-d host tensor
        assert on_device and all(d == device for _, d in on_device), made
        host = [m for m in made if m == ("empty", "not given")]
        assert len(host) == 1 + (name == "staged_all_reduce")  # the probe, and the staged host buffer


def test_the_staged_host_buffer_holds_the_benchmarks_bytes():
    p = Prepared(Point("staged_all_reduce", 64, "bfloat16", "sum", "in_place"), _world(0, 2))
    assert p.host.dtype == torch.bfloat16 and p.host.numel() * 2 == 64 and p.host.device.type == "cpu"


def test_points_that_cannot_run_say_why():
    from hpcbench.benchmarks._collective_ops import NotApplicable

    with pytest.raises(NotApplicable, match="root 4 is not a rank of a world of 4"):
        Prepared(Point("broadcast", 64, "float32", "sum", "in_place", root=4), _world(0, 4))
    Prepared(Point("broadcast", 64, "float32", "sum", "in_place", root=3), _world(0, 4))
    with pytest.raises(NotApplicable, match="does not split into 2 equal chunks"):
        Prepared(Point("all_gather", 12, "float32", "sum", "out_of_place"), _world(0, 2))  # 3 elements
    with pytest.raises(NotApplicable, match="not a whole number of float32 elements"):
        Prepared(Point("all_reduce", 10, "float32", "sum", "in_place"), _world(0, 2))
    # bfloat16 holds integers exactly up to 2^8: a sum over 512 ranks of inputs >= 1 cannot be checked
    with pytest.raises(NotApplicable, match="bfloat16 cannot hold an exactly checkable sum over 512 ranks"):
        Prepared(Point("all_reduce", 64, "bfloat16", "sum", "in_place"), _world(0, 512))


# ---- the crafted inputs -----------------------------------------------------------------------------------
# The largest integer each dtype holds exactly (every integer up to it representable): 2^11 for float16's
# 11 significant bits, 2^8 for bfloat16, 2^24 for float32, 2^53 for float64, and the integer types' maxima.
# The amplitude is the largest input magnitude (at most 8) whose partial reductions over n ranks stay within it.

@pytest.mark.parametrize("op,dtype,n,amp", [
    ("sum", torch.float32, 4, 8), ("max", torch.float32, 4, 8),
    ("sum", torch.bfloat16, 64, 4),        # 64 x 4 = 256 = 2^8
    ("sum", torch.float16, 256, 8), ("sum", torch.float16, 512, 4),   # 2^11 / 512
    ("avg", torch.bfloat16, 8, 4),         # inputs multiples of n: n^2 x amp <= 2^8
    ("sum", torch.int8, 8, 8), ("sum", torch.int8, 16, 7),            # 16 x 8 = 128 > 127
    ("sum", torch.int32, 4, 8),
    ("avg", torch.int32, 46340, 1), ("avg", torch.int32, 46341, 0),  # 46340^2 < 2^31 - 1 < 46341^2
    ("avg", torch.int64, 2**31, 1),        # n^2 = 2^62 <= int64's 2^63 - 1 < 2 n^2
    ("avg", torch.float64, 2**26, 2),      # n^2 = 2^52: 2 x 2^52 = 2^53
    ("avg", torch.float64, 2**25, 8),
    ("avg", torch.float32, 2**11, 4),      # n^2 = 2^22: 4 x 2^22 = 2^24
])
def test_amplitude_keeps_every_partial_reduction_exact(op, dtype, n, amp):
    from hpcbench.benchmarks._collective_ops import amplitude

    assert amplitude(op, dtype, n) == amp


def test_a_prepared_point_takes_the_amplitude_of_its_op_dtype_and_world():
    assert Prepared(Point("all_reduce", 64, "bfloat16", "sum", "in_place"), _world(0, 64)).amp == 4
    assert Prepared(Point("all_reduce", 64, "bfloat16", "avg", "in_place"), _world(0, 8)).amp == 4
    assert Prepared(Point("all_reduce", 64, "bfloat16", "max", "in_place"), _world(0, 64)).amp == 8
    # a collective that does not reduce sends sum-like inputs whatever op is asked
    assert Prepared(Point("all_gather", 64, "bfloat16", "avg", "out_of_place"), _world(0, 8)).amp == 8


@pytest.mark.parametrize("amp", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [2, 3, 8])
def test_sum_like_inputs_are_bounded_varied_and_differ_between_ranks(n, amp):
    from hpcbench.benchmarks._collective_ops import values

    for op in ("sum", "min", "max"):
        ins = torch.stack([values(r, 0, 64, op, n, amp, "cpu") for r in range(n)])
        assert ins.dtype == torch.int64 and ins.shape == (n, 64)
        assert int(ins.abs().max()) <= amp and set(ins[0].tolist()) == set(range(-amp, amp + 1))
        for r in range(1, min(n, 2 * amp + 1)):  # 2 amp + 1 values: at most that many different ranks
            assert not torch.equal(ins[r], ins[0])
    avg = torch.stack([values(r, 0, 64, "avg", n, amp, "cpu") for r in range(n)])
    # an average's inputs are multiples of n, so that the average is an integer
    assert bool((avg % n == 0).all()) and int(avg.abs().max()) == amp * n


@pytest.mark.parametrize("n", [2, 3, 4, 8])
def test_product_inputs_are_signs_with_one_rank_contributing_a_two(n):
    from hpcbench.benchmarks._collective_ops import values

    ins = torch.stack([values(r, 0, 48, "prod", n, 8, "cpu") for r in range(n)])
    assert set(ins.abs().flatten().tolist()) == {1, 2}
    assert (ins.abs() == 2).sum(0).tolist() == [1] * 48  # exactly one rank per element
    assert bool((ins < 0).any()) and bool((ins > 0).any())
    assert set(ins.prod(0).abs().tolist()) == {2}


def test_an_elements_input_does_not_depend_on_where_the_window_starts():
    from hpcbench.benchmarks._collective_ops import values

    for op in ("sum", "prod", "avg"):
        whole = values(1, 0, 12, op, 3, 8, "cpu")
        assert torch.equal(values(1, 5, 7, op, 3, 8, "cpu"), whole[5:])
        assert values(1, 5, 7, op, 3, 8, "cpu").numel() == 7


@pytest.mark.parametrize("op", ["sum", "prod", "min", "max", "avg"])
def test_reduced_is_the_exact_integer_reduction_of_every_ranks_input(op):
    from hpcbench.benchmarks._collective_ops import reduced, values

    n, amp = 3, 2
    ins = [values(r, 4, 10, op, n, amp, "cpu").tolist() for r in range(n)]
    want = []
    for column in zip(*ins):  # by hand, element by element
        if op in ("sum", "avg"):
            total = sum(column)
            want.append(total // n if op == "avg" else total)
        elif op == "prod":
            want.append(column[0] * column[1] * column[2])
        else:
            want.append((min if op == "min" else max)(column))
    got = reduced(op, 4, 10, n, amp, "cpu")
    assert got.dtype == torch.int64 and got.tolist() == want
    if op == "avg":
        assert all(sum(c) % n == 0 for c in zip(*ins))  # the average is exact


@pytest.mark.parametrize("amp", range(1, 9))
def test_inputs_vary_along_the_buffer_and_between_ranks_at_every_amplitude(amp):
    """Every modulus 2*amp+1 the inputs use (3..17): with multipliers 7 and 13, amplitude 3 made
    each rank's input constant along its buffer (rank 0's all zeros) and amplitude 6 gave every
    rank the same input (bf16 sums over 37-42 ranks, int8 over 19-21)."""
    from hpcbench.benchmarks._collective_ops import values

    for n in (2, 3, 40):
        inputs = [values(r, 0, 64, "sum", n, amp, "cpu") for r in range(min(n, 2 * amp + 1))]
        assert all(len(set(v.tolist())) == 2 * amp + 1 for v in inputs)  # every value of -amp..amp appears
        assert len({tuple(v.tolist()) for v in inputs}) == len(inputs)  # no two ranks alike
