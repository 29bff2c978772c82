"""Bad input, table-driven: each case is one line on stderr naming what was wrong, exit 2, and
nothing left in results/. Calls go through the CLI's main function in-process (the fast tier);
slurm/submit, a shell script, is run as one."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from hpcbench.core.cli import main


@pytest.fixture
def stored(tmp_path_factory) -> Path:
    """A stored run to point the read commands at (written by the writer, not by a benchmark)."""
    from hpcbench.results.writer import RunWriter

    run = tmp_path_factory.mktemp("stored") / "run-1"
    writer = RunWriter(run)
    writer.write_metadata({"run_id": "run-1", "suite": ["gemm"], "status": "complete", "schema_version": 2,
                           "points": {"ok": 1, "failed": 0, "skipped": 0}})
    writer.append({"benchmark": "gemm", "point": 0, "status": "ok", "median_ms": 1.0})
    writer.close()
    return run


def _setup(case: str, tmp: Path, stored: Path) -> list[str]:
    """Arguments of each case, with the files it needs made under `tmp`."""
    if case == "export-missing-folder":
        return ["export", str(stored), str(tmp / "no" / "such" / "x.parquet")]
    if case == "export-to-a-folder":
        (tmp / "out.parquet").mkdir()
        return ["export", str(stored), str(tmp / "out.parquet")]
    if case == "export-not-parquet":
        return ["export", str(stored), str(tmp / "x.csv")]
    if case == "show-metadata-a-list":
        bad = tmp / "bad"
        bad.mkdir()
        (bad / "metadata.json").write_text(json.dumps([1, 2]))
        return ["show", str(bad)]
    if case == "show-metadata-a-number":
        bad = tmp / "bad"
        bad.mkdir()
        (bad / "metadata.json").write_text("3")
        return ["show", str(bad)]
    if case == "compile-unknown-arch":
        return ["compile-kernels", "--arch", "sm_12", "--list"]
    if case == "compile-unknown-arch-in-list":
        return ["compile-kernels", "--arch", "sm_90,sm_91", "--list"]
    raise KeyError(case)


CASES = [  # (case or argv, words the one line must hold)
    ("export-missing-folder", "does not exist"),
    ("export-to-a-folder", "name a .parquet file"),
    ("export-not-parquet", "name a .parquet file"),
    ("show-metadata-a-list", "a JSON list, not an object"),
    ("show-metadata-a-number", "a JSON int, not an object"),
    ("compile-unknown-arch", "--arch sm_12: not an architecture hpcbench knows (known: sm_70"),
    ("compile-unknown-arch-in-list", "--arch sm_91: not an architecture"),
    (["benchmark=collectives", "dist.nproc=1000"], "dist.nproc=1000: more CPU ranks than"),
    (["benchmark=pipeline", "dist.nproc=64", "dist.max_ranks_per_core=64", "dist.rank_memory_mb=1000000"],
     "dist.rank_memory_mb=1000000 MB"),
    (["dist.max_ranks_per_core=0"], "dist.max_ranks_per_core=0: use a positive integer"),
    (["dist.rank_memory_mb=-5"], "dist.rank_memory_mb=-5: use a positive integer"),
    (["dist.timeout_s=0"], "dist.timeout_s=0.0: use a positive number of seconds"),
]


@pytest.mark.parametrize("case,words", CASES, ids=lambda c: c if isinstance(c, str) else None)
def test_one_line_exit_2_and_nothing_left(case, words, tmp_path, stored, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = case if isinstance(case, list) else _setup(case, tmp_path, stored)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines() or captured.out.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and words in lines[0], lines
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_plugin_that_does_not_import_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPCBENCH_FAMILIES", "no_such_package.family")
    assert main(["benchmark=gemm"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["hpcbench: error: HPCBENCH_FAMILIES: no_such_package.family does not import "
                     "(ModuleNotFoundError: No module named 'no_such_package')"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.subprocess
def test_submit_without_sbatch_is_one_line_and_creates_nothing(tmp_path):
    tools = tmp_path / "bin"  # the tools the script uses, and no sbatch
    tools.mkdir()
    for tool in ("bash", "sed", "ls", "tr", "grep", "basename", "dirname", "mkdir", "cat", "env"):
        if (found := shutil.which(tool)):
            (tools / tool).symlink_to(found)
    results = tmp_path / "results"
    env = {"PATH": str(tools), "HOME": str(tmp_path), "HPCBENCH_RESULTS": str(results), "GPUS_PER_NODE": "0",
           "TASKS_PER_NODE": "1", "HPCBENCH_OVERRIDES": "benchmark=gemm"}
    out = subprocess.run([str(tools / "bash"), str(REPO / "slurm" / "submit"), "single_node"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "slurm/submit: error: sbatch is not on PATH: run slurm/submit on a SLURM login node (nothing was submitted)"]
    assert not results.exists()
    assert os.environ.get("PATH")  # this process's PATH untouched
