"""The matrix multiplications of one transformer layer, per token and per GPU: what the FLOP
conventions count and what the per-action costs time. One list serves both, so a FLOP counted
is a FLOP costed.

A Gemm multiplies `rows` token rows (per token of the microbatch: 1, or top_k for routed experts)
of width K by a K x N weight. Tensor parallelism splits N (column-parallel) or K (row-parallel)
by `tp`. Routed experts: balanced routing gives each GPU top_k rows per token of its
microbatch, spread over its local experts."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hpcbench.benchmarks.whatif.specs import ModelSpec


@dataclass(frozen=True)
class Gemm:
    name: str
    n: int
    k: int
    rows: float = 1.0  # rows per token (top_k for routed experts)
    group: int = 1  # local experts sharing the rows (a grouped GEMM): each sees rows / group per token
    precise: bool = False  # kept in BF16 even in an FP8 run (router, output head: DeepSeek-V3 sec. 3.3.1)
    counted: bool = True  # in model FLOPs (Megatron's count leaves out the router; it is still costed)

    def flops_per_token(self) -> float:
        return 2.0 * self.rows * self.n * self.k


def attention_gemms(m: ModelSpec, tp: int = 1) -> list[Gemm]:
    h = m.hidden
    if m.mla:
        q_out = m.heads * m.qk_dim // tp
        out = ([Gemm("q_down", m.q_lora_rank, h), Gemm("q_up", q_out, m.q_lora_rank)] if m.q_lora_rank
               else [Gemm("q", q_out, h)])
        return out + [Gemm("kv_down", m.kv_lora_rank + m.qk_rope_dim, h),
                      Gemm("kv_up", m.heads * (m.qk_nope_dim + m.v_head_dim) // tp, m.kv_lora_rank),
                      Gemm("attn_out", h, m.heads * m.v_head_dim // tp)]
    kv = max(1, m.kv // tp) if m.kv >= tp else 1  # fewer KV heads than tp ranks: each rank keeps one copy
    return [Gemm("qkv", (m.heads // tp + 2 * kv) * m.dim, h), Gemm("attn_out", h, m.heads * m.dim // tp)]


def _ffn(name: str, width: int, m: ModelSpec, tp: int, rows: float = 1.0, group: int = 1) -> list[Gemm]:
    up = width * (2 if m.gated_ffn else 1) // tp
    return [Gemm(f"{name}_up", up, m.hidden, rows, group), Gemm(f"{name}_down", m.hidden, width // tp, rows, group)]


def ffn_gemms(m: ModelSpec, moe: bool, tp: int = 1, ep: int = 1) -> list[Gemm]:
    if not moe:
        return _ffn("mlp", m.ffn, m, tp)
    out = [Gemm("router", m.experts, m.hidden, precise=True, counted=False)]
    if m.shared_experts:
        out += _ffn("shared", m.shared_experts * m.expert_ffn, m, tp)
    return out + _ffn("experts", m.expert_ffn, m, tp, rows=m.top_k, group=max(1, m.experts // ep))


def layer_gemms(m: ModelSpec, index: int, tp: int = 1, ep: int = 1) -> tuple[Gemm, ...]:
    return _layer_gemms(m, m.moe_layer(index), tp, ep)


@lru_cache(maxsize=1024)
def _layer_gemms(m: ModelSpec, moe: bool, tp: int, ep: int) -> tuple[Gemm, ...]:
    return tuple(attention_gemms(m, tp) + ffn_gemms(m, moe, tp, ep))


def head_gemms(m: ModelSpec, tp: int = 1) -> list[Gemm]:
    """The output head (logits), kept in BF16."""
    return [Gemm("logits", m.vocab // tp, m.hidden, precise=True)]


@lru_cache(maxsize=256)
def mtp_gemms(m: ModelSpec, tp: int = 1, ep: int = 1) -> tuple[Gemm, ...]:
    """One multi-token-prediction module: the projection of [hidden; next embedding] (2h -> h),
    one transformer layer (MoE when the model is) and the shared output head."""
    return (Gemm("mtp_proj", m.hidden, 2 * m.hidden), *layer_gemms(m, m.layers - 1, tp, ep), *head_gemms(m, tp))


def attention_core_flops(m: ModelSpec, seq: int, causal: bool, tp: int = 1) -> float:
    """Forward FLOPs per token of QK^T and PV (per GPU of a tp group): every key of the sequence
    (full) or, on average, half of them (causal: the lower triangle only)."""
    keys = seq / 2 if causal else seq
    return 2.0 * (m.heads // tp) * (m.qk_dim + m.v_dim) * keys
