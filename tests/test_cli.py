"""The `hpcbench` console script end to end, as a user runs it."""

import json

import pytest

from conftest import TINY
from hpcbench.core.cli import main
from hpcbench.results import find_runs, load_run


@pytest.mark.slow
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


def test_show_prints_a_stored_run(cli, tmp_path):
    assert cli(*TINY, "gemm.dtypes=[bf16]").returncode == 0
    (run,) = find_runs(tmp_path / "results")
    out = cli("show", str(run))
    assert out.returncode == 0 and "triton_bf16" in out.stdout and "complete" in out.stdout


@pytest.mark.parametrize("args,needle", [
    (["benchmark=nope"], "benchmark/nope"),
    (["device=tpu"], "device/tpu"),
    (["gemm.shapes=nope"], "gemm.shapes='nope'"),
    (["gemm.dtypes=[fp16]"], "gemm.dtypes"),
    (["benchmark=overlap", "overlap.compute=nope"], "overlap.compute='nope' (available: gemm, memory)"),
    (["dist.backend=mpi"], "dist.backend"),
    (["benchmark=overlap", "dist.backend=nccl"], "dist.backend=nccl needs a CUDA device"),
    (["timing.cpu.min_reps=0"], "timing: need warmup >= 0 and 1 <= min_reps <= max_reps"),
    (["timing.gpu.cuda_graph=sometimes"], "cuda_graph must be auto, true or false"),
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


@pytest.mark.slow
def test_a_user_error_in_a_subprocess_is_one_line(cli, tmp_path):
    out = cli("gemm.shapes=nope")  # the one end-to-end check of the console script's exit path
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "hpcbench: error: gemm.shapes='nope': no such preset (available: deepseek_v3, k_sweep, llama3_405b, "
        "llama3_70b, llama3_8b, smoke, square, custom)"]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_help_lists_config_groups(cli):
    out = cli("--help")
    assert out.returncode == 0
    assert "== Config groups ==" in out.stdout and "gemm" in out.stdout.split("== Config groups ==")[1].splitlines()[1]
    assert "device: auto, cpu, cuda" in out.stdout and "hpcbench show" in out.stdout


def test_cfg_job_prints_the_composed_config(cli):
    out = cli("--cfg", "job", "gemm.shapes=deepseek_v3")
    assert out.returncode == 0 and "shapes: deepseek_v3" in out.stdout


@pytest.mark.slow
def test_multirun_sweep_writes_one_run_per_job(cli, tmp_path):
    out = cli("-m", *TINY, "gemm.dtypes=[bf16]", "gemm.backends=[torch]", "gemm.seed=1,2")
    assert out.returncode == 0, out.stderr
    runs = find_runs(tmp_path / "results")
    assert len(runs) == 2 and {r.name for r in runs} == {"0", "1"}
    assert runs[0].parent == runs[1].parent  # one sweep directory
    seeds = {json.loads((r / "rows.jsonl").read_text().splitlines()[0])["run_id"] for r in runs}
    assert len(seeds) == 2


def test_slurm_job_id_names_the_run_directory(cli, tmp_path):
    out = cli(*TINY, "gemm.dtypes=[bf16]", "gemm.backends=[torch]", env={"SLURM_JOB_ID": "4242"})
    assert out.returncode == 0, out.stderr
    df = load_run(tmp_path / "results" / "slurm-4242")
    assert df.attrs["metadata"]["slurm_job_id"] == "4242" and len(df) == 1
