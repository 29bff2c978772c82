"""The acceptance call's steps, each with a time slot derived from stated counts.

Every slot is `process start + compiles x seconds per compile + points x seconds per point`,
written out beside the step (`Slot.derivation`), so a reader can see where each second goes and
a test can check that the proof stage fits 120 s and the default call 300 s. The per-unit
figures are for one H100/H200 host with 16 cores:

  PROCESS_S   a fresh Python importing torch, Triton and hpcbench and creating a CUDA context
  COMPILE_S   one Triton kernel config compiled for sm_90 on one core (`hpcbench compile-kernels`
              compiled 105 configs in 63 s on 2 cores with 8 jobs, ~1.2 s per compile per core)

Compiles are counted once per call: Triton's on-disk cache keeps what an earlier step compiled,
so a step counts only the configs the steps before it did not build.

A step may run past its slot, up to its cap, only into time the steps before it left unused,
never into the slots of the steps after it (`process.Acceptance.limit_for`).
"""

from __future__ import annotations

from dataclasses import dataclass

PROCESS_S = 6.0
COMPILE_S = 1.5
TAIL_S = 2.0  # the last export and summary (each step's own is ~0.3 s of its start)
PROOF_SLOTS_S = 120.0  # the proof stage's slots: every GPU path within two minutes
PROOF_BUDGET_S = PROOF_SLOTS_S + 5.0  # and the install's start and the tail
DEFAULT_BUDGET_S = 300.0
FINGERPRINT_BUDGET_S = 210.0  # its own target is 180 s, plus the install and the tail

PROOF, TARGETS, FINGERPRINT = "proof", "targets", "fingerprint"
STAGES = {"default": (PROOF, TARGETS), PROOF: (PROOF,), FINGERPRINT: (FINGERPRINT,)}

# A dry run is the same logic on a 2-core CPU machine, perhaps busy: its limits are stretched,
# and its time is not judged against the GPU budget.
DRY_RUN_STRETCH = 6.0


@dataclass(frozen=True)
class Slot:
    """A step's expected time: fixed start-up, compiles, points (each with its repetitions)."""

    fixed_s: float = PROCESS_S
    compiles: int = 0
    points: int = 0
    point_s: float = 0.0
    why: str = ""  # what the counts are

    @property
    def seconds(self) -> float:
        return self.fixed_s + self.compiles * COMPILE_S + self.points * self.point_s

    @property
    def derivation(self) -> str:
        parts = [f"{self.fixed_s:g} s start"]
        if self.compiles:
            parts.append(f"{self.compiles} compiles x {COMPILE_S:g} s")
        if self.points:
            parts.append(f"{self.points} points x {self.point_s:g} s")
        text = " + ".join(parts) + f" = {self.seconds:g} s"
        return f"{text} ({self.why})" if self.why else text


@dataclass(frozen=True)
class StepSpec:
    name: str
    stage: str
    slot: Slot
    gpu_path: str = ""  # the GPU path this step proves (proof steps)
    required: bool = True  # False: partial by design, judged on how far it got
    cap_factor: float = 2.0  # the most it may take, borrowing what earlier steps left

    @property
    def cap_s(self) -> float:
        return self.slot.seconds * self.cap_factor


STEPS: tuple[StepSpec, ...] = (
    # ---- proof: every GPU path once, each against a known answer ------------------------------
    StepSpec("install", PROOF, Slot(fixed_s=4, points=4, point_s=1.0,
                                     why="pip start; 4 wheels unpacked: hpcbench, hydra-core, omegaconf, antlr4"),
             "wheel install and import on a bare image"),
    StepSpec("kernels-gemm", PROOF, Slot(compiles=14, points=24, point_s=0.2,
                                         why="one config each: TMA BF16/FP8 tensor/row, block TMA, 1D1D TMA, "
                                             "6 quantizers, 4 pointer fallbacks; 3 passes x 8 kernels at 512x1024x768"),
             "Triton GEMM kernels compiled (TMA persistent, block-scaled, 1D1D, quantizers)"),
    StepSpec("kernels-grouped", PROOF, Slot(compiles=6, points=6, point_s=0.3,
                                            why="one config each: contiguous, masked, K-grouped x BF16/FP8"),
             "Triton grouped GEMM kernels compiled (contiguous, masked, K-grouped)"),
    StepSpec("timing", PROOF, Slot(points=2, point_s=1.0, why="a CUDA-event matmul, a CUDA-graph replay"),
             "CUDA-event and CUDA-graph timing"),
    StepSpec("nccl", PROOF, Slot(fixed_s=PROCESS_S + 3, points=1, point_s=0.5,
                                 why="NCCL init; a 4 MiB all_reduce at world 1"),
             "NCCL collective at world 1"),
    StepSpec("p2p", PROOF, Slot(fixed_s=PROCESS_S + 3, points=1, point_s=0.5,
                                why="NCCL init; one batch_isend_irecv sending to and receiving from itself"),
             "NCCL batched P2P (the Works it returns)", required=False),
    StepSpec("multirank", PROOF, Slot(fixed_s=PROCESS_S + 6, points=9, point_s=1.0,
                                      why="one world-1 NCCL launch; 5 families at smoke size, ~2 points each"),
             "every multi-rank family at world 1 on NCCL"),
    StepSpec("nvml", PROOF, Slot(points=1, point_s=1.0, why="energy counter across 1 s of matmuls"),
             "NVML energy and power read"),
    StepSpec("accumulation", PROOF, Slot(points=3, point_s=0.5, why="torch._scaled_mm fast vs FP32 accumulation, 3 K"),
             "FP8 accumulation of torch._scaled_mm by K"),
    # ---- targets: the performance figures, useful however far each gets ------------------------
    StepSpec("gemm-square", TARGETS, Slot(compiles=12, points=4, point_s=1.0,
                                          why="TMA configs BF16 + FP8 autotuned; 4 kernels at 8192^3, "
                                              "each autotune + 50 reps + float64 check"),
             required=False),
    StepSpec("gemm-deepseek_v3", TARGETS, Slot(compiles=6, points=6, point_s=1.0,
                                               why="block TMA configs; 6 DeepSeek-V3 N x K at M=4096"),
             required=False),
    StepSpec("grouped", TARGETS, Slot(compiles=8, points=2, point_s=1.5,
                                      why="contiguous configs BF16 + FP8; the 4x8192x4096x7168 point"),
             required=False),
    StepSpec("passes", TARGETS, Slot(compiles=8, points=24, point_s=1.5,
                                     why="1D1D TMA configs + 2 quantizers (the rest cached); "
                                         "4 Llama-3-70B N x K at M=16384 x 3 passes x BF16/FP8"),
             required=False),
    *(StepSpec(f"mamf-{dtype}", TARGETS, Slot(fixed_s=PROCESS_S + 3, points=8, point_s=0.5,
                                               why=f"3 s warm-up; {dtype.upper()} at 8 shapes around the published best"),
               required=False) for dtype in ("bf16", "fp8")),
    # ---- the fingerprint, a call of its own ----------------------------------------------------
    StepSpec("fingerprint", FINGERPRINT, Slot(fixed_s=0, points=1, point_s=180.0,
                                              why="its own target: every family's quick pass in 3 minutes"),
             required=False, cap_factor=1.1),
)


def steps(stage: str) -> list[StepSpec]:
    """The steps a `--stage` runs, in order (install first: it is timed before the package loads)."""
    stages = STAGES[stage]
    return [s for s in STEPS if s.stage in stages or s.name == "install"]


def budget_s(stage: str) -> float:
    """The call's budget: the slots of its steps plus the tail."""
    return sum(s.slot.seconds for s in steps(stage)) + TAIL_S


def spec(name: str) -> StepSpec:
    return next(s for s in STEPS if s.name == name)
