"""What `hpcbench compile-kernels` compiles: every kernel x variant x autotune config the code would
launch on an architecture, specialized the way the launch wrappers call it (hpcbench.kernelcheck
compiles and checks them)."""

from __future__ import annotations

from dataclasses import dataclass

FP8_MIN_CAPABILITY = (8, 9)  # float8e4nv conversions and FP8 tensor cores: Ada and newer


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
    requires: tuple = ()  # facts the compiled kernel must show: "wgmma", "tma", "ws"

    @property
    def config(self) -> str:
        c = self.constexprs
        if "BLOCK_M" in c:
            return f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']} g{c['GROUP_M']}" + (" ws" if c.get("WARP_SPECIALIZE") else "")
        return " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in c.items()
                        if not k.startswith("stride_"))


_MATMUL_VARIANTS = {
    # variant -> (operand type, scale type, SCALE_MODE); a_scale/b_scale are the A pointer when unused
    "bf16": ("*bf16", "*bf16", 0),
    "fp8 tensor": ("*fp8e4nv", "*fp32", 1),
    "fp8 row": ("*fp8e4nv", "*fp32", 2),
}
_TYPE_BYTES = {"*bf16": 2, "*fp16": 2, "*fp32": 4, "*fp8e4nv": 1}


def _config_jobs(arch, kernel, module, variant, types, constexprs, configs, in_bytes, limit, requires=(), **kw):
    from hpcbench.kernels import tuning

    kept = set(map(id, tuning.prune_by_smem(configs, in_bytes, limit)))
    for cfg in configs:
        est = tuning.smem_estimate(cfg, in_bytes)
        needs = requires + (("ws",) if cfg.kwargs.get("WARP_SPECIALIZE") else ())
        yield Job(arch, kernel, module, variant, types, {**constexprs, **cfg.kwargs}, cfg.num_warps,
                  cfg.num_stages, smem_estimate=est, requires=needs if requires else (),
                  skip=None if id(cfg) in kept else f"pruned: needs ~{est} B of shared memory > {limit} B", **kw)


MM_WIDE = ("stride_am", "stride_bn", "stride_cm")


def _hopper_path_skip(cap) -> str | None:
    """None where hpcbench.kernels.select launches the TMA kernels (this Triton, compiled, `cap`)."""
    import triton

    from hpcbench.kernels import select

    impl = select.matmul_impl(cap, triton.__version__, interpreter=False)
    if impl == select.TMA_PERSISTENT:
        return None
    return f"Hopper path: the {impl} kernel runs on sm_{cap[0]}{cap[1]} with triton {triton.__version__}"


def _matmul_jobs(arch, cap, limit, fp8_skip) -> list[Job]:
    from hpcbench.kernels import tuning

    jobs: list[Job] = []
    hopper_skip = _hopper_path_skip(cap)
    for variant, (op, scale, mode) in _MATMUL_VARIANTS.items():
        types = {"a_ptr": op, "b_ptr": op, "c_ptr": "*bf16", "a_scale_ptr": scale, "b_scale_ptr": scale}
        consts = {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1, "SCALE_MODE": mode, "DOT_IN_FP32": False}
        new = list(_config_jobs(arch, "_matmul_kernel", "hpcbench.kernels.matmul", variant, types, consts,
                                tuning.matmul_configs(capability=cap), _TYPE_BYTES[op], limit, wide_strides=MM_WIDE))
        jobs += _skip_all(new, None if op == "*bf16" else fp8_skip)
        tma = list(_config_jobs(
            arch, "_matmul_tma_kernel", "hpcbench.kernels.matmul_tma", variant, types,
            {"SCALE_MODE": mode, "DOT_IN_FP32": False}, tuning.tma_matmul_configs(cap, _TYPE_BYTES[op]),
            _TYPE_BYTES[op], limit, requires=("wgmma", "tma"), wide_strides=MM_WIDE, unaligned=("num_programs",)))
        jobs += _skip_all(tma, hopper_skip or (None if op == "*bf16" else fp8_skip))
    return jobs


def _block_jobs(arch, cap, limit, fp8_skip) -> list[Job]:
    """The block-scaled kernels, specialized for the scales quantize_1x128 / quantize_128x128 make:
    activation scales K-major (unit stride along M), weight scales row-major (unit stride along K)."""
    from hpcbench.kernels import tuning

    types = {"a_ptr": "*fp8e4nv", "b_ptr": "*fp8e4nv", "c_ptr": "*bf16", "a_scale_ptr": "*fp32", "b_scale_ptr": "*fp32"}
    scale_consts = {"stride_asm": 1, "stride_bsk": 1}
    unaligned = ("stride_ask", "stride_bsn")
    jobs = _skip_all(list(_config_jobs(
        arch, "_matmul_fp8_block_kernel", "hpcbench.kernels.matmul_fp8_block", "fp8 block", types,
        {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1, **scale_consts}, tuning.fp8_block_configs(capability=cap),
        1, limit, wide_strides=MM_WIDE + ("stride_bsn",), unaligned=unaligned)), fp8_skip)
    jobs += _skip_all(list(_config_jobs(
        arch, "_matmul_fp8_block_tma_kernel", "hpcbench.kernels.matmul_fp8_block", "fp8 block", types, scale_consts,
        tuning.tma_block_configs(cap), 1, limit, requires=("wgmma", "tma"), wide_strides=MM_WIDE + ("stride_bsn",),
        unaligned=unaligned + ("num_programs",))), _hopper_path_skip(cap) or fp8_skip)
    return jobs


def _quantize_jobs(arch, fp8_skip) -> list[Job]:
    from hpcbench.kernels import quantize

    quant_types = {
        "_row_amax_kernel": {"amax_ptr": "*fp32"},
        "_amax_cast_kernel": {"q_ptr": "*fp8e4nv", "amax_ptr": "*fp32", "s_ptr": "*fp32"},
        "_group_quant_kernel": {"q_ptr": "*fp8e4nv", "s_ptr": "*fp32"},
    }
    quant_wide = {"_row_amax_kernel": ("stride_xm",), "_amax_cast_kernel": ("stride_xm", "stride_qm"),
                  "_group_quant_kernel": ("stride_xm", "stride_qm", "stride_sm")}
    return [Job(arch, kernel, "hpcbench.kernels.quantize", f"{x_type[1:]} -> fp8", {"x_ptr": x_type, **quant_types[kernel]},
                consts, wide_strides=quant_wide[kernel], unaligned=("stride_sm", "stride_sk"), skip=fp8_skip)
            for kernel, consts in quantize.compiled_launches() for x_type in ("*bf16", "*fp32")]


def jobs_for(arch: str) -> list[Job]:
    """Every (kernel, variant, config) the code would launch on `arch`, pruned ones marked."""
    from hpcbench.kernels import tuning

    cap = tuning.parse_arch(arch)
    limit = tuning.smem_limit(cap)
    fp8_skip = None if cap >= FP8_MIN_CAPABILITY else f"FP8 needs sm_{FP8_MIN_CAPABILITY[0]}{FP8_MIN_CAPABILITY[1]}+"
    return (_matmul_jobs(arch, cap, limit, fp8_skip) + _block_jobs(arch, cap, limit, fp8_skip)
            + _quantize_jobs(arch, fp8_skip))


def _skip_all(jobs: list[Job], reason: str | None) -> list[Job]:
    if reason:
        for job in jobs:
            job.skip = reason
    return jobs
