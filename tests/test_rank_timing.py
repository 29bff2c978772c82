"""Ranks aligned before each timed collective (VISION rule 7), shown on two gloo ranks.

Rank 1 leaves every host barrier late (as a rank does whose host is busy or slow to launch). With
the host barrier alone, rank 0 starts its clock at once and times its wait for rank 1 inside the
all_reduce; with the alignment all_reduce before the start, rank 0 waits outside the timed span.
"""

import socket
import time

import numpy as np
import pytest
import torch

from hpcbench.measure.rank_timing import SYNC_ALIGNED, SYNC_BARRIER, sync_method, time_ranks

DELAY_S = 0.1  # rank 1's lateness after each barrier; a gloo all_reduce of 16 floats takes ~0.1-1 ms


def _skewed_all_reduce_times() -> dict:
    """Runs on each rank: per-sample times of a small all_reduce, host barrier only vs aligned."""
    import torch.distributed as dist

    from hpcbench.runtime.device import resolve_device
    from hpcbench.runtime.distributed import init_world, shutdown_world

    world = init_world(resolve_device("cpu"), "gloo", timeout_s=60)
    host_barrier = world.barrier

    def late_barrier():
        host_barrier()
        if world.rank == 1:
            time.sleep(DELAY_S)

    world.barrier = late_barrier
    t = torch.ones(16)
    out = {align: time_ranks(lambda: dist.all_reduce(t), world, iters=4, warmup=1, align=align)
           for align in (False, True)}
    shutdown_world()
    return out


@pytest.mark.world
def test_alignment_keeps_a_late_rank_out_of_the_early_ranks_time(monkeypatch):
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1", max_restarts=0,
                          run_id="rank_timing")
    by_rank = elastic_launch(config, _skewed_all_reduce_times)()
    early, late = by_rank[0], by_rank[1]
    # host barrier only: the early rank's samples contain the late rank's delay
    assert np.median(early[False]) > 0.7 * DELAY_S
    # aligned: neither rank's samples do (generous margin for a loaded 2-core machine)
    assert np.median(early[True]) < 0.3 * DELAY_S
    assert np.median(late[True]) < 0.3 * DELAY_S and np.median(late[False]) < 0.3 * DELAY_S
    assert len(early[True]) == len(early[False]) == 4


def test_sync_method_names():
    assert sync_method() == sync_method(True) == SYNC_ALIGNED and sync_method(False) == SYNC_BARRIER


@pytest.mark.parametrize("align", [True, False])
def test_time_ranks_on_a_world_of_one(align, monkeypatch):
    """A single gloo rank: the alignment all_reduce is a no-op collective, samples are positive."""
    import torch.distributed as dist

    from hpcbench.runtime.device import resolve_device
    from hpcbench.runtime.distributed import init_world, shutdown_world

    with socket.socket() as s:  # a free port: other test runs may share this machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    world = init_world(resolve_device("cpu"), "gloo", timeout_s=30)
    try:
        calls = []
        samples = time_ranks(lambda: calls.append(dist.get_rank()), world, iters=3, warmup=2, align=align)
    finally:
        shutdown_world()
    assert len(samples) == 3 and all(s > 0 for s in samples) and len(calls) == 5
