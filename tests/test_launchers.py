"""Ranks handed over by a launcher (torchrun, srun) instead of started by hpcbench."""

import os
import subprocess
import sys

import pytest

from hpcbench.results import load_run

COLLECTIVES_TINY = ["benchmark=collectives", "collectives.collectives=[all_reduce]", "collectives.min_bytes=8",
                    "collectives.max_bytes=64", "collectives.iters=2", "collectives.warmup_iters=0"]


def _env(**extra) -> dict:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", **extra}
    env.pop("TRITON_INTERPRET", None)
    return env


@pytest.mark.subprocess
@pytest.mark.world
def test_ranks_given_by_torchrun_are_used(tmp_path):
    env_cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "hpcbench.cli", *COLLECTIVES_TINY]  # as README writes it
    env = _env(HPCBENCH_RUN_ID="torchrun-run")
    out = subprocess.run(env_cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    said = out.stderr[-2000:] + out.stdout[-2000:]  # what to read when this fails on a loaded machine
    assert out.returncode == 0, said
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["torchrun-run"], said
    assert not (tmp_path / ".hydra").exists(), said  # rank 1 wrote nothing
    df = load_run(tmp_path / "results" / "torchrun-run")
    assert df.attrs["metadata"]["distributed"]["world_size"] == 2, said
    measured = df[df.record == "measurement"]
    assert (measured.status == "ok").all(), measured[["collective", "status", "reason"]].to_string()
    assert out.stdout.count("all_reduce  world 2") == 1, said  # rank 0 alone printed the table


@pytest.mark.subprocess
@pytest.mark.world
def test_ranks_given_by_srun_environment_are_used(tmp_path):
    """What srun gives each task (no SLURM needed here): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID..."""
    exe = os.path.join(os.path.dirname(sys.executable), "hpcbench")
    procs = []
    for rank in range(2):
        env = _env(SLURM_JOB_ID="777", SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS="2",
                   SLURM_STEP_NUM_TASKS="2", SLURM_STEP_TASKS_PER_NODE="2", SLURM_LAUNCH_NODE_IPADDR="127.0.0.1",
                   MASTER_PORT=str(29000 + os.getpid() % 1000))
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST"):
            env.pop(var, None)
        procs.append(subprocess.Popen([exe, *COLLECTIVES_TINY], cwd=tmp_path, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["slurm-777"]
    df = load_run(tmp_path / "results" / "slurm-777")
    assert df.attrs["metadata"]["distributed"]["world_size"] == 2
    assert df.attrs["metadata"]["slurm_job_id"] == "777"
    assert (df[df.record == "measurement"].status == "ok").all()
    assert "all_reduce  world 2" in outs[0][0] and "all_reduce" not in outs[1][0]
