"""The grouped GEMM variants: hpcbench's Triton kernels and the torch baselines, prepared per problem.

Preparation (outside any timed region): weights quantized offline per expert, activations once,
and every layout or scale transposition a baseline needs. The timed callable is the GEMM alone,
writing into the same output buffer each time.

  triton_bf16 / triton_fp8   kernels/grouped_gemm.py: padding rows and rows beyond masked_m are
                             never computed or written
  torch_loop_bf16            one torch.matmul per expert, into the output's rows (k_grouped: the
                             BF16 product copied into the FP32 output)
  torch_loop_fp8             one block-scaled torch._scaled_mm per expert (the same 1x128 / 128x128
                             recipe; cuBLASLt with CUDA >= 12.9 on sm_90); elsewhere skipped with
                             torch's reason (torch 2.13 on the CPU refuses block-wise scales)
  torch_grouped_mm_bf16      torch._grouped_mm: contiguous with the padded segment ends as offsets,
                             so it also computes the padding rows; masked over the whole capacity
                             (3-D x 3-D); k_grouped with offsets along K, BF16 output. It allocates
                             its output, so there is no untouched-row check for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hpcbench.measure.accuracy import FP32, PROMOTED_K128
from hpcbench.benchmarks.grouped_gemm.problems import Problem

FP8 = torch.float8_e4m3fn


@dataclass(frozen=True)
class Variant:
    kernel: str
    backend: str  # triton | torch_loop | torch_grouped_mm
    dtype: str  # bf16 | fp8


# Order: BF16 before FP8 of each backend, so the FP8 rows can carry their speedup.
ALL_VARIANTS = [
    Variant("torch_loop_bf16", "torch_loop", "bf16"),
    Variant("torch_grouped_mm_bf16", "torch_grouped_mm", "bf16"),
    Variant("triton_bf16", "triton", "bf16"),
    Variant("torch_loop_fp8", "torch_loop", "fp8"),
    Variant("triton_fp8", "triton", "fp8"),
]


class NotSupported(Exception):
    """The variant cannot run here (a skipped row with this reason)."""


@dataclass
class Prepared:
    run: Callable[[], torch.Tensor]  # the GEMM; returns the output (the buffer it was given, or its own)
    in_place: bool  # writes only the rows it must into the given buffer: untouched rows can be checked
    accumulation: str
    dequantized: tuple[torch.Tensor, torch.Tensor] | None = None  # FP8: the inputs as float64, for the kernel check
    kernel_impl: str | None = None


# ---- quantization (DeepSeek-V3 blocks) and its inverse ------------------------------------------------

def _quantize_experts(b: torch.Tensor):
    """Weights [G, N, K] in 128x128 blocks per expert: (q [G, N, K], scales [G, ceil(N/128), ceil(K/128)])."""
    from hpcbench.kernels.quantize import quantize_128x128

    qs, ss = zip(*(quantize_128x128(b[g]) for g in range(b.shape[0])))
    return torch.stack(qs), torch.stack(ss)


def _expand(scale: torch.Tensor, rows: int, cols: int, row_block: int) -> torch.Tensor:
    s = scale.double().repeat_interleave(row_block, 0)[:rows]
    return s.repeat_interleave(128, 1)[:, :cols]


def _dequantize_rows(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """1x128 tiles: q [R, K], s [R, ceil(K/128)] -> float64 [R, K]."""
    return q.double() * _expand(s, q.shape[0], q.shape[1], 1)


def _dequantize_experts(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.stack([q[g].double() * _expand(s[g], q.shape[1], q.shape[2], 128) for g in range(q.shape[0])])


def _dequantize_k(q: torch.Tensor, s: torch.Tensor, offsets: list[int], sizes: list[int],
                  scale_starts: list[int]) -> torch.Tensor:
    """128 tokens x 1 channel per expert: q [sum_k, C], s [n_blocks, C] -> float64 [sum_k, C]."""
    out = torch.zeros(q.shape, dtype=torch.float64, device=q.device)
    for g in range(len(sizes)):
        lo, hi = offsets[g], offsets[g] + sizes[g]
        if hi > lo:
            blocks = s[scale_starts[g]:scale_starts[g + 1]].double().repeat_interleave(128, 0)[: hi - lo]
            out[lo:hi] = q[lo:hi].double() * blocks
    return out


def _quantized(problem: Problem):
    """(aq, a_scale, bq, b_scale, extra, dequantized inputs) of the problem's FP8 recipe."""
    from hpcbench.kernels import grouped_gemm as gg
    from hpcbench.kernels.quantize import quantize_1x128

    a, b = problem.a, problem.b
    if problem.layout == "k_grouped":
        aq, sa, starts = gg.quantize_k_grouped(a, problem.starts, problem.sizes)
        bq, sb, _ = gg.quantize_k_grouped(b, problem.starts, problem.sizes)
        s = starts.tolist()
        deq = (_dequantize_k(aq, sa, problem.starts, problem.sizes, s),
               _dequantize_k(bq, sb, problem.starts, problem.sizes, s))
        return aq, sa, bq, sb, starts, deq
    flat = a.reshape(-1, a.shape[-1])  # masked: A viewed as [G * max_m, K]
    aq, sa = quantize_1x128(flat)
    bq, sb = _quantize_experts(b)
    deq = (_dequantize_rows(aq, sa).view(a.shape), _dequantize_experts(bq, sb))
    return aq.view(a.shape), sa, bq, sb, None, deq


# ---- Triton ---------------------------------------------------------------------------------------

def prepare_triton(v: Variant, problem: Problem, out: torch.Tensor) -> Prepared:
    from hpcbench.kernels import grouped_gemm as gg

    p = problem.point
    if v.dtype == "bf16":
        a, b, sa, sb, extra, deq = problem.a, problem.b, None, None, None, None
        accumulation = FP32
    else:
        a, sa, b, sb, extra, deq = _quantized(problem)
        accumulation = PROMOTED_K128 if a.device.type == "cuda" else FP32  # the interpreter: FP32 throughout
        if problem.layout == "k_grouped":  # K-major copies (kernels/grouped_gemm.py: what FP8 wgmma reads)
            a, b = a.t().contiguous().t(), b.t().contiguous().t()
    if problem.layout == "contiguous":
        def run():
            return gg.grouped_contiguous(a, b, problem.index, out, sa, sb, align_m=p.alignment)
    elif problem.layout == "masked":
        def run():
            return gg.grouped_masked(a, b, problem.index, out, sa, sb)
    else:
        def run():
            return gg.grouped_k(a, b, problem.index, problem.k_sizes, out, extra, sa, sb, align_k=p.alignment)
    return Prepared(run, in_place=True, accumulation=accumulation, dequantized=deq, kernel_impl="pointer")


# ---- torch: a loop over experts -------------------------------------------------------------------------

def _blocks(problem: Problem):
    """(expert, first row/token, count) of every expert with work."""
    starts = problem.starts or [0] * problem.point.G
    return [(g, s, m) for g, (s, m) in enumerate(zip(starts, problem.sizes)) if m > 0]


def prepare_torch_loop(v: Variant, problem: Problem, out: torch.Tensor) -> Prepared:
    if v.dtype == "fp8":
        return _prepare_scaled_mm_loop(problem, out)
    a, b, blocks = problem.a, problem.b, _blocks(problem)
    if problem.layout == "contiguous":
        def run():
            for g, s, m in blocks:
                torch.matmul(a[s:s + m], b[g].t(), out=out[s:s + m])
            return out
    elif problem.layout == "masked":
        def run():
            for g, _, m in blocks:
                torch.matmul(a[g, :m], b[g].t(), out=out[g, :m])
            return out
    else:
        empty = [g for g in range(problem.point.G) if g not in {blk[0] for blk in blocks}]

        def run():
            for g, s, k in blocks:
                out[g].copy_(torch.matmul(a[s:s + k].t(), b[s:s + k]))
            for g in empty:
                out[g].zero_()
            return out
    return Prepared(run, in_place=True, accumulation=FP32)


def _scaled_mm(aq, sa_1x128, bq_t, sb, b_kind: str):
    """One block-scaled FP8 GEMM through torch: A [m, k] (1x128 scales, torch's (1, m) layout),
    B^T given as [k, n] column-major; sb 128x128 block scales or 1x128 along K."""
    F = torch.nn.functional
    if hasattr(F, "scaled_mm") and hasattr(F, "ScalingType"):  # torch >= 2.10: explicit recipes
        kind_b = F.ScalingType.BlockWise128x128 if b_kind == "block" else F.ScalingType.BlockWise1x128
        return F.scaled_mm(aq, bq_t, sa_1x128, F.ScalingType.BlockWise1x128, sb, kind_b,
                           output_dtype=torch.bfloat16)
    return torch._scaled_mm(aq, bq_t, scale_a=sa_1x128, scale_b=sb, out_dtype=torch.bfloat16)


def _torch_scale_b_blocks(sb: torch.Tensor) -> torch.Tensor:
    """torch's layout of 128x128 scales of B^T (K, N): (round_up(K/128, 4), N/128), transposed
    storage (as the gemm family's block baseline); the padding is never read."""
    nb, kb = sb.shape
    padded = torch.ones(nb, 4 * -(-kb // 4), dtype=sb.dtype, device=sb.device)
    padded[:, :kb] = sb
    return padded.t()


def _prepare_scaled_mm_loop(problem: Problem, out: torch.Tensor) -> Prepared:
    if not hasattr(torch, "_scaled_mm"):
        raise NotSupported("this torch has no torch._scaled_mm")
    aq, sa, bq, sb, extra, deq = _quantized(problem)
    calls = []  # (expert, destination view, operands) prepared in torch's layouts
    if problem.layout == "k_grouped":
        starts = extra.tolist()
        for g, s, k in _blocks(problem):
            a_g = aq[s:s + k].t().contiguous()  # [M, k] K-major
            b_g = bq[s:s + k].t().contiguous().t()  # [k, N] column-major
            sa_g = sa[starts[g]:starts[g + 1]].t()  # (M, k/128), strides (1, M)
            sb_g = sb[starts[g]:starts[g + 1]].t()  # (N, k/128), strides (1, N)
            calls.append((out[g], a_g, sa_g, b_g, sb_g, "1x128"))
    else:
        sa_rows = sa if problem.layout == "contiguous" else sa.view(problem.point.G, problem.point.max_m, -1)
        for g, s, m in _blocks(problem):
            if problem.layout == "contiguous":
                a_g, sa_g, dest = aq[s:s + m], sa_rows[s:s + m], out[s:s + m]
            else:
                a_g, sa_g, dest = aq[g, :m], sa_rows[g, :m], out[g, :m]
            calls.append((dest, a_g.contiguous(), sa_g.t().contiguous().t(), bq[g].t(),
                          _torch_scale_b_blocks(sb[g]), "block"))
    empty = [g for g in range(problem.point.G) if problem.sizes[g] == 0] if problem.layout == "k_grouped" else []

    def run():
        for dest, a_g, sa_g, b_g, sb_g, kind in calls:
            dest.copy_(_scaled_mm(a_g, sa_g, b_g, sb_g, kind))
        for g in empty:
            out[g].zero_()
        return out

    try:
        run()
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        where = (f"sm_{''.join(map(str, torch.cuda.get_device_capability(out.device)))}, CUDA {torch.version.cuda}"
                 if out.device.type == "cuda" else out.device.type)
        raise NotSupported(f"block-wise _scaled_mm per expert: torch {torch.__version__} on {where}: "
                           f"{str(exc).splitlines()[0][:160]}") from exc
    return Prepared(run, in_place=True, accumulation=PROMOTED_K128, dequantized=deq)


# ---- torch._grouped_mm ----------------------------------------------------------------------------------

def grouped_mm_status() -> str | None:
    """None when this torch has torch._grouped_mm, else why not."""
    return None if hasattr(torch, "_grouped_mm") else f"torch {torch.__version__} has no torch._grouped_mm"


def prepare_grouped_mm(v: Variant, problem: Problem, out: torch.Tensor) -> Prepared:
    reason = grouped_mm_status()
    if reason:
        raise NotSupported(reason)
    a, b, dev = problem.a, problem.b, problem.a.device
    if problem.layout == "contiguous":
        ends = problem.starts[1:] + [a.shape[0]]  # each expert's padded run of rows ends where the next starts
        offs = torch.tensor(ends, dtype=torch.int32, device=dev)
        b_t = b.transpose(1, 2)  # [G, K, N] with K-major storage

        def run():
            return torch._grouped_mm(a, b_t, offs=offs)
    elif problem.layout == "masked":
        b_t = b.transpose(1, 2)

        def run():
            return torch._grouped_mm(a, b_t)
    else:
        offs = torch.tensor(problem.starts[1:] + [a.shape[0]], dtype=torch.int32, device=dev)  # padded ends: zeros
        a_t = a.t()  # [M, sum_k]

        def run():
            return torch._grouped_mm(a_t, b, offs=offs)
    try:
        run()
    except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
        raise NotSupported(f"torch._grouped_mm ({problem.layout}) on {dev.type}, torch {torch.__version__}: "
                           f"{str(exc).splitlines()[0][:160]}") from exc
    return Prepared(run, in_place=False, accumulation=FP32)


def prepare(v: Variant, problem: Problem, out: torch.Tensor) -> Prepared:
    if v.backend == "triton":
        return prepare_triton(v, problem, out)
    if v.backend == "torch_loop":
        return prepare_torch_loop(v, problem, out)
    return prepare_grouped_mm(v, problem, out)
