"""`hpcbench compile-kernels`: compile every Triton kernel for a named GPU architecture, without a GPU.

For each architecture (`--arch sm_90,sm_89,sm_80`) it enumerates every kernel x every dtype/scaling
variant x every autotune config the tuning code offers on that architecture
(`hpcbench.kernels.tuning`), drops the configs the shared-memory pruner drops at run time, and
compiles the rest ahead of time with Triton's own compiler and the `ptxas` its wheel ships
(`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`). Each entry reports the
shared memory (`metadata.shared`), registers and spills (from the cubin, with the wheel's
`cuobjdump`: `n_regs`/`n_spills` are only filled in when a kernel is loaded on a device), the MMA
instruction family in the PTX (wgmma on sm_90, mma.sync before), whether loads and stores go
through TMA (`cp.async.bulk.tensor` in the PTX), whether the kernel came out warp-specialized
(more warps than asked for: a producer warpgroup beside the consumers), and whether the
row-stride products of the address offsets are computed in 64 bits.

The Hopper-path kernels (the persistent TMA kernels hpcbench.kernels.select picks on sm_90) are
compiled where the selector would launch them, i.e. for sm_9x with this Triton; elsewhere their
entries are skipped with the selector's reason.

The exit status is 1 when an entry the autotuner would try fails to compile, spills, needs more
shared memory than the architecture has, or computes an address offset in 32 bits, and when a
Hopper-path entry lacks wgmma or TMA, or a warp-specialized config did not come out so.

Specialization: kernels are compiled the way the launch wrappers call them on contiguous,
16-aligned tensors (unit inner strides are constexpr 1, pointers and M, N, K and the row strides
divisible by 16), the shapes the benchmarks use. Odd shapes build further specializations at run
time; their shared memory is the same.

Compilation needs the real compiler, so the kernels must be decorated with TRITON_INTERPRET unset:
when it is set (the test suite sets it), or the kernels were already imported in interpreter mode,
the command reruns itself in a subprocess without it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from hpcbench.kernelcheck.jobs import FP8_MIN_CAPABILITY, Job, jobs_for  # noqa: F401 - the module's API

KERNEL_MODULES = ("hpcbench.kernels.matmul", "hpcbench.kernels.matmul_tma", "hpcbench.kernels.matmul_fp8_block",
                  "hpcbench.kernels.quantize", "hpcbench.kernels.grouped_gemm")
WARP_SIZE = 32


# ---------------------------------------------------------------- what to compile: kernelcheck_jobs


@dataclass
class Entry:
    arch: str
    kernel: str
    variant: str
    config: str
    num_warps: int
    num_stages: int
    status: str  # "ok" | "failed" | "pruned" | "skipped"
    error: str | None = None
    shared: int | None = None
    smem_limit: int | None = None
    smem_estimate: int | None = None
    regs: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    stack: int | None = None
    mma: str | None = None  # "wgmma" | "mma" | "none"
    mma_sass: str | None = None  # e.g. HGMMA.64x256x16.F32.BF16
    tma: bool | None = None  # cp.async.bulk.tensor (TMA loads/stores) in the PTX
    ws: bool | None = None  # warp-specialized: the compiled kernel runs more warps than num_warps
    warps_total: int | None = None
    addr64: bool | None = None
    scale_loads: str | None = None  # where the K loop loads its FP32 scales (scale_load_placement)
    seconds: float | None = None
    problems: list = field(default_factory=list)


# ---------------------------------------------------------------- compiling one job

def _jit_function(obj):
    """The JITFunction under an Autotuner/Heuristics wrapper (or None if it is interpreted)."""
    from triton.runtime.jit import JITFunction

    while not isinstance(obj, JITFunction):
        obj = getattr(obj, "fn", None)
        if obj is None or inspect.isfunction(obj):
            return None
    return obj


def astsource_api() -> str:
    """Which ASTSource constructor this Triton has: 'constexprs' (3.3+: name-keyed signature with
    'constexpr' entries, attrs as {(index,): [[name, value]]}) or 'constants' (3.0-3.2)."""
    from triton.compiler import ASTSource

    return "constexprs" if "constexprs" in inspect.signature(ASTSource.__init__).parameters else "constants"


def _source(fn, job: Job):
    from triton.compiler import ASTSource

    types, consts = job.types, job.constexprs
    names = list(fn.arg_names)
    unknown = set(types) | set(consts)
    if not unknown <= set(names):
        raise ValueError(f"{job.kernel} has no parameters {sorted(unknown - set(names))}")
    signature = {n: "constexpr" if n in consts else types.get(n, "i32") for n in names}
    aligned = [i for i, n in enumerate(names) if n not in consts and n not in job.unaligned]
    if astsource_api() == "constexprs":  # triton >= 3.3 (3.6 and 3.9 included)
        attrs = {(i,): [["tt.divisibility", 16]] for i in aligned}
        return ASTSource(fn=fn, signature=signature, constexprs=dict(consts), attrs=attrs)
    # triton 3.0-3.2: `constants` and an AttrsDescriptor. 3.2 takes name keys (its compat layer
    # adds the constexprs); 3.0/3.1 take index keys and a signature without the constexprs.
    # Not exercised here (CI has 3.9): best effort, divisibility hints omitted.
    try:
        return ASTSource(fn=fn, signature=signature, constants=dict(consts))
    except (TypeError, KeyError, ValueError, AttributeError):
        sig = {i: signature[n] for i, n in enumerate(names) if n not in consts}
        return ASTSource(fn=fn, signature=sig, constants={names.index(n): v for n, v in consts.items()})


def nvidia_tool(name: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else name


def _resource_usage(cubin: bytes, sass: bool = True) -> dict:
    """REG/STACK/LOCAL from `cuobjdump --dump-resource-usage`; the spill bytes and the MMA
    instruction from the SASS (STL/LDL are the spill stores and loads; Triton uses no local arrays).

    Disassembling is most of the time an entry takes after compiling (~0.4 s a kernel). Without
    `sass` it is done only where the stack frame is not empty: spilled registers live in the stack
    frame, so a zero frame is an exact "no spills" and the spill counts are then 0 without it."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        usage = subprocess.run([nvidia_tool("cuobjdump"), "--dump-resource-usage", f.name],
                               capture_output=True, text=True, check=True).stdout
        out = {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage)}
        disassemble = sass or out.get("stack", 1) or out.get("local", 1)
        code = subprocess.run([nvidia_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout if disassemble else ""
    finally:
        os.unlink(f.name)

    def spill_bytes(op):  # STL [R1+0x8], R4 / STL.64 / LDL.LU.128 / STL.U8 ...
        total = 0
        for mods in re.findall(rf"\b{op}((?:\.\w+)*)\s", code):
            bits = [int(m.lstrip("US")) for m in mods.split(".") if m.lstrip("US").isdigit()]
            total += (bits[0] if bits else 32) // 8
        return total

    out["spill_stores"], out["spill_loads"] = spill_bytes("STL"), spill_bytes("LDL")
    m = re.search(r"\b([A-Z]*MMA\.[\w.]+)", code)
    out["mma_sass"] = m.group(1) if m else None
    return out


def mma_family(ptx: str) -> str:
    if re.search(r"\bwgmma\.mma_async", ptx):
        return "wgmma"
    if re.search(r"\bmma\.sync", ptx):
        return "mma"
    return "none"


def uses_tma(ptx: str) -> bool:
    """Whether the PTX moves tiles with the bulk tensor copy engine (TMA loads or stores)."""
    return bool(re.search(r"\bcp\.async\.bulk\.tensor\b", ptx))


def missing_facts(entry: Entry, requires: tuple) -> list[str]:
    """Problems for the facts `requires` names that the compiled entry does not show."""
    facts = {"wgmma": (entry.mma == "wgmma", "no wgmma"),
             "tma": (bool(entry.tma), "no TMA (cp.async.bulk.tensor)"),
             "ws": (bool(entry.ws), "not warp-specialized")}
    return [facts[name][1] for name in requires if not facts[name][0]]


PREFETCHED, BEFORE, AFTER = "prefetched a step ahead, before the {}", "in its step, before the {}", "in its step, after the {}"
_DOT = re.compile(r"=\s*(?:ttng\.warp_group_dot|tt\.dot)\s")
_SCALE_LOAD = re.compile(r"^\s*(%[\w.]+)(?::\d+)?\s*=\s*tt\.load\b.*!tt\.ptr<f32>")
_DEFINES = re.compile(r"^\s*(%[\w.]+)(?::\d+)?\s*=")


def _loops(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line indexes of every scf.for body, by brace depth."""
    out = []
    for i, line in enumerate(lines):
        if "scf.for" not in line or not line.rstrip().endswith("{"):
            continue
        depth = 0
        for j in range(i, len(lines)):
            depth += lines[j].count("{") - lines[j].count("}")
            if depth == 0:
                out.append((i + 1, j - 1))
                break
    return out


_IF = re.compile(r"^\s*(%[\w.]+)(?::\d+)?\s*=\s*scf\.if\b")


def _carried_names(lines: list[str], first: int, last: int) -> set[str]:
    """The values a loop body hands to its next iteration: its own scf.yield's operands, and those
    of the scf.if regions whose results that yield hands on (a flattened persistent loop loads the
    next tile's first scales inside an scf.if at the tile boundary)."""
    owners: list[str | None] = []  # the region each open brace belongs to: an scf.if's result, or None
    via_if: dict[str, set[str]] = {}
    own: set[str] = set()
    for k in range(first, last + 1):
        line = lines[k].strip()
        if line.startswith("}"):
            owner = owners.pop() if owners else None
            if line.endswith("{"):  # } else {
                owners.append(owner)
            continue
        if line.startswith("scf.yield"):
            names = set(re.findall(r"%[\w.]+", line.split(":")[0]))
            if not owners:
                own |= names
            elif owners[-1] is not None:
                via_if.setdefault(owners[-1], set()).update(names)
        if line.endswith("{"):
            m = _IF.match(line)
            owners.append(m.group(1) if m else None)
    return own | {name for result, names in via_if.items() if result in own for name in names}


def scale_load_placement(ttgir: str, mma: str = "wgmma") -> str | None:
    """Where the K loops of a compiled kernel load their FP32 scales, from its TTGIR: carried to the
    next iteration (prefetched: the load serves the next step's promotion, so its round trip
    overlaps that step's loads and MMA), or loaded in the step that uses them, before or after its
    MMA. The worst over every K loop (a warp-specialized kernel has one per consumer partition);
    None when no loop with an MMA loads f32 scales (BF16 kernels)."""
    lines = ttgir.splitlines()
    loops = [(a, b) for a, b in _loops(lines) if any(_DOT.search(lines[k]) for k in range(a, b + 1))]
    inner = [(a, b) for a, b in loops if not any(a < c and d < b for c, d in loops if (c, d) != (a, b))]
    worst = None
    rank = {PREFETCHED: 0, BEFORE: 1, AFTER: 2}
    for a, b in inner:
        body = range(a, b + 1)
        loads = {m.group(1): k for k in body if (m := _SCALE_LOAD.match(lines[k]))}
        if not loads:
            continue
        carried = _carried_names(lines, a, b)
        for k in body:  # one hop: a layout conversion or select between the load and the yield
            d = _DEFINES.match(lines[k])
            if d and d.group(1) in carried:
                carried |= {name for name in loads if re.search(rf"{re.escape(name)}\b", lines[k].split("=", 1)[1])}
        dot = min(k for k in body if _DOT.search(lines[k]))
        in_step = [k for name, k in loads.items() if name not in carried]
        here = PREFETCHED if not in_step else (BEFORE if max(in_step) < dot else AFTER)
        worst = here if worst is None or rank[here] > rank[worst] else worst
    return None if worst is None else worst.format(mma)


_NARROW_MUL = re.compile(r"^\s*(?:mul|mad)\.(?:lo|hi)\.[su]32\b|^\s*shl\.b32\b")
_WIDE_USE = re.compile(r"^\s*(?:mul|mad)\.wide\.[su]32\b|^\s*cvt\.[su]64\.[su]32\b")


def stride_products(ptx: str, kernel: str, param_index: int) -> str | None:
    """How the PTX multiplies kernel parameter `param_index` (a row stride): '64' when every
    multiply that uses it is 64-bit (mul.wide.s32, or ld.param.s32 / cvt.s64.s32 into a 64-bit
    register feeding mul.lo.s64), '32' when some use is a 32-bit multiply or shift (mul.lo.s32,
    mad.lo.s32, shl.b32), None when the parameter is never loaded or multiplied."""
    param = rf"\[{re.escape(kernel)}_param_{param_index}\]"
    regs = set(re.findall(rf"ld\.param\.[bsu]32\s+(%r\d+),\s*{param}", ptx))
    # a sign-extending load straight into a 64-bit register: every later use is 64-bit
    widened = bool(re.search(rf"ld\.param\.[su]32\s+%rd\d+,\s*{param}", ptx))
    if not regs:
        return "64" if widened else None
    lines = ptx.splitlines()
    grew = True
    while grew:  # registers the value is copied into
        grew = False
        for line in lines:
            m = re.match(r"\s*mov\.[bsu]32\s+(%r\d+),\s*(%r\d+);", line)
            if m and m.group(2) in regs and m.group(1) not in regs:
                regs.add(m.group(1))
                grew = True
    narrow = wide = False
    for line in lines:
        operands = set(re.findall(r"%r\d+\b", line.split(",", 1)[1] if "," in line else ""))
        if not operands & regs:
            continue
        narrow |= bool(_NARROW_MUL.match(line))
        wide |= bool(_WIDE_USE.match(line))
    return "32" if narrow else ("64" if wide or widened else None)


def _param_index(fn, job: Job, name: str) -> int | None:
    """Index of parameter `name` in the compiled kernel's parameter list (constexprs are dropped)."""
    params = [n for n in fn.arg_names if n not in job.constexprs]
    return params.index(name) if name in params else None


def stub_entry(job: Job, listing: bool = False) -> Entry:
    """The entry of a job before compiling: pruned, skipped, or (listing) listed."""
    from hpcbench.kernels import tuning

    if job.skip:
        status = "pruned" if job.skip.startswith("pruned") else "skipped"
    else:
        status = "listed" if listing else "pending"
    return Entry(job.arch, job.kernel, job.variant, job.config, job.num_warps, job.num_stages, status=status,
                 error=job.skip, smem_limit=tuning.smem_limit(tuning.parse_arch(job.arch)),
                 smem_estimate=job.smem_estimate)


def compile_job(job: Job, sass: bool = True) -> Entry:
    """Compile one entry and read its facts back; `sass=False` skips the disassembly where no
    spill can be in it (the MMA SASS instruction is then not read)."""
    from hpcbench.kernels import tuning

    entry = stub_entry(job)
    if job.skip:
        return entry
    limit = entry.smem_limit
    import triton
    from triton.backends.compiler import GPUTarget

    fn = _jit_function(getattr(importlib.import_module(job.module), job.kernel))
    if fn is None:
        raise RuntimeError(f"{job.kernel} was decorated in interpreter mode (TRITON_INTERPRET=1)")
    major, minor = tuning.parse_arch(job.arch)
    start = time.perf_counter()
    try:
        # Triton prints ptxas failures (with the whole PTX) to stdout; the exception carries the message
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TRITON_DEFAULT_FP_FUSION notices and the like
            compiled = triton.compile(_source(fn, job), target=GPUTarget("cuda", major * 10 + minor, WARP_SIZE),
                                      options={"num_warps": job.num_warps, "num_stages": job.num_stages})
    except Exception as exc:  # noqa: BLE001 - every compiler failure is a result to report
        entry.status, entry.seconds = "failed", time.perf_counter() - start
        text = str(exc).strip() or type(exc).__name__
        entry.error = next((ln for ln in text.splitlines() if ln.strip()), text)[:300]
        entry.problems.append("compile error")
        return entry
    entry.seconds = time.perf_counter() - start
    entry.status = "ok"
    entry.shared = int(compiled.metadata.shared)
    ptx = compiled.asm.get("ptx", "")
    entry.mma = mma_family(ptx)
    entry.tma = uses_tma(ptx)
    entry.warps_total = int(getattr(compiled.metadata, "num_warps", job.num_warps))
    entry.ws = entry.warps_total > job.num_warps
    entry.scale_loads = scale_load_placement(compiled.asm.get("ttgir", ""), entry.mma)
    usage = _resource_usage(compiled.asm["cubin"], sass)
    entry.regs, entry.stack = usage.get("reg"), usage.get("stack")
    entry.spill_stores, entry.spill_loads, entry.mma_sass = usage["spill_stores"], usage["spill_loads"], usage["mma_sass"]
    widths = [stride_products(ptx, compiled.metadata.name, i)
              for i in (_param_index(fn, job, s) for s in job.wide_strides) if i is not None]
    entry.addr64 = None if not any(widths) else "32" not in widths
    if entry.spill_stores or entry.spill_loads:
        entry.problems.append(f"spills {entry.spill_stores}/{entry.spill_loads} B")
    if entry.shared > limit:
        entry.problems.append(f"shared {entry.shared} B > {limit} B")
    if entry.addr64 is False:
        entry.problems.append("32-bit address offsets")
    entry.problems += missing_facts(entry, job.requires)
    if entry.problems:
        entry.status = "failed"
    return entry


# ---------------------------------------------------------------- the command

def interpreted_kernels_loaded() -> bool:
    """Whether a kernel module was already imported with its kernels decorated for the interpreter."""
    for name in KERNEL_MODULES:
        for value in vars(sys.modules[name]).values() if name in sys.modules else ():
            while value is not None and not inspect.isfunction(value) and not inspect.ismodule(value):
                if type(value).__name__ == "InterpretedFunction":
                    return True
                value = getattr(value, "fn", None)
    return False
