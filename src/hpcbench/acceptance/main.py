"""The acceptance call: stages of steps, the summary rewritten after each (see the package doc)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hpcbench.acceptance import plan, steps, summary, targets
from hpcbench.acceptance.process import NA, OK, Acceptance, step_environment

class Call:
    """One call's runs and extras; after every step it exports the runs and rewrites the summary."""

    def __init__(self, acc: Acceptance, gpu: bool):
        self.acc, self.gpu = acc, gpu
        self.runs: dict[str, Path | None] = {}
        self.frames: dict = {}
        self.extras: dict = {}
        acc.on_step = lambda _acc: self.save(done=False)

    def record(self, name: str, run_dir: Path | None) -> None:
        self.runs[name] = run_dir
        self.frames[name] = steps.load_rows(run_dir)
        self.save(done=False)

    def judged(self) -> list[dict]:
        if not self.gpu:  # a CPU judges nothing: its numbers are not GPU numbers
            return [{**t, "TFLOP/s": None, "ratio": None, "verdict": targets.NA}
                    for t in targets.judge_all({}, steps.passes_shapes(True))] if self.acc.stage == "default" else []
        import torch

        capability = torch.cuda.get_device_capability()
        out = targets.judge_all(self.frames, steps.passes_shapes(False), capability) if self.acc.stage == "default" else []
        fp = next((s for s in self.acc.steps if s.name == "fingerprint"), None)
        if fp is not None:
            lines = len(self.extras.get("fingerprint", []))
            out.append(targets.fingerprint_target(fp.status, fp.seconds, fp.limit_s, lines))
        return out

    def save(self, done: bool) -> dict:
        out = self.acc.out
        summary.export_runs({k: v for k, v in self.frames.items() if v is not None}, out / "runs.parquet")
        log = out / "log.txt"
        self.extras["autotune"] = steps.autotune_picks(log.read_text()) if log.exists() else []
        return summary.write(self.acc, self.judged(), self.extras, self.gpu, done)


def proof(call: Call) -> None:
    """Every GPU path once, in plan order (each step's limit counts on the slots after it)."""
    acc = call.acc
    call.record("kernels-gemm", steps.kernels_gemm(acc))
    call.record("kernels-grouped", steps.kernels_grouped(acc))
    for name in ("timing", "nccl", "p2p"):
        call.extras[name] = steps.probe(acc, name)
    call.record("multirank", steps.multirank(acc))
    for name in ("nvml", "accumulation"):
        call.extras[name] = steps.probe(acc, name)


def target_runs(call: Call) -> None:
    acc = call.acc
    call.record("gemm-square", steps.gemm_square(acc))
    call.record("gemm-deepseek_v3", steps.gemm_deepseek(acc))
    call.record("grouped", steps.grouped(acc))
    call.record("passes", steps.passes(acc))
    device = targets.device_of(call.frames)
    for dtype in ("bf16", "fp8"):
        call.record(f"mamf-{dtype}", steps.mamf(acc, dtype, device))


def fingerprint(call: Call) -> None:
    run_dir = steps.fingerprint(call.acc)
    df = steps.load_rows(run_dir)
    lines = [] if df is None or "benchmark" not in df else (
        df[df["benchmark"] == "fingerprint"].astype(object).where(lambda d: d.notna(), None).to_dict("records"))
    call.extras["fingerprint"] = [{k: r.get(k) for k in summary.FINGERPRINT_KEEP} for r in lines]
    call.record("fingerprint", run_dir)


def record_install(acc: Acceptance, install_s: float | None, detail: str) -> None:
    """The wheel install happened before this package could load (the script did it): its time
    and outcome become the first step."""
    step = acc.begin("install")
    step.seconds = install_s or 0.0
    status = OK if install_s is not None else NA
    acc.finish(step, status, detail)


def parse(argv):
    parser = argparse.ArgumentParser(prog="gpu_acceptance", description="hpcbench's GPU acceptance call")
    parser.add_argument("--out", type=Path, required=True, help="folder for summary.json/.md, log.txt, runs.parquet")
    parser.add_argument("--dry-run", action="store_true", help="the same logic on the CPU at smoke sizes")
    parser.add_argument("--stage", choices=sorted(plan.STAGES), default="default",
                        help="default: proof then targets (<= 300 s); proof alone; fingerprint alone")
    parser.add_argument("--list", action="store_true", help="print every step with its slot and derivation, and exit")
    return parser.parse_args(argv)


def list_steps(stage: str) -> str:
    lines = [f"{s.name:<18} {s.stage:<12} {s.slot.seconds:6.1f} s  {s.slot.derivation}" for s in plan.steps(stage)]
    return "\n".join([*lines, f"budget {plan.budget_s(stage):.1f} s (slots + {plan.TAIL_S:g} s tail)"])


def main(argv=None, install_s: float | None = None, install_detail: str = "not installed from wheels") -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    print(list_steps(args.stage), flush=True)
    if args.list:
        return 0
    import torch

    gpu = torch.cuda.is_available() and not args.dry_run
    if not gpu and not args.dry_run:
        print("gpu_acceptance: no CUDA device: use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in summary.FILES:  # a call's output is its own: nothing left from an earlier call
        (args.out / name).unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix="hpcbench-acceptance-"))
    acc = Acceptance(args.out.resolve(), work, args.stage, args.dry_run, step_environment())
    acc.started -= install_s or 0.0  # the budget is the call's wall time, the wheel install included
    call = Call(acc, gpu)
    call.extras["device"] = torch.cuda.get_device_name() if gpu else "cpu"
    try:
        record_install(acc, install_s, install_detail)
        stages = plan.STAGES[args.stage]
        if plan.PROOF in stages:
            proof(call)
        if plan.TARGETS in stages:
            target_runs(call)
        if plan.FINGERPRINT in stages:
            fingerprint(call)
        final = call.save(done=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bad = [s["name"] for s in final["steps"] if s["required"] and s["status"] not in (OK, NA)]
    print(f"{args.out}: {'PASSED' if final['passed'] else 'NOT PASSED'} in {time.monotonic() - acc.started:.0f} s"
          + (f"; required steps not ok: {', '.join(bad)}" if bad else ""), flush=True)
    return 0 if final["passed"] else 1

