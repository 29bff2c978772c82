"""`hpcbench compile-kernels`: compile every Triton kernel for a named GPU architecture, without a GPU.

For each architecture (`--arch sm_90,sm_89,sm_80`) it enumerates every kernel x every dtype/scaling
variant x every autotune config the tuning code offers on that architecture
(`hpcbench.kernels.tuning`), drops the configs the shared-memory pruner drops at run time, and
compiles the rest ahead of time with Triton's own compiler and the `ptxas` its wheel ships
(`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`). Each entry reports the
shared memory (`metadata.shared`), registers and spills (from the cubin, with the wheel's
`cuobjdump`: `n_regs`/`n_spills` are only filled in when a kernel is loaded on a device), the MMA
instruction family in the PTX (wgmma on sm_90, mma.sync before), and whether the row-stride
products of the address offsets are computed in 64 bits.

The exit status is 1 when an entry the autotuner would try fails to compile, spills, needs more
shared memory than the architecture has, or computes an address offset in 32 bits.

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

KERNEL_MODULES = ("hpcbench.kernels.matmul", "hpcbench.kernels.matmul_fp8_block", "hpcbench.kernels.quantize")
FP8_MIN_CAPABILITY = (8, 9)  # float8e4nv conversions and FP8 tensor cores: Ada and newer
WARP_SIZE = 32


# ---------------------------------------------------------------- what to compile

@dataclass
class Job:
    arch: str
    kernel: str
    module: str
    variant: str
    types: dict  # non-constexpr, non-integer parameter -> Triton type ("*bf16")
    constexprs: dict
    num_warps: int = 4
    num_stages: int = 3
    wide_strides: tuple = ()  # row-stride parameters whose products must be 64-bit
    unaligned: tuple = ()  # integer parameters without the divisible-by-16 specialization
    smem_estimate: int | None = None
    skip: str | None = None  # why this entry is not compiled (pruned, unsupported dtype)

    @property
    def config(self) -> str:
        c = self.constexprs
        if "BLOCK_M" in c:
            return f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']} g{c['GROUP_M']}"
        return " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in c.items()
                        if not k.startswith("stride_"))


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
    addr64: bool | None = None
    seconds: float | None = None
    problems: list = field(default_factory=list)


_MATMUL_VARIANTS = {
    # variant -> (operand type, scale type, SCALE_MODE); a_scale/b_scale are the A pointer when unused
    "bf16": ("*bf16", "*bf16", 0),
    "fp8 tensor": ("*fp8e4nv", "*fp32", 1),
    "fp8 row": ("*fp8e4nv", "*fp32", 2),
}
_TYPE_BYTES = {"*bf16": 2, "*fp16": 2, "*fp32": 4, "*fp8e4nv": 1}


def _config_jobs(arch, kernel, module, variant, types, constexprs, configs, in_bytes, limit, **kw):
    from hpcbench.kernels import tuning

    kept = set(map(id, tuning.prune_by_smem(configs, in_bytes, limit)))
    for cfg in configs:
        est = tuning.smem_estimate(cfg, in_bytes)
        yield Job(arch, kernel, module, variant, types, {**constexprs, **cfg.kwargs}, cfg.num_warps,
                  cfg.num_stages, smem_estimate=est,
                  skip=None if id(cfg) in kept else f"pruned: needs ~{est} B of shared memory > {limit} B", **kw)


def jobs_for(arch: str) -> list[Job]:
    """Every (kernel, variant, config) the code would launch on `arch`, pruned ones marked."""
    from hpcbench.kernels import quantize, tuning

    cap = tuning.parse_arch(arch)
    limit = tuning.smem_limit(cap)
    fp8_skip = None if cap >= FP8_MIN_CAPABILITY else f"FP8 needs sm_{FP8_MIN_CAPABILITY[0]}{FP8_MIN_CAPABILITY[1]}+"
    jobs: list[Job] = []
    mm_wide = ("stride_am", "stride_bn", "stride_cm")
    for variant, (op, scale, mode) in _MATMUL_VARIANTS.items():
        types = {"a_ptr": op, "b_ptr": op, "c_ptr": "*bf16", "a_scale_ptr": scale, "b_scale_ptr": scale}
        consts = {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1, "SCALE_MODE": mode, "DOT_IN_FP32": False}
        new = list(_config_jobs(arch, "_matmul_kernel", "hpcbench.kernels.matmul", variant, types, consts,
                                tuning.matmul_configs(capability=cap), _TYPE_BYTES[op], limit, wide_strides=mm_wide))
        jobs += _skip_all(new, None if op == "*bf16" else fp8_skip)
    types = {"a_ptr": "*fp8e4nv", "b_ptr": "*fp8e4nv", "c_ptr": "*bf16", "a_scale_ptr": "*fp32", "b_scale_ptr": "*fp32"}
    consts = {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1, "stride_ask": 1, "stride_bsk": 1}
    jobs += _skip_all(list(_config_jobs(
        arch, "_matmul_fp8_block_kernel", "hpcbench.kernels.matmul_fp8_block", "fp8 block", types, consts,
        tuning.fp8_block_configs(capability=cap), 1, limit,
        wide_strides=mm_wide + ("stride_asm", "stride_bsn"), unaligned=("stride_asm", "stride_bsn"))), fp8_skip)
    quant_types = {
        "_row_amax_kernel": {"amax_ptr": "*fp32"},
        "_amax_cast_kernel": {"q_ptr": "*fp8e4nv", "amax_ptr": "*fp32", "s_ptr": "*fp32"},
        "_group_quant_kernel": {"q_ptr": "*fp8e4nv", "s_ptr": "*fp32"},
    }
    quant_wide = {"_row_amax_kernel": ("stride_xm",), "_amax_cast_kernel": ("stride_xm", "stride_qm"),
                  "_group_quant_kernel": ("stride_xm", "stride_qm", "stride_sm")}
    for kernel, consts in quantize.compiled_launches():
        for x_type in ("*bf16", "*fp32"):
            consts_k = {**consts, "stride_sk": 1} if kernel == "_group_quant_kernel" else consts
            jobs.append(Job(arch, kernel, "hpcbench.kernels.quantize", f"{x_type[1:]} -> fp8",
                            {"x_ptr": x_type, **quant_types[kernel]}, consts_k, wide_strides=quant_wide[kernel],
                            unaligned=("stride_sm",), skip=fp8_skip))
    return jobs


def _skip_all(jobs: list[Job], reason: str | None) -> list[Job]:
    if reason:
        for job in jobs:
            job.skip = reason
    return jobs


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


def _resource_usage(cubin: bytes) -> dict:
    """REG/STACK/LOCAL from `cuobjdump --dump-resource-usage`, spill bytes and the MMA
    instruction from the SASS (STL/LDL are the spill stores and loads; Triton uses no local arrays)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        usage = subprocess.run([nvidia_tool("cuobjdump"), "--dump-resource-usage", f.name],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([nvidia_tool("cuobjdump"), "-sass", f.name],
                              capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    out = {k.lower(): int(v) for k, v in re.findall(r"\b(REG|STACK|LOCAL):(\d+)", usage)}

    def spill_bytes(op):  # STL [R1+0x8], R4 / STL.64 / LDL.LU.128 / STL.U8 ...
        total = 0
        for mods in re.findall(rf"\b{op}((?:\.\w+)*)\s", sass):
            bits = [int(m.lstrip("US")) for m in mods.split(".") if m.lstrip("US").isdigit()]
            total += (bits[0] if bits else 32) // 8
        return total

    out["spill_stores"], out["spill_loads"] = spill_bytes("STL"), spill_bytes("LDL")
    m = re.search(r"\b([A-Z]*MMA\.[\w.]+)", sass)
    out["mma_sass"] = m.group(1) if m else None
    return out


def mma_family(ptx: str) -> str:
    if re.search(r"\bwgmma\.mma_async", ptx):
        return "wgmma"
    if re.search(r"\bmma\.sync", ptx):
        return "mma"
    return "none"


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


def compile_job(job: Job) -> Entry:
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
    usage = _resource_usage(compiled.asm["cubin"])
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
