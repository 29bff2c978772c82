"""Checks that need a CUDA device (`pytest -m gpu`). Skipped where torch sees no GPU, so the CPU
suite passes. This session sets TRITON_INTERPRET=1 (tests/conftest.py), so every check here runs
in a fresh process without it: the kernels are compiled for the GPU, never interpreted. The GPU
acceptance call (scripts/gpu_acceptance.py) proves the same paths and more."""

import json
import subprocess
import sys

import pytest
import torch

from hpcbench.acceptance.process import step_environment
from hpcbench.acceptance.verdicts import kernel_path_problems

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_every_gemm_kernel_verifies_on_the_gpu_and_runs_this_gpus_path(tmp_path):
    import triton

    from hpcbench.core.testing import run_cli  # a fresh process, TRITON_INTERPRET removed

    rows = run_cli(["gemm"], tmp_path, ["device=cuda", "gemm.custom=[[256,512,384],[1,576,7168]]",
                                        "gemm.passes=[fprop,dgrad,wgrad]"])["gemm"]
    aligned = [r for r in rows if r["K"] % 16 == 0 and r["M"] > 1]  # TMA needs 16-byte rows
    assert rows and not kernel_path_problems(aligned, torch.cuda.get_device_capability(), triton.__version__)


@pytest.mark.parametrize("probe", ["timing", "nccl", "nvml", "accumulation"])
def test_each_gpu_probe_meets_its_known_answer(probe):
    r = subprocess.run([sys.executable, "-m", "hpcbench.acceptance.probes", probe], env=step_environment(),
                       capture_output=True, text=True, timeout=300, check=False)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok", result


def test_a_multi_rank_family_runs_on_nccl_at_world_size_one(tmp_path):
    from hpcbench.core.testing import run_cli

    rows = run_cli(["collectives"], tmp_path, ["device=cuda", "dist.nproc=1"])["collectives"]
    assert rows and all(r["status"] != "failed" for r in rows) and {r["backend"] for r in rows} == {"nccl"}
