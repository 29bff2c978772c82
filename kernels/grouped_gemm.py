"""Grouped expert GEMMs of MoE layers, in BF16 or FP8 E4M3 with DeepSeek-V3 block scaling.

Three layouts (DeepGEMM's, reference/moe_fp8.md sec. B3), D = A @ B^T per expert (group) g:

  contiguous  A [m_sum, K]: the experts' rows concatenated, each expert's run of rows padded up to
              `align_m` (128 on SM90); `m_indices [m_sum]` int32 holds the expert of each row and
              -1 for padding rows. B [G, N, K]. D [m_sum, N] BF16: padding rows are never written.
  masked      A [G, max_m, K], `masked_m [G]` valid rows per expert. B [G, N, K]. D [G, max_m, N]
              BF16: rows at or beyond masked_m[g] are never written.
  k_grouped   the MoE weight gradient dW_g = dY_g^T @ X_g: fixed M and N, per-expert K (its token
              count). A [sum_k, M] and B [sum_k, N] token-major (as the forward pass leaves
              activations), expert g owning k_sizes[g] tokens from k_offsets[g], a multiple of the
              alignment (DeepGEMM pads each expert's K to 128 on SM90; the gaps hold zeros). D [G, M, N]
              FP32 (an expert with no tokens gets zeros). Any strides work; FP8 operands should be
              K-major (A a [sum_k, M] view of an [M, sum_k] tensor), as the 128x1 re-quantization
              of the backward pass leaves them (V3 sec. 3.5.2) and as FP8 wgmma reads them from
              shared memory: token-major FP8 tiles are transposed through registers, unpipelined.

FP8 scaling: contiguous/masked activations in 1x128 tiles (one scale per row per 128 of K, the
K-major layout `quantize.quantize_1x128` returns) and weights in 128x128 blocks per expert
(B scales [G, ceil(N/128), ceil(K/128)]); k_grouped scales both operands 1x128 along K, i.e.
128 tokens x 1 channel, restarting at each expert's first token (`quantize_k_grouped`: scales
[sum_g ceil(k_g/128), M or N]). Each 128-wide slice of K is one tl.dot into a fresh FP32 partial
sum that is scaled and added to the FP32 accumulator (promotion every 128 of K, V3 sec. 3.3).

Grids: one program per output tile (per expert for masked and k_grouped). A contiguous tile never
mixes experts because BLOCK_M divides the alignment (the autotuner drops the configs that do not);
a tile of padding rows only, or beyond masked_m, returns without touching memory. Address offsets
are 64-bit wherever a row or expert index meets a stride (products reach 2**31: 32 experts x
7168 x 2048 weights, sum_k x M for wgrad), as in matmul.py.

The interpreter workarounds of interpreter.py apply here too: BF16 tiles are upcast before tl.dot
(DOT_IN_FP32) and BF16 results go through an FP32 staging copy of the output (which carries the
caller's contents, so untouched rows stay untouched).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hpcbench.kernels.interpreter import dot_in_fp32, interpreting, store_dtype
from hpcbench.kernels.matmul_fp8_block import IN_STEP_TILE, has_step, weight_scale_ptrs
from hpcbench.kernels.tuning import config_key, fp8_block_configs, matmul_configs, smem_pruner

GROUP = 128  # quantization group along K (and along N for the weight blocks)
FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
INTERPRET_BLOCK_M = 64  # the interpreter configs' BLOCK_M (matmul_configs): alignments must be multiples of it


def configs_for(fp8: bool, capability=None) -> list[triton.Config]:
    """The autotune configs of one dtype: FP8 needs BLOCK_K = 128 (one quantization group per K
    step) and the tiles whose accumulator and partial sum fit in registers (fp8_block_configs);
    BF16 takes the plain GEMM list."""
    return fp8_block_configs(capability) if fp8 else matmul_configs(capability=capability)


def all_configs(capability=None) -> list[triton.Config]:
    """Both dtypes' configs (the autotuner's list; the pruner keeps the operand's own)."""
    seen, out = set(), []
    for cfg in configs_for(False, capability) + configs_for(True, capability):
        if config_key(cfg) not in seen:
            seen.add(config_key(cfg))
            out.append(cfg)
    return out


def fits_alignment(config: triton.Config, align_m: int | None) -> bool:
    return align_m is None or align_m % config.kwargs["BLOCK_M"] == 0


def _pruner(align_arg: str | None = None):
    """Keep the configs of the operand's dtype (always, the interpreter included: an FP8 launch must
    never get BLOCK_K = 64), those whose BLOCK_M divides the alignment (contiguous: one expert per
    tile), then prune by the device's shared memory."""
    by_smem = smem_pruner()

    def prune(configs, named_args, **kwargs):
        fp8 = named_args["a_ptr"].element_size() == 1
        wanted = {config_key(c) for c in configs_for(fp8)}
        align = int(named_args[align_arg]) if align_arg else None
        kept = [c for c in configs if config_key(c) in wanted and fits_alignment(c, align)]
        if not kept:
            raise ValueError(f"no tile config fits align_m={align} (BLOCK_M must divide it)")
        return by_smem(kept, named_args, **kwargs)

    return prune


@triton.jit
def _tile_product(a_ptrs, b_ptrs, a_s_ptrs, b_s_ptrs, b_s_lanes, k_len, step_a, step_b, step_as, step_bs,
                  IS_FP8: tl.constexpr, DOT_IN_FP32: tl.constexpr, PREFETCH: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """sum over k < k_len of A-tile (BLOCK_M, BLOCK_K) x B-tile (BLOCK_K, BLOCK_N), FP32.

    `a_ptrs`/`b_ptrs` address the first K step; each step advances them by `step_a`/`step_b`.
    FP8: the scales of step i are at a_s_ptrs + i*step_as (BLOCK_M of them) and b_s_ptrs +
    i*step_bs (a scalar or BLOCK_N of them, broadcast by the caller's pointer shape; `b_s_lanes`
    is an index of the same shape, for the masks: matmul_fp8_block.has_step); each step
    loads the next step's right after its own promotion (as matmul_fp8_block does: the round trip
    overlaps the next step's loads and MMA), unless not PREFETCH: then each step loads its own
    before its MMA (matmul_fp8_block.IN_STEP_TILE)."""
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    steps = tl.cdiv(k_len, BLOCK_K)
    a_lanes = tl.arange(0, BLOCK_M)
    if IS_FP8 and PREFETCH:  # an expert with no tokens (k_grouped) has no step 0
        a_s = tl.load(a_s_ptrs, mask=has_step(a_lanes, 0, steps), other=0.0)
        b_s = tl.load(b_s_ptrs, mask=has_step(b_s_lanes, 0, steps), other=0.0)
    for i in range(0, steps):
        k_left = k_len - i * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if IS_FP8:
            if not PREFETCH:
                a_s = tl.load(a_s_ptrs + i * step_as)
                b_s = tl.load(b_s_ptrs + i * step_bs)
            partial = tl.dot(a, b)  # 128 products per output, then promoted in FP32
            acc += partial * a_s[:, None] * b_s
            if PREFETCH:
                a_s = tl.load(a_s_ptrs + (i + 1) * step_as, mask=has_step(a_lanes, i + 1, steps), other=0.0)
                b_s = tl.load(b_s_ptrs + (i + 1) * step_bs, mask=has_step(b_s_lanes, i + 1, steps), other=0.0)
        else:
            if DOT_IN_FP32:  # interpreter only: its bf16 tl.dot is broken (see interpreter.py)
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        a_ptrs += step_a
        b_ptrs += step_b
    return acc


@triton.autotune(configs=all_configs(), key=["m_sum", "N", "K"], prune_configs_by={"early_config_prune": _pruner("align_m")})
@triton.jit
def _grouped_contiguous_kernel(
    a_ptr, b_ptr, c_ptr, m_indices_ptr, a_scale_ptr, b_scale_ptr,
    m_sum, N, K, align_m,
    stride_am, stride_ak, stride_bg, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_asm, stride_ask, stride_bsg, stride_bsn, stride_bsk,
    IS_FP8: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # grouped tile order (matmul.tile_offsets): GROUP_M row blocks, which lie in one expert or two
    # neighbours, share the B columns while they are in L2
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(m_sum, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group_id = pid // (GROUP_M * num_pid_n)
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % (GROUP_M * num_pid_n)) % group_size_m)
    pid_n = (pid % (GROUP_M * num_pid_n)) // group_size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    expert_of_row = tl.load(m_indices_ptr + offs_m, mask=offs_m < m_sum, other=-1)
    g = tl.max(expert_of_row, axis=0)  # the tile's expert (BLOCK_M divides the alignment), -1: all padding
    if g >= 0:
        rows = offs_m.to(tl.int64)  # 64-bit offsets: see the module notes
        cols = (offs_n % N).to(tl.int64)  # wrap past the edge: loads stay unmasked in N
        offs_k = tl.arange(0, BLOCK_K)
        # padding rows are read (they exist, and the tile's rows never pass m_sum: BLOCK_M divides the
        # alignment) but never stored; not masking the loads keeps registers free for the accumulators
        a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
        b_ptrs = b_ptr + g.to(tl.int64) * stride_bg + cols[None, :] * stride_bn + offs_k[:, None] * stride_bk
        a_s_ptrs = a_scale_ptr + rows * stride_asm
        b_s_ptrs, b_s_lanes = weight_scale_ptrs(b_scale_ptr + g.to(tl.int64) * stride_bsg, pid_n * BLOCK_N, cols,
                                                stride_bsn, BLOCK_N)
        acc = _tile_product(a_ptrs, b_ptrs, a_s_ptrs, b_s_ptrs, b_s_lanes, K, BLOCK_K * stride_ak, BLOCK_K * stride_bk,
                            stride_ask, stride_bsk, IS_FP8, DOT_IN_FP32, True, BLOCK_M, BLOCK_N, BLOCK_K)
        # the rows' experts again, rather than kept live through the K loop
        valid = tl.load(m_indices_ptr + offs_m) >= 0
        c_ptrs = c_ptr + rows[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & (offs_n[None, :] < N))


@triton.autotune(configs=all_configs(), key=["max_m", "N", "K"], prune_configs_by={"early_config_prune": _pruner()})
@triton.jit
def _grouped_masked_kernel(
    a_ptr, b_ptr, c_ptr, masked_m_ptr, a_scale_ptr, b_scale_ptr,
    max_m, N, K,
    stride_ag, stride_am, stride_ak, stride_bg, stride_bn, stride_bk, stride_cg, stride_cm, stride_cn,
    stride_asm, stride_ask, stride_bsg, stride_bsn, stride_bsk,
    IS_FP8: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    g = tl.program_id(1)
    num_pid_m = tl.cdiv(max_m, BLOCK_M)
    pid_m = tl.program_id(0) % num_pid_m  # column-major tile order: neighbours share B columns
    pid_n = tl.program_id(0) // num_pid_m
    valid_m = tl.load(masked_m_ptr + g)
    if pid_m * BLOCK_M < valid_m:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        g64 = g.to(tl.int64)
        rows = (offs_m % max_m).to(tl.int64)
        cols = (offs_n % N).to(tl.int64)
        offs_k = tl.arange(0, BLOCK_K)
        a_ptrs = a_ptr + g64 * stride_ag + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
        b_ptrs = b_ptr + g64 * stride_bg + cols[None, :] * stride_bn + offs_k[:, None] * stride_bk
        a_s_ptrs = a_scale_ptr + (g64 * max_m + rows) * stride_asm  # scales of A viewed as [G * max_m, K]
        b_s_ptrs, b_s_lanes = weight_scale_ptrs(b_scale_ptr + g64 * stride_bsg, pid_n * BLOCK_N, cols, stride_bsn,
                                                BLOCK_N)
        acc = _tile_product(a_ptrs, b_ptrs, a_s_ptrs, b_s_ptrs, b_s_lanes, K, BLOCK_K * stride_ak, BLOCK_K * stride_bk,
                            stride_ask, stride_bsk, IS_FP8, DOT_IN_FP32, True, BLOCK_M, BLOCK_N, BLOCK_K)
        c_ptrs = c_ptr + g64 * stride_cg + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < valid_m) & (offs_n[None, :] < N))


@triton.autotune(configs=all_configs(), key=["M", "N", "sum_k"], prune_configs_by={"early_config_prune": _pruner()})
@triton.jit
def _grouped_k_kernel(
    a_ptr, b_ptr, c_ptr, k_offsets_ptr, k_sizes_ptr, scale_offsets_ptr, a_scale_ptr, b_scale_ptr,
    M, N, sum_k,
    stride_ak, stride_am, stride_bk, stride_bn, stride_cg, stride_cm, stride_cn,
    stride_asb, stride_asm, stride_bsb, stride_bsn,
    IS_FP8: tl.constexpr, DOT_IN_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    g = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    pid_m = tl.program_id(0) % num_pid_m
    pid_n = tl.program_id(0) // num_pid_m
    # each expert's tokens start at a multiple of the alignment (>= 64): the hint lets K-major loads vectorize
    k_start = tl.multiple_of(tl.load(k_offsets_ptr + g), 64).to(tl.int64)
    # rounded up to 16 tokens, which the zero padding behind every expert holds: a mask of known
    # granularity keeps the K-major loads vectorized and pipelined (the zeros add nothing)
    k_len = tl.multiple_of((tl.load(k_sizes_ptr + g) + 15) // 16 * 16, 16)
    first_block = tl.load(scale_offsets_ptr + g).to(tl.int64)  # this expert's first 128-token scale block
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = (offs_m % M).to(tl.int64)
    cols = (offs_n % N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    # A^T tile (BLOCK_M, BLOCK_K) and B tile (BLOCK_K, BLOCK_N): the expert's first token as a 64-bit
    # scalar offset (sum_k x M passes 2**31), token offsets within the tile in 32 bits (under BLOCK_K x
    # the token stride), the channel offsets 64-bit (K-major FP8 operands: channel x sum_k)
    a_ptrs = a_ptr + k_start * stride_ak + offs_k[None, :] * stride_ak + rows[:, None] * stride_am
    b_ptrs = b_ptr + k_start * stride_bk + offs_k[:, None] * stride_bk + cols[None, :] * stride_bn
    a_s_ptrs = a_scale_ptr + first_block * stride_asb + rows * stride_asm
    b_s_ptrs = b_scale_ptr + first_block * stride_bsb + (cols * stride_bsn)[None, :]
    b_s_lanes = cols[None, :]
    # the K steps cross BLOCK_K token rows: 64-bit products like the offsets above
    step_a = tl.full((), BLOCK_K, tl.int64) * stride_ak
    step_b = tl.full((), BLOCK_K, tl.int64) * stride_bk
    acc = _tile_product(a_ptrs, b_ptrs, a_s_ptrs, b_s_ptrs, b_s_lanes, k_len, step_a, step_b,
                        stride_asb, stride_bsb, IS_FP8, DOT_IN_FP32,
                        not (BLOCK_M == IN_STEP_TILE and BLOCK_N == IN_STEP_TILE),
                        BLOCK_M, BLOCK_N, BLOCK_K)
    c_ptrs = c_ptr + g.to(tl.int64) * stride_cg + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


# ---- launch wrappers --------------------------------------------------------------------------

def _staged(out: torch.Tensor) -> torch.Tensor:
    """The buffer the kernel stores into: `out` itself, or (interpreter rounding defect) an FP32
    copy carrying out's contents, copied back by `_unstage`."""
    return out if store_dtype(out.dtype) == out.dtype else out.to(store_dtype(out.dtype))


def _unstage(out: torch.Tensor, staged: torch.Tensor) -> torch.Tensor:
    if staged is not out:
        out.copy_(staged)
    return out


def _scales(a, b, a_scale, b_scale):
    """Scale pointers and strides; BF16 launches pass A itself (never read) and zero strides."""
    fp8 = a.dtype == FP8_DTYPE
    if fp8 and (a_scale is None or b_scale is None):
        raise ValueError("FP8 operands need a_scale and b_scale")
    if not fp8:
        return a, a, (0, 0), (0, 0, 0)
    return a_scale, b_scale, tuple(a_scale.stride()), tuple(b_scale.stride())


def grouped_contiguous(a, b, m_indices, out, a_scale=None, b_scale=None, align_m: int = 128) -> torch.Tensor:
    """out[r] = A[r] @ B[m_indices[r]]^T for every row r with m_indices[r] >= 0; other rows of
    `out` ([m_sum, N] BF16) are left as they are. FP8: a_scale [m_sum, ceil(K/128)] (1x128 tiles),
    b_scale [G, ceil(N/128), ceil(K/128)] (128x128 blocks). Each expert's run of rows starts at a
    multiple of align_m, so m_sum is one too: the kernel reads whole BLOCK_M tiles unmasked (registers
    for the accumulators), which stays inside A, m_indices and out only then."""
    m_sum, K = a.shape
    G, N, _ = b.shape
    if m_sum % align_m or m_indices.shape != (m_sum,) or out.shape[0] != m_sum:
        raise ValueError(f"grouped_contiguous: m_sum={m_sum} rows must be a multiple of align_m={align_m} (pad each "
                         f"expert's rows to it), with m_indices [{m_sum}] and out [{m_sum}, N]; got m_indices "
                         f"{tuple(m_indices.shape)}, out {tuple(out.shape)}")
    a_s, b_s, (sam, sak), (sbg, sbn, sbk) = _scales(a, b, a_scale, b_scale)
    staged = _staged(out)
    grid = lambda meta: (triton.cdiv(m_sum, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    _grouped_contiguous_kernel[grid](
        a, b, staged, m_indices, a_s, b_s, m_sum, N, K, align_m,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), b.stride(2), staged.stride(0), staged.stride(1),
        sam, sak, sbg, sbn, sbk, IS_FP8=a.dtype == FP8_DTYPE, DOT_IN_FP32=dot_in_fp32(a.dtype),
    )
    return _unstage(out, staged)


def grouped_masked(a, b, masked_m, out, a_scale=None, b_scale=None) -> torch.Tensor:
    """out[g, :masked_m[g]] = A[g, :masked_m[g]] @ B[g]^T; out's other rows are left as they are.
    A [G, max_m, K]; FP8: a_scale the 1x128 scales of A viewed as [G * max_m, K]."""
    G, max_m, K = a.shape
    N = b.shape[1]
    a_s, b_s, (sam, sak), (sbg, sbn, sbk) = _scales(a, b, a_scale, b_scale)
    staged = _staged(out)
    grid = lambda meta: (triton.cdiv(max_m, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), G)  # noqa: E731
    _grouped_masked_kernel[grid](
        a, b, staged, masked_m, a_s, b_s, max_m, N, K,
        a.stride(0), a.stride(1), a.stride(2), b.stride(0), b.stride(1), b.stride(2),
        staged.stride(0), staged.stride(1), staged.stride(2), sam, sak, sbg, sbn, sbk,
        IS_FP8=a.dtype == FP8_DTYPE, DOT_IN_FP32=dot_in_fp32(a.dtype),
    )
    return _unstage(out, staged)


def grouped_k(a, b, k_offsets, k_sizes, out, scale_offsets=None, a_scale=None, b_scale=None,
              align_k: int = 128) -> torch.Tensor:
    """out[g] = A[k_g]^T @ B[k_g] (FP32 [G, M, N]) with A [sum_k, M], B [sum_k, N] and expert g
    owning tokens k_offsets[g] .. k_offsets[g] + k_sizes[g] (int32 [G]; every offset a multiple of
    align_k, itself a multiple of 64, as DeepGEMM aligns each expert's K). FP8: scales from
    `quantize_k_grouped` with its `scale_offsets` ([G+1], each expert's first scale block)."""
    sum_k, M = a.shape
    N = b.shape[1]
    G = k_sizes.numel()
    if align_k % 64:
        raise ValueError(f"align_k={align_k}: the kernel assumes expert offsets that are multiples of 64")
    fp8 = a.dtype == FP8_DTYPE
    if fp8 and (a_scale is None or b_scale is None or scale_offsets is None):
        raise ValueError("FP8 operands need a_scale, b_scale and scale_offsets")
    if not fp8:
        a_scale = b_scale = a
        scale_offsets = k_offsets
    strides = (a_scale.stride(0), a_scale.stride(1), b_scale.stride(0), b_scale.stride(1)) if fp8 else (0, 0, 0, 0)
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]), G)  # noqa: E731
    _grouped_k_kernel[grid](
        a, b, out, k_offsets, k_sizes, scale_offsets, a_scale, b_scale, M, N, sum_k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1), out.stride(2), *strides,
        IS_FP8=fp8, DOT_IN_FP32=dot_in_fp32(a.dtype),
    )
    return out


# ---- the quantizer the other kernels' modules lack: 1x128 along K per expert (k_grouped) -------

def quantize_k_grouped(x: torch.Tensor, k_offsets: list[int], k_sizes: list[int]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [sum_k, C] token-major, expert g owning rows k_offsets[g] .. k_offsets[g] + k_sizes[g]
    (rows between experts, alignment padding, are quantized to zero): one scale per
    channel per 128 tokens of one expert (128x1 tiles, i.e. 1x128 along the wgrad GEMM's K), blocks
    restarting at each expert's first token. Returns (q [sum_k, C] E4M3, scales [n_blocks, C]
    float32, scale_offsets [G+1] int32: expert g's blocks are scale_offsets[g] .. [g+1]).
    Scales are dequantization factors amax / 448 (amax floored at 1e-12), as quantize.py.

    Preparation, outside any timed region (torch ops, one expert at a time)."""
    C = x.shape[1]
    q = torch.zeros(x.shape, dtype=FP8_DTYPE, device=x.device)
    scales, starts = [], [0]
    for lo, size in zip(k_offsets, k_sizes):
        hi = lo + size
        n_blocks = triton.cdiv(hi - lo, GROUP)
        padded = torch.zeros(n_blocks * GROUP, C, dtype=torch.float32, device=x.device)
        padded[: hi - lo] = x[lo:hi].float()
        blocks = padded.view(n_blocks, GROUP, C)
        scale = blocks.abs().amax(dim=1).clamp_min(1e-12) / FP8_MAX  # (n_blocks, C)
        q[lo:hi] = (blocks / scale[:, None, :]).clamp(-FP8_MAX, FP8_MAX).view(-1, C)[: hi - lo].to(FP8_DTYPE)
        scales.append(scale)
        starts.append(starts[-1] + n_blocks)
    all_scales = torch.cat(scales) if scales else torch.empty(0, C, device=x.device)
    return q, all_scales, torch.tensor(starts, dtype=torch.int32, device=x.device)


def compiled_launches() -> list[tuple[str, bool]]:
    """(kernel, IS_FP8) of every launch the wrappers make (for `hpcbench compile-kernels`)."""
    return [(k, fp8) for k in ("_grouped_contiguous_kernel", "_grouped_masked_kernel", "_grouped_k_kernel")
            for fp8 in (False, True)]


__all__ = ["grouped_contiguous", "grouped_masked", "grouped_k", "quantize_k_grouped", "configs_for",
           "fits_alignment", "interpreting", "INTERPRET_BLOCK_M"]
