"""The acceptance call's decisions, as pure functions of what its steps returned."""

from __future__ import annotations

NA, OK, FAILED = "n/a", "ok", "failed"

# Known weak spot, reported rather than hidden: the grouped GEMMs have pointer kernels only (no
# TMA, no persistence), on every GPU.
GROUPED_IMPL = "pointer"


def p2p_outcome(nccl: bool, works: int | None = None, exact: bool | None = None, error: str | None = None) -> dict:
    """The P2P step's result. It is `ok` only when an NCCL batch really ran and returned the data
    it sent; without NCCL, or where NCCL refuses a rank sending to itself, it is `n/a`: the
    pipeline executor's NCCL path then still needs 2 GPUs to be proven."""
    if not nccl:
        return {"status": NA, "detail": "n/a (needs 2 GPUs): no NCCL here, and gloo's shape proves nothing for NCCL"}
    if error is not None:
        return {"status": NA, "detail": f"n/a (needs 2 GPUs): NCCL refused a send to itself ({error})"}
    if not exact:
        return {"status": FAILED, "detail": f"{works} Work(s), but the data received is not the data sent", "works": works}
    return {"status": OK, "detail": f"NCCL batch of send+recv to itself: {works} Work(s), data exact", "works": works}


def kernel_path_problems(rows: list[dict], capability: tuple[int, int] | None, triton_version: str) -> list[str]:
    """What is wrong with a proof run's kernel rows on a GPU of `capability`: a row that failed its
    check, a Triton row that was skipped or ran another implementation than this GPU should get
    (`tma_persistent` for the GEMMs on sm_90 with Triton >= 3.6; pointer kernels for grouped)."""
    from hpcbench.kernels.select import matmul_impl

    gemm_impl = matmul_impl(capability, triton_version, interpreter=False)
    problems = []
    for r in rows:
        kernel = str(r.get("kernel") or "")
        where = f"{r.get('benchmark')} {kernel} {r.get('pass') or ''} {r.get('layout') or ''}".split()
        label = " ".join(where)
        triton = kernel.startswith("triton")
        # a library baseline may be skipped where torch lacks it (torch_fp8_block before sm_100);
        # a Triton kernel on this GPU may not
        if r.get("status") == FAILED or (triton and r.get("status") != OK):
            problems.append(f"{label}: {r.get('status')} ({r.get('reason') or 'no reason'})")
            continue
        if not triton:
            continue
        want = GROUPED_IMPL if r.get("benchmark") == "grouped_gemm" else gemm_impl
        if r.get("kernel_impl") != want:
            problems.append(f"{label}: kernel_impl {r.get('kernel_impl')!r}, expected {want!r}")
    return problems


def step_counts(status: str, required: bool, gpu: bool) -> bool:
    """Whether a step's status lets the call pass. A required step must be `ok`; in a dry run on
    the CPU, `n/a` (the GPU path is absent) is allowed too. A partial-by-design step may stop at
    its limit (its rows so far are judged by the targets), but never fail: a crash, or a row that
    failed its check, fails the call."""
    if not required:
        return status != FAILED
    return status == OK or (status == NA and not gpu)


def call_passed(steps, targets: list[dict], gpu: bool) -> bool:
    """Every required step proven, no step failed, and no target FAILed but the known weak spots
    (`known_weak`: reported as measured, expected to fail, not held against the call). `n/a`
    targets are not passes, but do not fail the call: a step cut short leaves them without numbers."""
    return all(step_counts(s.status, s.required, gpu) for s in steps) and not any(
        t["verdict"] == "FAIL" and not t.get("known_weak") for t in targets)
