"""Checks that need a CUDA device (`pytest -m gpu`; scripts/gpu_acceptance.py runs them). Skipped
where torch sees no GPU, so the CPU suite passes; they have run only where a results/ run says so."""

import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_every_gemm_kernel_verifies_on_the_gpu(tmp_path):
    from hpcbench.testing import run_in_process

    rows = run_in_process(["gemm"], tmp_path, ["device=cuda", "gemm.custom=[[256,512,384],[1,576,7168]]"])["gemm"]
    bad = [(r["kernel"], r["M"], r["status"], r.get("reason")) for r in rows if r["status"] == "failed"]
    assert rows and not bad


def test_cuda_events_time_a_matmul_near_its_expected_rate():
    from hpcbench.timing import TimingPolicy, time_fn

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    t = time_fn(lambda: a @ b, torch.device("cuda"), TimingPolicy(warmup=3, min_reps=10, max_reps=50))
    tflops = 2 * 4096**3 / t.stats.median_s / 1e12
    assert t.method.startswith("cuda") and 10 < tflops < 2000  # any GPU of this decade, never above a peak


def test_a_multi_rank_family_runs_on_nccl_at_world_size_one(tmp_path):
    from hpcbench.testing import run_cli

    rows = run_cli(["collectives"], tmp_path, ["device=cuda", "dist.nproc=1"])["collectives"]
    assert rows and all(r["status"] != "failed" for r in rows) and {r["backend"] for r in rows} == {"nccl"}
