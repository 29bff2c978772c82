"""The SLURM templates, the submit check and the submitit launcher against a real SLURM on localhost.

`bash slurm/ci/local-cluster.sh start` (root) starts the cluster these tests use; .ci/run does it and
sets HPCBENCH_SLURM_REQUIRED=1, so that in CI a cluster that did not come up fails the tests rather
than skipping them. Jobs run CPU ranks (gloo): GPUS_PER_NODE=0 with TASKS_PER_NODE.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcbench.results import load_run
from tests.conftest import REPO

pytestmark = pytest.mark.slurm

CLUSTER = Path(os.environ.get("HPCBENCH_SLURM_DIR", "/tmp/hpcbench-slurm"))
TINY_COLLECTIVES = ("benchmark=collectives collectives.collectives=[all_reduce,all_gather] collectives.max_bytes=1K "
                    "collectives.step_factor=8 collectives.iters=3 collectives.warmup_iters=1 dist.timeout_s=60")


@pytest.fixture(scope="module")
def slurm_env():
    conf = CLUSTER / "slurm.conf"
    env = {**os.environ, "SLURM_CONF": str(conf), "GLOO_SOCKET_IFNAME": "lo",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("TRITON_INTERPRET", None)
    env.pop("HPCBENCH_RUN_ID", None)
    up = conf.is_file() and subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True,
                                           text=True).stdout.strip() in ("idle", "mixed", "allocated")
    if not up:
        if os.environ.get("HPCBENCH_SLURM_REQUIRED"):
            pytest.fail(f"no local SLURM cluster answering at {conf} (bash slurm/ci/local-cluster.sh start)")
        pytest.skip("no local SLURM cluster: run `bash slurm/ci/local-cluster.sh start` as root")
    return env


def submit(env, tmp_path, template, *sbatch_args, **variables):
    """slurm/submit with these variables; returns the CompletedProcess (stdout: the job id).

    "--wait" waits here instead of in sbatch: sbatch polls the job at 2, 4, 8, then every 10 s,
    idling up to 10 s past each job's end; this polls every 0.2 s and fails as sbatch --wait does
    (exit 1) unless every task of the job COMPLETED with exit code 0."""
    variables = {"HPCBENCH_RESULTS": str(tmp_path / "results"), "GPUS_PER_NODE": "0", "TASKS_PER_NODE": "1",
                 **variables}
    wait = "--wait" in sbatch_args
    out = subprocess.run([str(REPO / "slurm" / "submit"), template, *(a for a in sbatch_args if a != "--wait")],
                         cwd=tmp_path, env={**env, **variables}, capture_output=True, text=True, timeout=600)
    if wait and out.returncode == 0:
        job = out.stdout.strip().split(";")[0]
        deadline = time.monotonic() + 600
        while job in _queued(env, job) and time.monotonic() < deadline:
            time.sleep(0.2)
        states = _states(env, job)
        if not states or any(s != ("COMPLETED", "0:0") for s in states):
            out.returncode, out.stderr = 1, out.stderr + f"job {job} ended: {states}\n"
    return out


def _states(env, job) -> list[tuple[str, str]]:
    """(JobState, ExitCode) of each task of `job` (the controller keeps ended jobs for MinJobAge)."""
    text = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True).stdout
    fields = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in text.splitlines()]
    return [(f.get("JobState"), f.get("ExitCode")) for f in fields]


def _queued(env, job: str | None = None) -> list[str]:
    """Ids of the queued jobs (array tasks as JOB_TASK, all of them under -j JOB)."""
    ids = subprocess.run(["squeue", "-h", "-o", "%F", *(["-j", job] if job else [])], env=env,
                         capture_output=True, text=True).stdout.split()
    return ids


def _job_log(tmp_path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted((tmp_path / "results").glob("slurm-*.out")))


def test_missing_variable_fails_at_submit_naming_it(slurm_env, tmp_path):
    before = _queued(slurm_env)
    out = submit(slurm_env, tmp_path, "single_node", GPUS_PER_NODE="")
    assert out.returncode == 2
    assert "single_node needs HPCBENCH_OVERRIDES GPUS_PER_NODE" in out.stderr and "nothing was submitted" in out.stderr
    out = submit(slurm_env, tmp_path, "multi_node", HPCBENCH_OVERRIDES="benchmark=collectives")
    assert out.returncode == 2 and "multi_node needs NODES" in out.stderr
    out = submit(slurm_env, tmp_path, "no_such_template")
    assert out.returncode == 2 and "available: fleet multi_node single_node sweep_array" in out.stderr
    assert _queued(slurm_env) == before


def test_single_node_template_runs_two_ranks_into_one_run(slurm_env, tmp_path):
    out = submit(slurm_env, tmp_path, "single_node", "--wait", TASKS_PER_NODE="2", HPCBENCH_OVERRIDES=TINY_COLLECTIVES)
    job = out.stdout.strip()
    assert out.returncode == 0, out.stderr + _job_log(tmp_path)
    runs = [p.name for p in (tmp_path / "results").iterdir() if p.is_dir()]
    assert runs == [f"slurm-{job}"]  # one run per job, keyed by its id, written by rank 0 alone
    df = load_run(tmp_path / "results" / f"slurm-{job}")
    meta = df.attrs["metadata"]
    assert meta["status"] == "complete" and meta["slurm_job_id"] == job
    assert meta["distributed"]["world_size"] == 2 and meta["distributed"]["backend"] == "gloo"
    m = df[df.record == "measurement"]
    assert len(m) > 0 and (m.status == "ok").all() and (m.wrong == 0).all()


def test_multi_node_template_merges_two_torchrun_nodes_into_one_run(slurm_env, tmp_path):
    # two torchrun "node" processes on this one host, c10d rendezvous on the job's head node
    out = submit(slurm_env, tmp_path, "multi_node", "--wait", NODES="1", TORCHRUN_NODES="2",
                 HPCBENCH_OVERRIDES=TINY_COLLECTIVES)
    job = out.stdout.strip()
    assert out.returncode == 0, out.stderr + _job_log(tmp_path)
    runs = [p.name for p in (tmp_path / "results").iterdir() if p.is_dir()]
    assert runs == [f"slurm-{job}"]
    df = load_run(tmp_path / "results" / f"slurm-{job}")
    meta = df.attrs["metadata"]
    assert meta["status"] == "complete" and meta["distributed"]["world_size"] == 2
    assert len(meta["distributed"]["hosts"]) == 2
    assert (df[df.record == "measurement"].status == "ok").all()


def test_array_sweep_writes_one_run_per_task_and_resubmission_resumes(slurm_env, tmp_path):
    sweep = tmp_path / "gemm_tiny.txt"
    sweep.write_text("# one point per line\n"
                     "gemm.shapes=custom gemm.custom=[[48,40,160]] gemm.backends=[torch] gemm.dtypes=[bf16]\n\n"
                     "gemm.shapes=custom 'gemm.custom=[[32, 32, 128]]' gemm.backends=[torch] gemm.dtypes=[bf16]"
                     "  # quotes group, comments end the line\r\n")
    out = submit(slurm_env, tmp_path, "sweep_array", "--wait", HPCBENCH_SWEEP=str(sweep))
    assert out.returncode == 0, out.stderr + _job_log(tmp_path)
    runs = {k: tmp_path / "results" / f"sweep-gemm_tiny_{k}" for k in (0, 1)}
    first = {k: load_run(run) for k, run in runs.items()}
    assert [int(first[k].M.iloc[0]) for k in (0, 1)] == [48, 32]
    assert all(df.attrs["metadata"]["status"] == "complete" for df in first.values())
    again = submit(slurm_env, tmp_path, "sweep_array", "--wait", HPCBENCH_SWEEP=str(sweep))
    assert again.returncode == 0, again.stderr + _job_log(tmp_path)
    for k, run in runs.items():
        df = load_run(run)
        meta = df.attrs["metadata"]
        assert len(df) == len(first[k]) and meta["resumed"] and len(meta["attempts"]) == 1
        assert meta["slurm_job_id"] != first[k].attrs["metadata"]["slurm_job_id"]


def test_fleet_template_runs_one_node_per_array_task_and_fleet_ranks_them(slurm_env, tmp_path, capsys):
    from hpcbench.analysis import fleet_cli

    # the fingerprint is the template's default; a tiny gemm keeps two "nodes" quick on one host
    out = submit(slurm_env, tmp_path, "fleet", "--wait", "--array=0-1", BENCHMARK="gemm",
                 HPCBENCH_FLEET_NAME="fleet-ci",
                 HPCBENCH_OVERRIDES="gemm.shapes=custom gemm.custom=[[48,40,160]] gemm.backends=[torch] gemm.dtypes=[bf16]")
    assert out.returncode == 0, out.stderr + _job_log(tmp_path)
    runs = sorted((tmp_path / "results").glob("fleet-ci_*"))
    assert [r.name for r in runs] == ["fleet-ci_0", "fleet-ci_1"]
    for run in runs:
        meta = load_run(run).attrs["metadata"]
        assert meta["status"] == "complete" and meta["suite"] == ["gemm"] and meta["slurm_job_id"]
    report = tmp_path / "fleet-report"
    assert fleet_cli.main([*map(str, runs), "--out", str(report), "--fail-on-outlier"]) == 0  # 2 nodes: ranked
    text = capsys.readouterr().out
    assert "fleet: 2 nodes of gemm" in text and "(fleet-ci_0)" in text  # one host: the run id tells them apart
    assert (report / "fleet.csv").is_file() and list(report.glob("fleet-*.png"))
    assert fleet_cli.main([str(runs[0]), "--out", str(report)]) == 2  # one node: nothing to rank
    assert "one node" in capsys.readouterr().err


def test_scancel_keeps_completed_rows_and_marks_the_run_cut_short(slurm_env, tmp_path):
    out = submit(slurm_env, tmp_path, "single_node",
                 HPCBENCH_OVERRIDES="gemm.shapes=smoke timing.cpu.min_reps=20 timing.cpu.max_reps=20")
    job = out.stdout.strip()
    assert out.returncode == 0, out.stderr
    rows = tmp_path / "results" / f"slurm-{job}" / "rows.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (not rows.is_file() or rows.read_text().count("\n") < 2):
        time.sleep(0.5)
    subprocess.run(["scancel", job], env=slurm_env, check=True)
    while time.monotonic() < deadline and job in _queued(slurm_env):
        time.sleep(0.5)
    meta = json.loads((rows.parent / "metadata.json").read_text())
    df = load_run(rows.parent)
    assert meta["status"] == "terminated" and meta["cut_short"], _job_log(tmp_path)
    # skipped: the block-scaled torch._scaled_mm baseline, which needs CUDA >= 12.9 on sm_90
    assert len(df) >= 2 and set(df.status) <= {"ok", "skipped"}
    assert meta["points"]["ok"] + meta["points"]["skipped"] == len(df) and not meta["points"]["failed"]


def test_submitit_launcher_runs_a_two_point_sweep(slurm_env, tmp_path):
    exe = Path(sys.executable).with_name("hpcbench")
    out = subprocess.run([str(exe), "-m", "hydra/launcher=slurm", "gemm.shapes=custom", "gemm.custom=[[48,40,160]]",
                          "gemm.backends=[torch]", "gemm.dtypes=[bf16],[fp8]"],
                         cwd=tmp_path, env={**slurm_env, "GPUS_PER_NODE": "0", "TASKS_PER_NODE": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    metas = sorted((tmp_path / "results").glob("slurm-*/[0-9]*/metadata.json"))
    assert len(metas) == 2, out.stderr[-3000:]
    dtypes = set()
    for path in metas:
        df = load_run(path.parent)
        meta = df.attrs["metadata"]
        assert meta["status"] == "complete" and meta["slurm_job_id"] and meta["run_id"].startswith("slurm-")
        assert (df[df.kernel != "torch_fp8_block"].status == "ok").all()  # that one needs CUDA >= 12.9
        dtypes |= set(df.dtype)
    assert dtypes == {"bf16", "fp8"}
