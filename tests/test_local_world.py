"""A local world must fit the machine, checked before anything starts; no rank outlives its launcher."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import processes_of_run
from hpcbench.api.errors import UserError
from hpcbench.core.cli import main
from hpcbench.runtime import launch


@pytest.fixture
def two_cores_and_4000_mb(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(launch, "_available_memory_mb", lambda: 4000)


def test_cpu_ranks_up_to_the_stated_multiple_of_the_cores(two_cores_and_4000_mb):
    launch.check_fits(8, "cpu", 4, 100)  # 2 cores x 4 = 8: at the limit is allowed
    with pytest.raises(UserError) as e:
        launch.check_fits(9, "cpu", 4, 100)
    assert str(e.value) == ("dist.nproc=9: more CPU ranks than 2 core(s) x dist.max_ranks_per_core=4 = 8; "
                            "lower dist.nproc or raise dist.max_ranks_per_core")
    launch.check_fits(9, "cpu", 5, 100)  # the key moves the limit
    with pytest.raises(UserError, match="= 2;"):
        launch.check_fits(3, "cpu", 1, 100)


def test_ranks_times_their_memory_against_what_is_available(two_cores_and_4000_mb):
    launch.check_fits(5, "cpu", 4, 800)  # 4000 MB of 4000: fits exactly
    with pytest.raises(UserError) as e:
        launch.check_fits(5, "cpu", 4, 801)
    assert str(e.value) == ("dist.nproc=5: 5 ranks x dist.rank_memory_mb=801 MB = 4005 MB, more than the 4000 MB "
                            "available; lower dist.nproc or dist.rank_memory_mb")


def test_cuda_ranks_one_per_visible_gpu(two_cores_and_4000_mb, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    launch.check_fits(2, "cuda", 1, 100)  # the core multiple does not apply to GPU ranks
    with pytest.raises(UserError, match=r"dist.nproc=3: 2 GPU\(s\) visible, one local rank each .* <= 2 or auto"):
        launch.check_fits(3, "cuda", 4, 100)


def test_memory_is_read_from_meminfo():
    mb = launch._available_memory_mb()
    assert mb is None or 0 < mb < 1 << 30


@pytest.mark.parametrize("args,needle", [
    (["benchmark=collectives", "dist.nproc=1000"], "dist.nproc=1000: more CPU ranks than"),
    (["benchmark=collectives", "dist.nproc=2", "dist.rank_memory_mb=100000000"], "dist.rank_memory_mb=100000000 MB"),
    (["benchmark=pipeline", "dist.max_ranks_per_core=0"], "dist.max_ranks_per_core=0: use a positive integer"),
    (["dist.rank_memory_mb=-5"], "dist.rank_memory_mb=-5: use a positive integer"),
    (["dist.max_ranks_per_core=many"], "dist.max_ranks_per_core"),
])
def test_a_world_too_large_is_one_line_before_anything_exists(args, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpcbench: error:") and needle in lines[0], lines
    assert not any(tmp_path.glob("results/*")) and not (tmp_path / "outputs").exists()


@pytest.mark.subprocess
@pytest.mark.world
def test_no_rank_outlives_a_launcher_killed_with_sigkill(tmp_path):
    """SIGKILL (what the OOM killer sends) leaves the launcher no chance to stop its ranks: they
    notice on their own and end, rank 0 recording the run as cut short."""
    run_id = f"orphans-{os.getpid()}"
    exe = Path(sys.executable).with_name("hpcbench")
    env = {**os.environ, "HPCBENCH_RUN_ID": run_id}
    env.pop("TRITON_INTERPRET", None)
    # a long sweep: many sizes, many iterations; it is killed long before it ends
    p = subprocess.Popen([str(exe), "benchmark=collectives", "collectives.max_bytes=64K", "collectives.step_factor=2",
                          "collectives.iters=300", "collectives.warmup_iters=1"], cwd=tmp_path, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = tmp_path / "results" / run_id / "rows.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (rows.is_file() and rows.read_text().count("\n") >= 1):
        time.sleep(0.2)
    assert rows.is_file(), "the run stored no row in 120 s"
    ranks = [pid for pid in processes_of_run(run_id) if pid != p.pid]
    assert len(ranks) >= 2  # the forkserver and two ranks (at least the ranks)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and processes_of_run(run_id):
        time.sleep(0.2)
    assert processes_of_run(run_id) == []
    assert '"cut_short": true' in (rows.parent / "metadata.json").read_text()
