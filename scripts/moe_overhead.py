"""Harness overhead of MoE dispatch: hpcbench's reported dispatch time for a 4-byte-payload point vs a
bare `all_to_all_single` loop with the same split sizes and buffers, in the same ranks.

The point: hidden 2 in BF16 (4 payload bytes per token row; per_rank rows also carry the token's
k int16 expert ids), 32 tokens per rank, 24 experts, top-4, uniform routing. Both sides are timed
the same way (host barrier, the one-element alignment all_reduce, host clock around the call;
every rank's samples gathered; median over iterations of the rank-averaged time, and of the
slowest rank's) and interleaved round by round, so drift hits both alike. hpcbench's dispatch
also gathers the token rows into the send buffer (index_select), as a real dispatcher must: a third
loop, the same gather and all_to_all_single written bare, separates that work from the harness's own
overhead.

    python scripts/moe_overhead.py [--nproc 2] [--iters 200] [--rounds 5]

Prints one line per round and layout, and the ratio of medians; the target is |ratio - 1| <= 20%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

LAYOUTS = ("per_rank", "per_expert")


def bare_loop(recv, send, recv_splits, send_splits, iters: int, warmup: int, gather=None) -> tuple[float, float]:
    """(rank-mean, slowest-rank) median of a plain all_to_all_single with these splits; with
    `gather` = (rows, index), the rows are first gathered into `send` (what a dispatcher does)."""
    flag = torch.zeros(1)
    rows, index = gather or (None, None)
    for _ in range(warmup):
        dist.all_to_all_single(recv, send, recv_splits, send_splits)
    samples = []
    for _ in range(iters):
        dist.barrier()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        t0 = time.perf_counter()
        if rows is not None:
            torch.index_select(rows, 0, index, out=send)
        dist.all_to_all_single(recv, send, recv_splits, send_splits)
        samples.append(time.perf_counter() - t0)
    table = [torch.empty(iters, dtype=torch.float64) for _ in range(dist.get_world_size())]
    dist.all_gather(table, torch.tensor(samples, dtype=torch.float64))
    table = torch.stack(table).numpy()
    return float(np.median(table.mean(axis=0))), float(np.median(table.max(axis=0)))


def _setup(layout: str, iters: int):
    from hpcbench.benchmarks import moe_alltoall as fam
    from hpcbench.core.config import compose, family_config

    overrides = ["benchmark=moe_alltoall", "moe_alltoall.hidden=[2]", "moe_alltoall.dispatch_dtypes=[bf16]",
                 f"moe_alltoall.layouts=[{layout}]", "moe_alltoall.tokens_per_rank=[32]",
                 "moe_alltoall.num_experts=[24]", "moe_alltoall.top_k=[4]", "moe_alltoall.impls=[torch]",
                 "moe_alltoall.expert_overlap=false", "moe_alltoall.uniform_baseline=false",
                 f"moe_alltoall.iters={iters}", "moe_alltoall.warmup_iters=20"]
    cfg = family_config(fam.FAMILY, compose(overrides))
    (point,) = fam.points(cfg, "cpu")
    return cfg, point


def rank_main(iters: int, rounds: int) -> dict:
    from hpcbench.benchmarks import moe_alltoall as fam
    from hpcbench.benchmarks.moe_alltoall.exchange import Exchange
    from hpcbench.benchmarks.moe_alltoall.measure import measure_torch
    from hpcbench.core.runner import RunContext
    from hpcbench.runtime.device import resolve_device
    from hpcbench.runtime.distributed import init_world
    from hpcbench.runtime.watchdog import Watchdog, store_from_env
    from hpcbench.measure.timing import TimingPolicy

    torch.set_num_threads(1)
    device = resolve_device("cpu")
    world = init_world(device, "gloo", timeout_s=60)
    ctx = RunContext(device=device, run_id="moe-overhead", timing=TimingPolicy(), world=world)
    # as in a real run: the watchdog thread publishing progress, per-phase label publishes
    ctx.watchdog = Watchdog(store_from_env("moe-overhead"), world.rank, world.size, 60, on_hang=print,
                            label_store=store_from_env("moe-overhead")).start()
    results = {}
    for layout in LAYOUTS:
        cfg, point = _setup(layout, iters)
        routing = fam._routing(point, world.size)
        base = {**point.params(), "world_size": world.size}
        bare = Exchange(point.fmt, routing, world.rank, point.seed, device.torch_device)
        bare.counts()
        bare.allocate()
        h = bare.handle
        results[layout] = []
        for _ in range(rounds):
            plain = bare_loop(bare.recv, bare.send, h.recv_splits, h.send_splits, iters, 20)
            rows = measure_torch(point, routing, base, ("counts", "dispatch", "combine"), cfg, ctx)
            (row,) = [r for r in rows if r["phase"] == "dispatch"]
            assert row["status"] == "ok", row
            gathered = bare_loop(bare.recv, bare.send, h.recv_splits, h.send_splits, iters, 20,
                                 gather=(bare.packed, h.order.tokens))
            results[layout].append((plain, (row["time_us"] / 1e6, row["median_s"]), gathered))
        results[layout + ":wire"] = (point.fmt.width, sum(h.send_splits))
    ctx.watchdog.stop()
    dist.destroy_process_group()
    return results


def _report(layout: str, rounds: list, wire: tuple[int, int]) -> bool:
    print(f"{layout}: {wire[0]}-byte wire rows (4-byte payload), {wire[1]} rows sent by rank 0")
    for i, ((bare_mean, _), (mean, _), (gathered, _)) in enumerate(rounds):
        print(f"  round {i}: bare all_to_all_single {bare_mean * 1e6:7.1f} us   bare gather+all_to_all_single "
              f"{gathered * 1e6:7.1f} us   hpcbench dispatch {mean * 1e6:7.1f} us   ratio {mean / bare_mean:.3f}")
    ok = True
    for what, k in (("rank-mean", 0), ("slowest-rank", 1)):
        bare_med, harness_med, gathered_med = (statistics.median(r[j][k] for r in rounds) for j in range(3))
        ratio = harness_med / bare_med
        verdict = "PASS" if abs(ratio - 1) <= 0.20 else "FAIL"
        ok &= verdict == "PASS"
        print(f"  {what} median over rounds: bare {bare_med * 1e6:.1f} us, hpcbench {harness_med * 1e6:.1f} us, "
              f"ratio {ratio:.3f} -> {verdict} (target within 20%); the same gather + all_to_all_single bare: "
              f"{gathered_med * 1e6:.1f} us (hpcbench / that: {harness_med / gathered_med:.3f})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.nproc, run_id="moe-overhead",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
                          max_restarts=0, start_method="spawn")
    results = elastic_launch(config, rank_main)(args.iters, args.rounds)[0]
    ok = all([_report(layout, results[layout], results[layout + ":wire"]) for layout in LAYOUTS])  # every layout printed
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
