"""Harness overhead: hpcbench's reported time for a 4-byte all_reduce vs a bare torch.distributed loop.

Both are timed the same way in the same ranks (barrier, then host clock around one all_reduce;
median over iterations of the rank-averaged time) and interleaved, so drift hits both alike.

    python scripts/allreduce_overhead.py [--nproc 2] [--iters 200] [--rounds 5]

Prints one line per round and the ratio of medians; the target is |ratio - 1| <= 20% on CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from hpcbench.runtime.distributed import all_gather_flat


def bare_loop(t: torch.Tensor, iters: int) -> float:
    samples = []
    for _ in range(iters):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        samples.append(time.perf_counter() - t0)
    table = torch.empty(dist.get_world_size() * iters, dtype=torch.float64)
    all_gather_flat(table, torch.tensor(samples, dtype=torch.float64))
    return float(table.view(dist.get_world_size(), iters).mean(0).median())


def rank_main(iters: int, rounds: int) -> list[tuple[float, float]]:
    from hpcbench.benchmarks import collectives
    from hpcbench.benchmarks._collective_ops import Point
    from hpcbench.core.config import compose, family_config
    from hpcbench.core.runner import RunContext
    from hpcbench.runtime.device import resolve_device
    from hpcbench.runtime.distributed import init_world
    from hpcbench.runtime.watchdog import Watchdog, store_from_env
    from hpcbench.measure.timing import TimingPolicy

    torch.set_num_threads(1)
    device = resolve_device("cpu")
    world = init_world(device, "gloo", timeout_s=60)
    ctx = RunContext(device=device, run_id="overhead", timing=TimingPolicy(), world=world)
    # as in a real run: the watchdog thread publishing progress, per-point label publishes
    ctx.watchdog = Watchdog(store_from_env("overhead"), world.rank, world.size, 60, on_hang=print,
                            label_store=store_from_env("overhead")).start()
    # the YAML's defaults, with these iterations
    cfg = family_config(collectives.FAMILY, compose(["benchmark=collectives", f"collectives.iters={iters}",
                                                     "collectives.warmup_iters=20", "collectives.fit_model=false"]))
    point = Point("all_reduce", 4, "float32", "sum", "in_place")
    t = torch.ones(1)
    results = []
    for _ in range(rounds):
        bare = bare_loop(t, iters)
        row = collectives.measure(point, cfg, ctx)
        assert row["status"] == "ok", row
        results.append((bare, row["time_us"] / 1e6))
    ctx.watchdog.stop()
    dist.destroy_process_group()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=args.nproc, run_id="overhead",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
                          max_restarts=0, start_method="spawn")
    results = elastic_launch(config, rank_main)(args.iters, args.rounds)[0]
    for i, (bare, harness) in enumerate(results):
        print(f"round {i}: bare loop {bare * 1e6:8.1f} us   hpcbench {harness * 1e6:8.1f} us   "
              f"ratio {harness / bare:.3f}")
    bare_med = statistics.median(b for b, _ in results)
    harness_med = statistics.median(h for _, h in results)
    ratio = harness_med / bare_med
    verdict = "PASS" if abs(ratio - 1) <= 0.20 else "FAIL"
    print(f"median over rounds: bare {bare_med * 1e6:.1f} us, hpcbench {harness_med * 1e6:.1f} us, "
          f"ratio {ratio:.3f} -> {verdict} (target within 20%)")


if __name__ == "__main__":
    main()
