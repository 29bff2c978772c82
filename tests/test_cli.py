"""The `hpcbench` console script end to end, as a user runs it."""

import json
import re

import pytest

from conftest import TINY
from hpcbench.core.cli import main
from hpcbench.results import find_runs, load_run


@pytest.mark.subprocess
def test_default_run_writes_a_complete_results_run(cli, tmp_path):
    out = cli()  # the no-argument default (the quick GEMM suite), CPU fallback at smoke size
    assert out.returncode == 0, out.stderr
    assert "GEMM" in out.stdout and "CPU fallback" in out.stdout and "triton_fp8_block" in out.stdout
    (run,) = find_runs(tmp_path / "results")
    df = load_run(run)
    assert len(df) == 3 * 8  # 3 smoke shapes x 8 kernels
    block = df["kernel"] == "torch_fp8_block"  # cuBLASLt's 1x128/128x128 scaling: CUDA >= 12.9 on sm_90 only
    assert set(df.loc[~block, "status"]) == {"ok"} and set(df.loc[block, "status"]) == {"skipped"}
    assert df["fallback"].all() and set(df["device_kind"]) == {"cpu"}
    meta = df.attrs["metadata"]
    for key in ("git_sha", "git_dirty", "hostname", "cpu_model", "torch_version", "triton_version",
                "python_version", "world_size", "schema_version", "slurm_job_id", "gpu_count", "started_at"):
        assert key in meta, key
    assert meta["status"] == "complete" and meta["points"] == {"ok": 21, "failed": 0, "skipped": 3}
    assert meta["environment"]["TRITON_INTERPRET"] == "1"
    assert set(meta["triton_interpreter_defects"]) == {"bf16_dot", "fp8_cast_rounding", "bf16_cast_rounding"}
    assert "gemm:" in (run / "config.yaml").read_text()
    # `show` prints the stored run (here rather than after a run of its own: one run fewer)
    shown = cli("show", str(run))
    assert shown.returncode == 0 and "triton_fp8_block" in shown.stdout and "complete" in shown.stdout


@pytest.mark.parametrize("args,needle", [
    (["benchmark=nope"], "benchmark/nope"),
    (["device=tpu"], "device/tpu"),
    (["gemm.shapes=nope"], "gemm.shapes='nope'"),
    (["gemm.dtypes=[fp16]"], "gemm.dtypes"),
    (["benchmark=overlap", "overlap.compute=nope"], "overlap.compute='nope' (available: gemm, memory)"),
    (["dist.backend=mpi"], "dist.backend"),
    (["benchmark=overlap", "dist.backend=nccl"], "dist.backend=nccl needs a CUDA device"),
    (["timing.cpu.min_reps=0"], "timing.cpu.min_reps=0: use an integer >= 1"),
    (["timing.gpu.cuda_graph=sometimes"], "timing.gpu.cuda_graph='sometimes': use auto, true or false"),
    (["-m", "gemm.shapes=smoke,nope"], "gemm.shapes='nope': no such preset"),
    (["--multirun", "gemm.dtypes=[bf16],[fp4]"], "gemm.dtypes[0]='fp4' (available: bf16, fp8)"),
    (["gemm.shapes=custom", "gemm.custom=[[0,8,8]]"], "positive"),
    (["gemm.shapes=custom", "gemm.custom=[[-8,8,8]]"], "positive"),
    (["gemm.shapes=custom", "gemm.custom=[[8.5,8,8]]"], "gemm.custom"),
    (["gemm.bogus=1"], "gemm.bogus"),
    (["device=cuda"], "CUDA"),
])
def test_user_errors_are_one_line_with_exit_status_2_and_leave_nothing(args, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # in-process, through the CLI's main function
    assert main(list(args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpcbench: error:") and needle in lines[0], lines
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "results"]) and not any(tmp_path.glob("results/*"))


def test_an_unwritable_results_root_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([f"results_root={blocker}/results"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hpcbench: error: results_root={blocker}/results: cannot write")


@pytest.mark.subprocess
def test_a_user_error_in_a_subprocess_is_one_line(cli, tmp_path):
    out = cli("gemm.shapes=nope")  # the one end-to-end check of the console script's exit path
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "hpcbench: error: gemm.shapes='nope': no such preset (available: deepseek_v3, k_sweep, llama3_405b, "
        "llama3_70b, llama3_8b, smoke, square, custom)"]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.mark.subprocess
def test_help_lists_config_groups(cli):
    out = cli("--help")
    assert out.returncode == 0
    assert "== Config groups ==" in out.stdout and "gemm" in out.stdout.split("== Config groups ==")[1].splitlines()[1]
    assert "device: auto, cpu, cuda" in out.stdout and "hpcbench show" in out.stdout
    # every subcommand, built-in or a family's, once, with its arguments and one line of what it does
    section = out.stdout.split("Subcommands")[1].split("\n\n")[0].splitlines()[1:]
    words = [line.split()[1] for line in section]
    assert words == ["show", "compare", "report", "export", "compile-kernels", "project", "fleet", "simulate"]
    assert all(len(line.split("  ")) > 2 and line.split("  ")[-1].strip() for line in section), section


@pytest.mark.subprocess
def test_cfg_job_prints_the_composed_config(cli):
    out = cli("--cfg", "job", "gemm.shapes=deepseek_v3")
    assert out.returncode == 0 and "shapes: deepseek_v3" in out.stdout


@pytest.mark.subprocess
def test_multirun_sweep_writes_one_run_per_job(cli, tmp_path):
    out = cli("-m", *TINY, "gemm.dtypes=[bf16]", "gemm.backends=[torch]", "gemm.seed=1,2")
    assert out.returncode == 0, out.stderr
    runs = sorted(find_runs(tmp_path / "results"), key=lambda r: r.name)
    assert [r.name for r in runs] == ["0", "1"]
    sweep = runs[0].parent
    assert runs[1].parent == sweep and sweep.parent == tmp_path / "results"  # one sweep directory
    assert re.fullmatch(r"\d{8}-\d{6}-\d{6}", sweep.name), sweep.name  # the invocation's timestamp id
    for job, seed in zip(runs, (1, 2)):
        # each job's rows and metadata carry <sweep id>/<job number>, and the job ran its own point
        rows = [json.loads(line) for line in (job / "rows.jsonl").read_text().splitlines()]
        assert rows and {r["run_id"] for r in rows} == {f"{sweep.name}/{job.name}"}
        assert load_run(job).attrs["metadata"]["run_id"] == f"{sweep.name}/{job.name}"
        assert f"seed: {seed}\n" in (job / "config.yaml").read_text()


def test_run_id_is_hpcbench_run_id_else_the_slurm_job_else_a_timestamp(monkeypatch):
    import datetime

    from hpcbench.core import cli as cli_module

    def run_id(**env) -> str:
        for key in ("HPCBENCH_RUN_ID", "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
            if key in env:
                monkeypatch.setenv(key, env[key])
            else:
                monkeypatch.delenv(key, raising=False)
        monkeypatch.setitem(cli_module._state, "run_id", None)  # a new invocation
        return cli_module.run_id()

    clock = [datetime.datetime(2026, 1, 2, 3, 4, 5, 1)]

    class Clock(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return clock[0]

    monkeypatch.setattr(cli_module._dt, "datetime", Clock)
    assert run_id(HPCBENCH_RUN_ID="mine", SLURM_JOB_ID="4242") == "mine"
    assert run_id(HPCBENCH_RUN_ID="", SLURM_JOB_ID="4242") == "slurm-4242"  # empty: not set
    assert run_id(SLURM_JOB_ID="4243", SLURM_ARRAY_JOB_ID="4240", SLURM_ARRAY_TASK_ID="3") == "slurm-4240_3"
    assert run_id(SLURM_JOB_ID="4243", SLURM_ARRAY_TASK_ID="") == "slurm-4243"
    first = run_id()
    assert first == "20260102-030405-000001"
    clock[0] = datetime.datetime(2026, 1, 2, 3, 4, 5, 2)
    assert cli_module.run_id() == first  # one id per invocation: every rank and resolver shares it
    second = run_id()  # another invocation started in the same second: another directory
    assert second == "20260102-030405-000002" != first


@pytest.mark.subprocess
def test_slurm_job_id_names_the_run_directory(cli, tmp_path):
    out = cli(*TINY, "gemm.dtypes=[bf16]", "gemm.backends=[torch]", env={"SLURM_JOB_ID": "4242"})
    assert out.returncode == 0, out.stderr
    df = load_run(tmp_path / "results" / "slurm-4242")
    assert df.attrs["metadata"]["slurm_job_id"] == "4242" and len(df) == 1
