"""What each step of the acceptance call runs: hpcbench runs (their rows are the evidence) and the
probes. Every step is a fresh process in the call's scratch folder, never in a checkout."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from hpcbench.acceptance import process
from hpcbench.acceptance.process import FAILED, NA, OK, Acceptance
from hpcbench.acceptance.targets import BLOCK_M, GROUPED_POINT, PASSES, PASSES_M, SQUARE

# a dry run checks the logic, not speed: the fewest timed repetitions the host timer allows
DRY_RUN_TIMING = ["timing.cpu.min_reps=2", "timing.cpu.budget_s=0.01"]
PROOF_TIMING = ["timing.gpu.min_reps=3", "timing.gpu.max_reps=10", "timing.gpu.budget_s=0.05"]
PROOF_GEMM_SHAPE = [512, 1024, 768]  # TMA-compatible (K a multiple of 128) and small: seconds per kernel
DRY_GEMM_SHAPE = [48, 40, 160]


def _cli(*args: str) -> list[str]:
    return process.python("-c", "import sys; from hpcbench.core.cli import main; sys.exit(main())", *args)


def _device(acc: Acceptance) -> str:
    return "device=cpu" if acc.dry_run else "device=cuda"


def run_hpcbench(acc: Acceptance, step: str, overrides: list[str], env: dict | None = None,
                 judge=None) -> Path:
    """One hpcbench run into WORK/runs/<step>, judged on its rows (`judge`, default `judge_rows`):
    exit 1 (a point failed its check) is read from the rows, not taken for a crash."""
    env = dict(env or acc.env)
    env["HPCBENCH_RUN_ID"] = step
    quick = DRY_RUN_TIMING if acc.dry_run else []
    run_dir = acc.work / "runs" / step
    acc.run(step, _cli(f"results_root={acc.work / 'runs'}", *overrides, *quick), ok_codes=(0, 1), env=env,
            judge=lambda s: (judge or judge_rows)(s, run_dir))
    return run_dir


def load_rows(path: Path | None):
    """A run's rows as a DataFrame (None where the run stored nothing)."""
    from hpcbench.results import load_run
    from hpcbench.results.reader import quietly

    if path is None or not (path / "rows.jsonl").exists():
        return None
    return quietly(load_run, path)


def _records(df) -> list[dict]:
    return [] if df is None else df.astype(object).where(df.notna(), None).to_dict("records")


def judge_rows(step: process.Step, run_dir: Path) -> None:
    """How far a run got (its rows by status), and FAILED where a row failed its check: a target's
    rows are its evidence, and a wrong result is never a speed."""
    rows = _records(load_rows(run_dir))
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "failed", "skipped")}
    step.progress = f"{len(rows)} rows stored: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed and step.status != FAILED:
        step.status = FAILED
        step.detail = "; ".join(f"{r.get('kernel') or r.get('benchmark')}: {r.get('reason')}" for r in failed[:3])
    elif step.status == OK:
        step.detail = step.progress


def proof_judge(check_paths: bool):
    """A proof run passes when it stored rows and every one verified (and, on a GPU, every Triton
    row ran the implementation this GPU should get)."""
    return lambda step, run_dir: _judge_proof(step, run_dir, check_paths)


def _judge_proof(step: process.Step, run_dir: Path, check_paths: bool) -> None:
    from hpcbench.acceptance.verdicts import kernel_path_problems

    judge_rows(step, run_dir)
    rows = _records(load_rows(run_dir))
    if step.status not in (OK, FAILED):
        return
    if not rows:
        step.status, step.detail = FAILED, "no rows stored"
        return
    capability, version = None, ""
    if check_paths:
        import torch
        import triton

        capability, version = torch.cuda.get_device_capability(), triton.__version__
        problems = kernel_path_problems(rows, capability, version)
    else:  # the CPU interprets the kernels: only their answers are checked
        problems = [f"{r.get('kernel')}: {r.get('status')} ({r.get('reason')})" for r in rows if r.get("status") == "failed"]
    impls = sorted({str(r.get("kernel_impl")) for r in rows if r.get("kernel_impl")})
    detail = f"{len(rows)} rows verified; kernel_impl {', '.join(impls) or '-'}"
    step.status, step.detail = (FAILED, "; ".join(problems[:4])) if problems else (OK, detail)


def kernels_gemm(acc: Acceptance) -> Path:
    shape = DRY_GEMM_SHAPE if acc.dry_run else PROOF_GEMM_SHAPE
    env = {**acc.env, "HPCBENCH_ONE_CONFIG": "1"}
    return run_hpcbench(acc, "kernels-gemm", [
        "benchmark=gemm", _device(acc), "gemm.shapes=custom", f"gemm.custom=[[{_list(shape)}]]",
        f"gemm.passes=[{','.join(PASSES)}]", "gemm.time_quantization=true",
        *([] if acc.dry_run else PROOF_TIMING)], env=env, judge=proof_judge(check_paths=not acc.dry_run))


def kernels_grouped(acc: Acceptance) -> Path:
    env = {**acc.env, "HPCBENCH_ONE_CONFIG": "1"}
    return run_hpcbench(acc, "kernels-grouped", [
        "benchmark=grouped_gemm", _device(acc), "grouped_gemm.shapes=smoke", "grouped_gemm.backends=[triton]",
        *([] if acc.dry_run else PROOF_TIMING)], env=env, judge=proof_judge(check_paths=not acc.dry_run))


def multirank(acc: Acceptance) -> Path:
    from hpcbench.api import registry

    fams = [f for f in registry.families().values() if f.distributed]
    names = ",".join(f.name for f in fams)
    smoke = [o for f in fams for o in f.smoke]
    world = [] if acc.dry_run else ["dist.nproc=1"]
    return run_hpcbench(acc, "multirank", [f"benchmark=[{names}]", f"suite=[{names}]", _device(acc),
                                           "dist.timeout_s=60", *world, *smoke], judge=proof_judge(check_paths=False))


def probe(acc: Acceptance, name: str) -> dict:
    """A probe in its own process; its JSON result becomes the step's status and detail."""
    if acc.out_of_time(name):
        acc.skip(name, "not started: the call's budget is spent", status=NA)
        return {}
    step = acc.begin(name)
    t0 = time.monotonic()
    with open(acc.out / "log.txt", "a") as log:
        log.write(f"\n==== {name} (limit {step.limit_s:.0f} s): probe\n")
        log.flush()
        out = acc.work / f"probe-{name}.txt"
        with open(out, "w") as sink:
            code = process.run_group(process.python("-m", "hpcbench.acceptance.probes", name), acc.env, sink,
                                     step.limit_s, cwd=acc.work)
        text = out.read_text()
        log.write(text)
    step.seconds = time.monotonic() - t0
    if code is None:
        acc.finish(step, process.TIMEOUT, f"over {step.limit_s:.0f} s")
        return {}
    result = _last_json(text)
    if result is None:
        acc.finish(step, FAILED, f"exit {code}, no result")
        return {}
    acc.finish(step, result.get("status", FAILED), result.get("detail", ""))
    return result


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


# ---- targets ------------------------------------------------------------------------------------

def _list(values) -> str:
    return ",".join(str(v) for v in values)


def gemm_square(acc: Acceptance) -> Path:
    shape = DRY_GEMM_SHAPE if acc.dry_run else [SQUARE["M"], SQUARE["N"], SQUARE["K"]]
    return run_hpcbench(acc, "gemm-square", [
        "benchmark=gemm", _device(acc), "gemm.shapes=custom", f"gemm.custom=[[{_list(shape)}]]",
        "gemm.fp8_scalings=[tensor]"], env=_tuning_printed(acc))


def deepseek_shapes() -> list[tuple[int, int, int]]:
    from hpcbench.api.shapes import load_preset

    return list(dict.fromkeys((BLOCK_M, N, K) for _, N, K in load_preset("gemm", "deepseek_v3")))


def gemm_deepseek(acc: Acceptance) -> Path:
    shapes = [tuple(DRY_GEMM_SHAPE)] if acc.dry_run else deepseek_shapes()
    return run_hpcbench(acc, "gemm-deepseek_v3", [
        "benchmark=gemm", _device(acc), "gemm.shapes=custom", f"gemm.custom=[{','.join(f'[{_list(s)}]' for s in shapes)}]",
        "gemm.dtypes=[fp8]", "gemm.fp8_scalings=[block]", "gemm.backends=[triton]"], env=_tuning_printed(acc))


def grouped(acc: Acceptance) -> Path:
    G, M, N, K = (GROUPED_POINT[k] for k in ("G", "M", "N", "K"))
    shape = [G, 40, 96, 192] if acc.dry_run else [G, M, N, K]
    return run_hpcbench(acc, "grouped", [
        "benchmark=grouped_gemm", _device(acc), "grouped_gemm.shapes=custom",
        f"grouped_gemm.custom.contiguous=[[{_list(shape)}]]", "grouped_gemm.layouts=[contiguous]",
        "grouped_gemm.dtypes=[bf16,fp8]", "grouped_gemm.backends=[triton]"], env=_tuning_printed(acc))


def passes_shapes(dry_run: bool) -> list[tuple[int, int, int]]:
    """The llama3_70b preset's N x K at M = PASSES_M (one tiny shape in a dry run)."""
    if dry_run:
        return [(64, 48, 160)]
    from hpcbench.api.shapes import load_preset

    return list(dict.fromkeys((PASSES_M, N, K) for _, N, K in load_preset("gemm", "llama3_70b")))


def passes(acc: Acceptance) -> Path:
    shapes = ",".join(f"[{_list(s)}]" for s in passes_shapes(acc.dry_run))
    return run_hpcbench(acc, "passes", [
        "benchmark=gemm", _device(acc), "gemm.shapes=custom", f"gemm.custom=[{shapes}]",
        f"gemm.passes=[{','.join(PASSES)}]", "gemm.dtypes=[bf16,fp8]", "gemm.fp8_scalings=[block]",
        "gemm.backends=[triton]", "gemm.time_quantization=true"], env=_tuning_printed(acc))


MAMF_AROUND = 256  # each dimension at the published best and one step of 256 above it: 8 shapes
MAMF_WARMUP_S = 3


def mamf_dims(dtype: str, device: str | None, dry_run: bool) -> dict | None:
    """The dimensions swept for a dtype: around the device's published best shape (none: n/a)."""
    from hpcbench.models import anchors

    if dry_run:
        return {"m": [32, 64], "n": [48], "k": [64]}
    anchor = anchors.match(f"mamf_{dtype}_tflops", device) if device else None
    if anchor is None or not anchor.best_shape:
        return None
    return {d.lower(): [v, v + MAMF_AROUND] for d, v in anchor.best_shape.items()}


def mamf(acc: Acceptance, dtype: str, device: str | None) -> Path | None:
    dims = mamf_dims(dtype, device, acc.dry_run)
    name = f"mamf-{dtype}"
    if dims is None:
        acc.skip(name, f"no published {dtype.upper()} MAMF best shape for {device}", status=NA)
        return None
    return run_hpcbench(acc, name, [
        "benchmark=mamf", _device(acc), f"mamf.dtypes=[{dtype}]", *(f"mamf.{d}=[{_list(v)}]" for d, v in dims.items()),
        f"mamf.warmup_s={0 if acc.dry_run else MAMF_WARMUP_S}"])


def fingerprint(acc: Acceptance) -> Path:
    """benchmark=fingerprint as a user starts it (a dry run: every family of its suite at smoke size)."""
    from hpcbench.api import registry

    extra = [_device(acc)]
    if acc.dry_run:
        fams = registry.families()
        extra += [o for n in _fingerprint_suite() if n != "fingerprint" for o in fams[n].smoke]
        extra += [*fams["fingerprint"].smoke, "fingerprint.all_reduce_bytes.cpu=64K",
                  f"fingerprint.gemm_shape.cpu=[{_list(DRY_GEMM_SHAPE)}]"]
    return run_hpcbench(acc, "fingerprint", ["benchmark=fingerprint", "dist.timeout_s=120", *extra])


def _tuning_printed(acc: Acceptance) -> dict:
    """Triton prints each autotuning's pick (the log keeps which config won per shape: whether the
    warp-specialized configs win is a question the first GPU run answers)."""
    return {**acc.env, "TRITON_PRINT_AUTOTUNING": "1"}


_PICK = re.compile(r"Triton autotuning for function (\S+),\s*with key as (.*?),\s*finished after ([\d.]+)s,"
                   r"\s*best config selected: (.*?);", re.S)


def autotune_picks(log_text: str) -> list[dict]:
    """Each autotuning Triton printed (TRITON_PRINT_AUTOTUNING): kernel, key (the shape), the config
    it picked and how long it took."""
    return [{"kernel": m.group(1), "key": m.group(2).strip(), "seconds": float(m.group(3)), "config": m.group(4)}
            for m in _PICK.finditer(log_text)]



def _fingerprint_suite() -> list[str]:
    import importlib.resources

    import yaml

    text = (importlib.resources.files("hpcbench.conf") / "benchmark" / "fingerprint.yaml").read_text()
    return list(yaml.safe_load(text)["suite"])
