"""Memory per GPU: parameters, gradients, optimizer states and the activations the schedule keeps
in flight (the simulator's peak count of stage-microbatches alive on a rank x one chunk's bytes).

Activations stored per token per layer (bytes; BF16 = 2, FP8 GEMM inputs = 1 in an FP8 run),
a generalisation of Korthikanti et al. (2022) Table 2:
  block inputs           2 x hidden x 2           (the residual stream at both norms)
  attention              standard: Q, K, V, O x 2; MLA: the latents x 2 and O (a GEMM input);
                         unfused attention adds 5 x heads x seq (scores, softmax, dropout mask)
  FFN, per row           its input (a GEMM input) + the gated pair x 2 + the product (a GEMM input);
                         rows = 1 (dense) or top_k + shared experts (MoE)
  recompute=selective    drops the scores, MLA's up-projected Q/K/V and the gated products
  recompute=full         keeps only the layer input (2 x hidden x 2) plus one layer's working set
divided by tp (sequence parallel) and cp (tokens).
Parameters held: the chunks on the rank (DualPipe: two), BF16; gradients in grad_dtype; Adam:
FP32 master + two moments in moment_dtype. ZeRO 1 shards optimizer states over data parallel,
2 also gradients, 3 also parameters (dense over dp x cp, experts over dp x cp / ep).
"""

from __future__ import annotations

from dataclasses import dataclass

from hpcbench.benchmarks.whatif.gemms import head_gemms, layer_gemms, mtp_gemms
from hpcbench.benchmarks.whatif.specs import ModelSpec, ParallelSpec

BYTES = {"bf16": 2, "fp32": 4}


@dataclass(frozen=True)
class ChunkParams:
    dense: float  # parameters replicated over data parallel (dp x cp)
    experts: float  # routed-expert parameters (replicated over dp x cp / ep)


def _split(gemms) -> tuple[float, float]:
    dense = experts = 0.0
    for g in gemms:
        if g.group > 1 or g.name.startswith("experts"):
            experts += g.group * g.n * g.k
        else:
            dense += g.n * g.k
    return dense, experts


def chunk_params(m: ModelSpec, p: ParallelSpec, layers: range, first: bool, last: bool) -> ChunkParams:
    moe = sum(m.moe_layer(i) for i in layers)
    d_moe, e_moe = _split(layer_gemms(m, m.layers - 1, p.tp, p.ep)) if moe else (0.0, 0.0)
    d_dense, _ = _split(layer_gemms(m, 0, p.tp, p.ep)) if len(layers) > moe else (0.0, 0.0)
    dense = moe * d_moe + (len(layers) - moe) * d_dense
    experts = moe * e_moe
    embedding = m.vocab * m.hidden / p.tp
    if first:
        dense += embedding
    if last:
        dense += sum(g.n * g.k for g in head_gemms(m, p.tp))
        for _ in range(m.mtp_depth):  # the head and embedding are shared with the main model
            for g in mtp_gemms(m, p.tp, p.ep)[:-1]:
                if g.group > 1 or g.name.startswith("experts"):
                    experts += g.group * g.n * g.k
                else:
                    dense += g.n * g.k
    return ChunkParams(dense, experts)


def layer_activation_bytes(m: ModelSpec, p: ParallelSpec, index: int) -> float:
    """Bytes one token leaves stored in layer `index` until its backward, per GPU."""
    fp8 = p.gemm_dtype == "fp8"
    gin = 1 if fp8 else 2  # a GEMM input kept for the weight gradient
    selective = p.recompute == "selective"
    h = m.hidden
    out = 2 * h * 2
    if m.mla:
        out += 2 * (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_dim) + gin * m.heads * m.v_dim
        if not selective:
            out += 2 * m.heads * (2 * m.qk_dim + m.v_dim)
    else:
        out += 2 * (m.heads + 2 * m.kv) * m.dim + gin * m.heads * m.dim
    if not p.flash_attention and not selective:
        out += 5 * m.heads * p.seq
    if m.moe_layer(index):
        rows, width = m.top_k + m.shared_experts, m.expert_ffn
    else:
        rows, width = 1, m.ffn
    pair = (2 if m.gated_ffn else 1) * width * 2
    product = 0 if selective else gin * width
    out += rows * (gin * h + pair + product)
    return out / p.tp


def chunk_activation_bytes(m: ModelSpec, p: ParallelSpec, layers: range) -> float:
    """One microbatch's stored activations in a chunk (per GPU)."""
    tokens = p.micro_batch * p.seq / p.cp
    if p.recompute == "full":
        inputs = len(layers) * 2 * m.hidden * 2 / p.tp
        working = max((layer_activation_bytes(m, p, i) for i in layers), default=0.0)
        return tokens * (inputs + working)
    return tokens * sum(layer_activation_bytes(m, p, i) for i in layers)


def state_bytes(params: ChunkParams, p: ParallelSpec) -> dict:
    """Parameters, gradients and optimizer states (bytes) for these parameters on one GPU."""
    dp_dense = p.data_parallel * p.cp
    dp_experts = max(1, dp_dense // p.ep) if p.ep > 1 else dp_dense
    total = params.dense + params.experts

    def sharded(stage: int) -> float:
        if p.zero < stage:
            return total
        return params.dense / dp_dense + params.experts / dp_experts

    opt_per_param = 4 + 2 * BYTES[str(p.moment_dtype)]
    return {"params": 2 * sharded(3), "grads": BYTES[str(p.grad_dtype)] * sharded(2),
            "optimizer": opt_per_param * sharded(1)}
