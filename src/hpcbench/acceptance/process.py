"""Steps as processes: each in a process group of its own, within the time its slot allows."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcbench.acceptance import plan

STOP_GRACE_S = 3  # SIGTERM, then this long to store a run's end (status cut_short), then SIGKILL
MIN_LIMIT_S = 10.0  # a step with every slot used up still starts, rather than not at all

OK, FAILED, TIMEOUT, SKIPPED, NA = "ok", "failed", "timeout", "skipped", "n/a"


@dataclass
class Step:
    name: str
    status: str = "not run"  # ok | failed | timeout | skipped | n/a
    seconds: float = 0.0
    detail: str = ""
    limit_s: float | None = None  # the time it was given
    slot_s: float = 0.0
    derivation: str = ""
    gpu_path: str = ""
    required: bool = True
    progress: str = ""  # partial-by-design steps: how far they got (points stored / planned)


@dataclass
class Acceptance:
    """One call: its output folder, the environment its steps run in, and the steps so far."""

    out: Path
    work: Path  # runs and scratch files, outside the output folder and outside any checkout
    stage: str
    dry_run: bool
    env: dict
    steps: list[Step] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    on_step: object = None  # called with the Acceptance after every step (the summary is rewritten)

    @property
    def ceiling_s(self) -> float:
        return {"default": plan.DEFAULT_BUDGET_S, plan.PROOF: plan.PROOF_BUDGET_S,
                plan.FINGERPRINT: plan.FINGERPRINT_BUDGET_S}[self.stage]

    def left_s(self) -> float:
        return self.ceiling_s - (time.monotonic() - self.started)

    def _free_s(self, name: str) -> float:
        """The time left once the slots of the steps still to come, and the tail, are held back."""
        done = {s.name for s in self.steps}
        later = [s for s in plan.steps(self.stage) if s.name not in done and s.name != name]
        return self.left_s() - sum(s.slot.seconds for s in later) - plan.TAIL_S

    def limit_for(self, name: str) -> float:
        """The step's cap, or less: the slots of the steps still to come, and the tail, stay free."""
        limit = max(MIN_LIMIT_S, min(plan.spec(name).cap_s, self._free_s(name)))
        return limit * plan.DRY_RUN_STRETCH if self.dry_run else limit

    def out_of_time(self, name: str) -> bool:
        """A partial-by-design step with no time left is not started (the budget is the call's
        wall time); a required step always starts, with at least MIN_LIMIT_S."""
        return not self.dry_run and not plan.spec(name).required and self._free_s(name) <= 0

    def begin(self, name: str) -> Step:
        s = plan.spec(name)
        step = Step(name, limit_s=self.limit_for(name), slot_s=s.slot.seconds, derivation=s.slot.derivation,
                    gpu_path=s.gpu_path, required=s.required)
        self.steps.append(step)
        return step

    def finish(self, step: Step, status: str, detail: str = "", seconds: float | None = None) -> Step:
        step.status, step.detail = status, detail or step.detail
        if seconds is not None:
            step.seconds = seconds
        print(f"[{step.status:>7}] {step.name} ({step.seconds:.0f} s of {step.slot_s:.0f}) {step.detail}", flush=True)
        if callable(self.on_step):
            self.on_step(self)
        return step

    def skip(self, name: str, detail: str, status: str = SKIPPED) -> Step:
        return self.finish(self.begin(name), status, detail, seconds=0.0)

    def run(self, name: str, cmd: list[str], ok_codes=(0,), env: dict | None = None, judge=None) -> Step:
        """Run one step's command, its output appended to OUT/log.txt; status from its exit code,
        then from `judge(step)` (which may set status, detail and progress from what it stored)."""
        if self.out_of_time(name):
            return self.skip(name, "not started: the call's budget is spent", status=NA)
        step = self.begin(name)
        t0 = time.monotonic()
        with open(self.out / "log.txt", "a") as log:
            log.write(f"\n==== {name} (limit {step.limit_s:.0f} s): {' '.join(cmd)}\n")
            log.flush()
            code = run_group(cmd, env or self.env, log, step.limit_s, cwd=self.work)
        step.seconds = time.monotonic() - t0
        if code is None:
            step.status, step.detail = TIMEOUT, f"over {step.limit_s:.0f} s"
        else:
            step.status, step.detail = (OK if code in ok_codes else FAILED), f"exit {code}"
        if judge is not None:
            judge(step)
        return self.finish(step, step.status, step.detail)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def run_group(cmd: list[str], env: dict, log, limit: float, cwd: Path | None = None) -> int | None:
    """Run cmd in a process group of its own; its exit code, or None when it was stopped at `limit`.
    Whatever is left of the group afterwards is killed: a multi-rank run's ranks must not outlive
    it on the GPU and disturb the timings of the steps after it."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = proc.wait(timeout=max(1.0, limit - STOP_GRACE_S))
    except subprocess.TimeoutExpired:
        code = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # a run stores its end (cut_short) on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the leader if it is still there, or the ranks it left
    proc.wait()
    return code


def step_environment(base: dict | None = None) -> dict:
    """The environment every step runs in: the kernels compiled, never interpreted (a parent's
    TRITON_INTERPRET=1, as the test suite sets, would turn a GPU check into an interpreter run),
    unbuffered output, gloo on loopback."""
    env = dict(os.environ if base is None else base)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env
