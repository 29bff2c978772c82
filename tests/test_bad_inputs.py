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


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A folder of stored runs to point the read commands at (written by the writer, not by a
    benchmark): run-1 and run-2 (one GEMM point each), nometa (no metadata.json), afile (a file)."""
    from hpcbench.results.writer import RunWriter

    folder = tmp_path_factory.mktemp("stored")
    for name in ("run-1", "run-2"):
        writer = RunWriter(folder / name)
        writer.write_metadata({"run_id": name, "suite": ["gemm"], "status": "complete", "schema_version": 2,
                               "device_name": "cpu", "points": {"ok": 1, "failed": 0, "skipped": 0}})
        writer.append({"benchmark": "gemm", "point": 0, "status": "ok", "M": 8, "N": 8, "K": 8, "kernel": "torch_bf16",
                       "pass": "fprop", "median_s": 1e-3, "samples_s": [1e-3, 1.1e-3, 0.9e-3]})
        writer.close()
    (folder / "nometa").mkdir()
    (folder / "afile").write_text("x")
    return folder / "run-1"


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


# One command line per case: ENV=VALUE words first set the environment; {A} and {B} are stored runs,
# {S} their folder. Each one line must hold its words. Every family and every subcommand has at
# least three cases.
LINES = [
    ('gemm.dtypes=[fp4]', "gemm.dtypes[0]='fp4' (available: bf16, fp8)"),
    ('gemm.fp8_scalings=[tile]', "gemm.fp8_scalings[0]='tile' (available: tensor, row, block)"),
    ('gemm.backends=[cutlass]', "gemm.backends[0]='cutlass' (available: triton, torch)"),
    ('gemm.passes=[fwd]', "gemm.passes[0]='fwd' (available: fprop, dgrad, wgrad)"),
    ('gemm.shapes=custom gemm.custom=[[8,8]]', 'gemm.custom: expected entries of 3 sizes, got [8, 8]'),
    ('gemm.shapes=custom gemm.custom=[]', 'gemm.custom: no shapes'),
    ('gemm.seed=abc', "gemm.seed: Value 'abc' of type 'str' could not be converted to Integer"),
    ('gemm.tol_bf16=-1', 'gemm.tol_bf16=-1.0: use a number > 0'),
    ('gemm.scaled_mm_accum=[slow]', "gemm.scaled_mm_accum[0]='slow' (available: fast, fp32)"),
    ('gemm.fast_accum_bits=0', 'gemm.fast_accum_bits=0: use an integer from 1 to 52 (mantissa bits)'),
    ('gemm.interpret_max_flops=-1', 'gemm.interpret_max_flops=-1.0: use a number > 0'),
    ('gemm.roofline_pct_gemm=2', 'gemm.roofline_pct_gemm must be in (0, 1]'),
    ('gemm.mamf_run=/nonexistent', 'gemm.mamf_run=/nonexistent: no such file or directory'),
    ('gemm.dtypes=[]', 'gemm: the dtypes/fp8_scalings/backends selection leaves no kernel to'),
    ('benchmark=grouped_gemm grouped_gemm.layouts=[diagonal]', "grouped_gemm.layouts[0]='diagonal' (available: contiguous, masked,"),
    ('benchmark=grouped_gemm grouped_gemm.dtypes=[int8]', "grouped_gemm.dtypes[0]='int8' (available: bf16, fp8)"),
    ('benchmark=grouped_gemm grouped_gemm.routing=random', "grouped_gemm.routing='random' (available: uniform, skewed)"),
    ('benchmark=grouped_gemm grouped_gemm.routing=skewed grouped_gemm.imbalance=[0.5]', 'grouped_gemm.imbalance=[0.5]: use ratios >= 1'),
    ('benchmark=grouped_gemm grouped_gemm.alignment=100', 'grouped_gemm.alignment=100: must be a positive multiple of 64 (a tile'),
    ('benchmark=grouped_gemm grouped_gemm.empty_experts=-1', 'grouped_gemm.empty_experts=-1: must be >= 0'),
    ('benchmark=grouped_gemm grouped_gemm.shapes=nope', "grouped_gemm.shapes='nope': no such preset (available: deepseek_v3,"),
    ('benchmark=grouped_gemm grouped_gemm.backends=[]', 'grouped_gemm.backends is empty: nothing to run'),
    ('benchmark=mamf mamf.preset=huge', "mamf.preset='huge': no such preset (available: auto, tiny, quick,"),
    ('benchmark=mamf mamf.dtypes=[fp16]', "mamf.dtypes[0]='fp16' (available: bf16, fp8)"),
    ('benchmark=mamf mamf.m_range=[0,10]', 'mamf.m_range=[0, 10]: a range is [start, stop, step] (three integers)'),
    ('benchmark=mamf mamf.warmup_s=-1', 'mamf.warmup_s must be >= 0 (or null: 30 on a GPU, 0 on the CPU'),
    ('benchmark=mamf mamf.m=[-5]', 'mamf.m=[-5]: sizes must be positive integers'),
    ('benchmark=collectives collectives.collectives=[all_scream]', "collectives.collectives[0]='all_scream' (available: all_reduce,"),
    ('benchmark=collectives collectives.min_bytes=1X', "collectives.min_bytes='1X' is not a size (use bytes or a K/M/G"),
    ('benchmark=collectives collectives.max_bytes=4 collectives.min_bytes=8', "collectives.max_bytes='4': smaller than collectives.min_bytes='8'"),
    ('benchmark=collectives collectives.step_factor=1', 'collectives.step_factor=1.0: use a factor > 1 (or a'),
    ('benchmark=collectives collectives.dtype=float8', "collectives.dtype='float8' (available: float32, float64, float16,"),
    ('benchmark=collectives collectives.op=median', "collectives.op='median' (available: sum, prod, min, max, avg)"),
    ('benchmark=collectives collectives.iters=0', 'collectives.iters=0: use a number >= 1'),
    ('benchmark=collectives collectives.root=5', 'collectives.root=5: not a rank of this world of 2 (use 0 to 1)'),
    ('benchmark=collectives collectives.placements=[sideways]', "collectives.placements[0]='sideways' (available: out_of_place,"),
    ('benchmark=collectives collectives.project_world_sizes=[-4]', 'collectives.project_world_sizes=[-4]: -4 is not a number > 0 (every'),
    ('benchmark=overlap overlap.collective=gossip', "overlap.collective='gossip' (available: all_reduce, all_gather,"),
    ('benchmark=overlap overlap.comm_sizes=[0]', "overlap.comm_sizes='0': use a size > 0 (bytes or a K/M/G suffix, e.g."),
    ('benchmark=overlap overlap.iters=-1', 'overlap.iters=-1: use a number >= 1'),
    ('benchmark=overlap overlap.gemm_mnk=[1,2]', 'overlap.gemm_mnk must be [M, N, K] with positive sizes'),
    ('benchmark=overlap overlap.comm_priority=urgent', "overlap.comm_priority='urgent' (available: default, high)"),
    ('benchmark=ddp_overlap ddp_overlap.bucket_cap_mb=[0]', 'ddp_overlap.bucket_cap_mb=[0.0]: 0.0 is not a number > 0 (every entry'),
    ('benchmark=ddp_overlap ddp_overlap.iters=0', 'ddp_overlap.iters=0: use a number >= 1'),
    ('benchmark=ddp_overlap ddp_overlap.width=-1', 'ddp_overlap.width=-1: use a number >= 0 (0 = auto)'),
    ('benchmark=ddp_overlap ddp_overlap.rtol=-1', 'ddp_overlap.rtol=-1.0: use a number > 0'),
    ('benchmark=moe_alltoall moe_alltoall.preset=deepseek_v4', "moe_alltoall.preset='deepseek_v4' (available: none, deepseek_v3)"),
    ('benchmark=moe_alltoall moe_alltoall.routing=random', "moe_alltoall.routing='random' (available: uniform, skewed,"),
    ('benchmark=moe_alltoall moe_alltoall.preset=deepseek_v3 moe_alltoall.top_k=[64]', 'moe_alltoall: top_k <= 32 and num_experts <= 32767 (the exact check'),
    ('benchmark=moe_alltoall moe_alltoall.preset=deepseek_v3 moe_alltoall.dispatch_dtypes=[fp4]', "moe_alltoall.dispatch_dtypes[0]='fp4' (available: bf16, fp8)"),
    ('benchmark=moe_alltoall moe_alltoall.preset=deepseek_v3 moe_alltoall.layouts=[diagonal]', "moe_alltoall.layouts[0]='diagonal' (available: per_rank, per_expert)"),
    ('benchmark=moe_alltoall moe_alltoall.preset=deepseek_v3 moe_alltoall.num_experts=[3]', 'moe_alltoall.top_k=8 is more than num_experts=3'),
    ('benchmark=moe_alltoall moe_alltoall.preset=deepseek_v3 moe_alltoall.routing=matrix', 'moe_alltoall.traffic_matrix: routing=matrix needs a file of W x W'),
    ('benchmark=moe_alltoall moe_alltoall.preset=deepseek_v3 moe_alltoall.hidden=[100] moe_alltoall.dispatch_dtypes=[fp8]', 'moe_alltoall.hidden=100: FP8 dispatch needs a multiple of 128 (one'),
    ('benchmark=pipeline pipeline.schedules=[zigzag]', "pipeline.schedules[0]='zigzag' (available: gpipe, 1f1b,"),
    ('benchmark=pipeline pipeline.model=cnn', "pipeline.model='cnn' (available: mlp, transformer)"),
    ('benchmark=pipeline pipeline.dtype=float16', "pipeline.dtype='float16' (available: auto, float32, bfloat16)"),
    ('benchmark=pipeline pipeline.steps=0', 'pipeline.steps=0: use a number >= 1'),
    ('benchmark=pipeline pipeline.schedules=[dualpipe] pipeline.microbatches=5', "pipeline.schedules=['dualpipe']: none runs 5 microbatches and 8"),
    ('benchmark=pipeline pipeline.synthetic.enabled=true pipeline.synthetic.F_ms=-1', 'pipeline.synthetic: F_ms and B_ms must be positive and 0 < W_ms < B_ms'),
    ('benchmark=pipeline pipeline.batch_p2p=maybe', "pipeline.batch_p2p='maybe' (available: auto, true, false)"),
    ('benchmark=whatif whatif/model=gpt5', "In 'benchmark/whatif': Could not find 'whatif/model/gpt5' (available:"),
    ('benchmark=whatif whatif/cluster=tpu', "In 'benchmark/whatif': Could not find 'whatif/cluster/tpu'"),
    ('benchmark=whatif whatif.costs_from=[/nonexistent]', 'whatif.costs_from: /nonexistent does not exist'),
    ('benchmark=whatif whatif.costs_from=[{A}]', "whatif.costs_from: {A} was measured on 'cpu', not a H800 (h800);"),
    ('benchmark=whatif whatif.parallel.gpus=0', 'whatif.parallel.gpus must be positive (got 0)'),
    ('benchmark=fingerprint fingerprint.copy_bytes.cpu=0', "fingerprint.copy_bytes.cpu='0': use a size > 0 (bytes or a K/M/G"),
    ('benchmark=fingerprint fingerprint.all_reduce_bytes.cpu=abc', "fingerprint.all_reduce_bytes.cpu='abc' is not a size (use bytes or a"),
    ('benchmark=fingerprint gemm.dtypes=[fp4]', "gemm.dtypes[0]='fp4' (available: bf16, fp8)"),
    ('timing.cpu.max_reps=abc', "timing.cpu.max_reps='abc' with min_reps=3: use an integer >= min_reps"),
    ('timing.cpu.min_reps=-1', 'timing.cpu.min_reps=-1: use an integer >= 1'),
    ('timing.cpu.budget_s=-1', 'timing.cpu.budget_s=-1: use a number of seconds > 0'),
    ('timing.gpu.flush_l2=maybe', "timing.gpu.flush_l2='maybe': use true or false"),
    ('results_root={S}/afile', 'results_root={S}/afile: cannot write there (File exists); use a'),
    ('dist.nproc=0', "dist.nproc='0': use auto or a positive integer"),
    ('dist.nproc=abc', "dist.nproc='abc': use auto or a positive integer"),
    ('force=maybe', "force='maybe': use true or false"),
    ('HPCBENCH_INJECT_FAULT=kill:5:1 benchmark=collectives', "HPCBENCH_INJECT_FAULT='kill:5:1': rank 5 is not in a world of 2"),
    ('HPCBENCH_INJECT_FAULT=slow:x:1 benchmark=collectives', "HPCBENCH_INJECT_FAULT='slow:x:1': expected slow:RANK:MS (MS > 0),"),
    ('show /nonexistent', '/nonexistent: no such run (expected a results directory, rows.jsonl'),
    ('show {A} --benchmark nope', '{A}: no nope in this run (it has: gemm)'),
    ('show {S}/nometa', '{S}/nometa: not a results run (no metadata.json)'),
    ('compare {A} /nonexistent', '/nonexistent: no such run (expected a results directory, rows.jsonl'),
    ('compare {A} {B} --alpha 2', '--alpha 2: use a significance level between 0 and 1, e.g. 0.05'),
    ('compare {A} {B} --fail-on-regression -5', '--fail-on-regression -5: use a percentage >= 0'),
    ('compare {A}', 'compare: the following arguments are required: run_b (`hpcbench'),
    ('report /nonexistent', '/nonexistent: no such run (expected a results directory, rows.jsonl'),
    ('report', 'report: the following arguments are required: RUN (`hpcbench report'),
    ('report {A} --out {S}/afile', '{S}/afile: exists and is not a directory'),
    ('compile-kernels --jobs 0 --list', '-j/--jobs 0: use a number of processes >= 1'),
    ('compile-kernels --first -1 --list', '--first -1: use a number of configs >= 1'),
    ('project /nonexistent --world-size 64', '/nonexistent: no such run (expected a results directory, rows.jsonl'),
    ('project {A} --world-size 0', '--world-size must be positive'),
    ('project {A} --world-size 64 --collective gossip', '{A}: no collectives measurements in this run'),
    ('simulate --schedule nope --ranks 4 --microbatches 8', "unknown pipeline schedule 'nope' (available: gpipe, 1f1b,"),
    ('simulate --schedule 1f1b --ranks 0 --microbatches 8', '1f1b: ranks and microbatches must be positive'),
    ('simulate --schedule dualpipe --ranks 4 --microbatches 5', 'dualpipe: DualPipe needs an even number of microbatches >= 2 x ranks'),
    ('fleet /nonexistent', '/nonexistent: no such run (expected a results directory, rows.jsonl'),
    ('fleet', 'fleet: the following arguments are required: RUN (`hpcbench fleet'),
    ('fleet {S}', '{S}: not a results run (no metadata.json)'),
    ('export {A}', 'export: the following arguments are required: out (`hpcbench export'),
    ('export /nonexistent {S}/x.parquet', '/nonexistent: no such run (expected a results directory, rows.jsonl'),
    ('compile-kernels --arch', 'compile-kernels: argument --arch: expected one argument (`hpcbench'),
    ('show', 'show: the following arguments are required: run (`hpcbench show'),
    ('compare', 'compare: the following arguments are required: run_a, run_b'),
    ('report {A} --format pdf', 'report: unrecognized arguments: --format pdf (`hpcbench report'),
    ('simulate --schedule 1f1b --ranks 4 --microbatches 8 --F abc', "simulate: argument --F: invalid float value: 'abc' (`hpcbench"),
    ('fleet {A} --threshold abc', "fleet: argument --threshold: invalid float value: 'abc' (`hpcbench"),
    ('project {A}', 'project: the following arguments are required: --world-size'),
    ('benchmark=overlap overlap.memory_bytes=lots', "overlap.memory_bytes='lots' is not a size (use bytes or a K/M/G"),
    ('benchmark=ddp_overlap ddp_overlap.bucket_cap_mb=[]', 'ddp_overlap.bucket_cap_mb=[]: list at least one bucket size (MB)'),
]


def _words_of(line: str) -> list[str]:
    return line.split()


def test_the_table_covers_every_family_and_subcommand_three_times():
    from hpcbench.api import registry

    families = {f: 0 for f in registry.families()}
    commands = dict.fromkeys(["show", "compare", "report", "export", "compile-kernels", "project", "simulate",
                              "fleet"], 0)
    for line, _ in LINES + [(c if isinstance(c, str) else " ".join(c), w) for c, w in CASES]:
        words = [w for w in _words_of(line) if not w.split("=")[0].isupper()]
        first = words[0].split("-")[0] if words[0].startswith(("export", "show", "compile")) else words[0]
        first = {"export": "export", "show": "show", "compile": "compile-kernels"}.get(first, first)
        if first in commands:
            commands[first] += 1
            continue
        bench = next((w.split("=", 1)[1] for w in words if w.startswith("benchmark=")), "gemm")
        keys = {w.split("=")[0].split(".")[0] for w in words}
        families[bench] += 1
        for fam in keys & set(families) - {bench}:
            families[fam] += 1
    assert len(LINES) + len(CASES) >= 100
    assert all(n >= 3 for n in families.values()) and all(n >= 3 for n in commands.values()), (families, commands)


@pytest.mark.parametrize("line,words", LINES, ids=[line for line, _ in LINES])
def test_a_command_line_mistake_is_one_line_exit_2_and_leaves_nothing(line, words, tmp_path, stored,
                                                                      monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    places = {"{A}": str(stored), "{B}": str(stored.with_name("run-2")), "{S}": str(stored.parent)}
    args = []
    for word in _words_of(line):
        for mark, place in places.items():
            word = word.replace(mark, place)
        if "=" in word and word.split("=")[0].isupper():
            monkeypatch.setenv(*word.split("=", 1))
        else:
            args.append(word)
    for mark, place in places.items():
        words = words.replace(mark, place)
    before = sorted(p.relative_to(stored.parent) for p in stored.parent.rglob("*"))
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpcbench: error: ") and words in lines[0], lines
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "results"]) and not any(tmp_path.glob("results/*"))
    assert sorted(p.relative_to(stored.parent) for p in stored.parent.rglob("*")) == before


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
