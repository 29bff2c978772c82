"""What `hpcbench compile-kernels` compiles: every kernel x variant x autotune config the code would
launch on an architecture, specialized the way the launch wrappers call it (hpcbench.kernelcheck.check
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
    # the weight-gradient kernel: 1x128 scales along K (the tokens) on both operands (DeepGEMM's "1D1D")
    from hpcbench.kernels import matmul_fp8_block

    scale_1d1d = {"stride_asm": 1, "stride_bsn": 1}
    unaligned_1d1d = ("stride_ask", "stride_bsk")
    jobs += _skip_all(list(_config_jobs(
        arch, "_matmul_fp8_1d1d_kernel", "hpcbench.kernels.matmul_fp8_block", "fp8 1d1d", types,
        {"stride_ak": 1, "stride_bk": 1, "stride_cn": 1, **scale_1d1d}, tuning.fp8_block_configs(capability=cap),
        1, limit, wide_strides=MM_WIDE, unaligned=unaligned_1d1d)), fp8_skip)
    jobs += _skip_all(list(_config_jobs(
        arch, "_matmul_fp8_1d1d_tma_kernel", "hpcbench.kernels.matmul_fp8_block", "fp8 1d1d", types, scale_1d1d,
        matmul_fp8_block.tma_1d1d_configs(cap), 1, limit, requires=("wgmma", "tma"), wide_strides=MM_WIDE,
        unaligned=unaligned_1d1d + ("num_programs",))), _hopper_path_skip(cap) or fp8_skip)
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
            for kernel, consts in quantize.compiled_launches() for x_type in ("*bf16", "*fp32")] + [
        Job(arch, kernel, "hpcbench.kernels.quantize", f"{x_type[1:]} -> fp8 (128x1, transposed)",
            {"x_ptr": x_type, "q_ptr": "*fp8e4nv", "s_ptr": "*fp32"}, consts, wide_strides=("stride_xm", "stride_qc"),
            unaligned=("stride_sc", "stride_sg"), skip=fp8_skip)
        for kernel, consts in quantize.transpose_quant_launches() for x_type in ("*bf16", "*fp32")]


# the grouped expert GEMMs (kernels/grouped_gemm.py): kernel -> (output type, index pointers, unit strides,
# unit strides of the FP8 scales, integer parameters that need not be multiples of 16, 64-bit row strides)
_GROUPED = {
    "_grouped_contiguous_kernel": (
        "*bf16", ("m_indices_ptr",), ("stride_ak", "stride_bk", "stride_cn"), ("stride_asm", "stride_bsk"),
        ("stride_ask", "stride_bsg", "stride_bsn"), ("stride_am", "stride_bg", "stride_bn", "stride_cm")),
    "_grouped_masked_kernel": (
        "*bf16", ("masked_m_ptr",), ("stride_ak", "stride_bk", "stride_cn"), ("stride_asm", "stride_bsk"),
        ("stride_ask", "stride_bsg", "stride_bsn"),
        ("stride_ag", "stride_am", "stride_bg", "stride_bn", "stride_cg", "stride_cm")),
    "_grouped_k_kernel": (
        "*fp32", ("k_offsets_ptr", "k_sizes_ptr", "scale_offsets_ptr"), ("stride_am", "stride_bn", "stride_cn"),
        # BF16 operands token-major; the token strides meet the 64-bit first token of the expert and, in 32
        # bits, the in-tile offsets below BLOCK_K: by design, so they are not among the checked row strides
        ("stride_asm", "stride_bsn"), ("stride_asb", "stride_bsb"), ("stride_cg", "stride_cm")),
    # FP8 operands K-major (the layout the benchmark passes): the channel strides are the row strides
    "_grouped_k_kernel fp8": (
        "*fp32", ("k_offsets_ptr", "k_sizes_ptr", "scale_offsets_ptr"), ("stride_ak", "stride_bk", "stride_cn"),
        ("stride_asm", "stride_bsn"), ("stride_asb", "stride_bsb"), ("stride_am", "stride_bn", "stride_cg", "stride_cm")),
}
GROUPED_ALIGN_M = 128  # the contiguous layout's default alignment (grouped_gemm.alignment)


def _grouped_jobs(arch, cap, limit, fp8_skip) -> list[Job]:
    """The grouped GEMM kernels, BF16 and FP8, every config the autotuner keeps for the dtype; the
    contiguous kernel's configs whose BLOCK_M does not divide the alignment are pruned as at launch.
    BF16 launches pass A as the (never read) scale pointers, with zero scale strides."""
    from hpcbench.kernels import grouped_gemm, tuning

    jobs: list[Job] = []
    for kernel, fp8 in grouped_gemm.compiled_launches():
        out, index_ptrs, unit, scale_unit, unaligned, wide = _GROUPED.get(f"{kernel} fp8" if fp8 else kernel,
                                                                          _GROUPED[kernel])
        op = "*fp8e4nv" if fp8 else "*bf16"
        types = {"a_ptr": op, "b_ptr": op, "c_ptr": out, **{p: "*i32" for p in index_ptrs},
                 "a_scale_ptr": "*fp32" if fp8 else op, "b_scale_ptr": "*fp32" if fp8 else op}
        consts = {**{k: 1 for k in unit}, **({k: 1 for k in scale_unit} if fp8 else {}),
                  "IS_FP8": fp8, "DOT_IN_FP32": False}
        configs = grouped_gemm.configs_for(fp8, capability=cap)
        in_bytes, out_bytes = (1 if fp8 else 2), _TYPE_BYTES[out]
        fitting = set(map(id, tuning.prune_by_smem(configs, in_bytes, limit, out_bytes)))
        for cfg in configs:
            est = tuning.smem_estimate(cfg, in_bytes, out_bytes)
            if kernel == "_grouped_contiguous_kernel" and not grouped_gemm.fits_alignment(cfg, GROUPED_ALIGN_M):
                skip = f"pruned: BLOCK_M={cfg.kwargs['BLOCK_M']} does not divide the alignment {GROUPED_ALIGN_M}"
            elif id(cfg) not in fitting:
                skip = f"pruned: needs ~{est} B of shared memory > {limit} B"
            else:
                skip = fp8_skip if fp8 else None
            jobs.append(Job(arch, kernel, "hpcbench.kernels.grouped_gemm", "fp8" if fp8 else "bf16", types,
                            {**consts, **cfg.kwargs}, cfg.num_warps, cfg.num_stages, wide_strides=wide,
                            unaligned=unaligned + ("align_m",) * (kernel == "_grouped_contiguous_kernel"),
                            smem_estimate=est, skip=skip))
    return jobs


def jobs_for(arch: str) -> list[Job]:
    """Every (kernel, variant, config) the code would launch on `arch`, pruned ones marked."""
    from hpcbench.kernels import tuning

    cap = tuning.parse_arch(arch)
    limit = tuning.smem_limit(cap)
    fp8_skip = None if cap >= FP8_MIN_CAPABILITY else f"FP8 needs sm_{FP8_MIN_CAPABILITY[0]}{FP8_MIN_CAPABILITY[1]}+"
    return (_matmul_jobs(arch, cap, limit, fp8_skip) + _block_jobs(arch, cap, limit, fp8_skip)
            + _quantize_jobs(arch, fp8_skip) + _grouped_jobs(arch, cap, limit, fp8_skip))


def _skip_all(jobs: list[Job], reason: str | None) -> list[Job]:
    if reason:
        for job in jobs:
            job.skip = reason
    return jobs
