"""Training FLOPs per token, one function per published convention (the convention is part of
the number: at 4-8K tokens they differ by 3-12 %).

Conventions (whatif.md sec. 3):
  six_n                 6 x activated parameters (Kaplan/Chinchilla): no attention scores
  model_flops_per_token 3 x (every GEMM of the forward) + the attention scores, counted
                        - full (every key: "in line with Megatron", NeMo's model TFLOP/s) or
                          causal (the lower triangle only: FlashAttention, DeepSeek's 250 GFLOP);
                        - with recompute: the layers' forward once more (MEG21 Eq. 3), not the head;
                        - MoE: routed experts by top_k (activated) and shared experts; the router
                          is left out (Megatron's count; 0.6 GFLOP/token for DeepSeek-V3);
                        - logits: the output head's GEMM; embeddings are lookups (no FLOPs);
                        - MTP: its modules, only when asked (DeepSeek excludes them).
  meg21_per_sequence    MEG21 Eq. 3, the closed form 96 B s l h^2 (1 + s/6h + V/16lh) per batch.
  mfu                   achieved FLOP/s over the dense BF16 peak (DeepSeek: BF16 peak even with FP8 GEMMs).
"""

from __future__ import annotations

from functools import lru_cache

from hpcbench.benchmarks.whatif.gemms import attention_core_flops, head_gemms, layer_gemms, mtp_gemms
from hpcbench.benchmarks.whatif.specs import ModelSpec

CAUSAL, FULL = "causal", "full"


def forward_layer_flops(m: ModelSpec, index: int, seq: int, attention: str) -> float:
    """Forward FLOPs per token of layer `index`: its GEMMs and attention scores."""
    gemm = sum(g.flops_per_token() for g in layer_gemms(m, index) if g.counted)
    return gemm + attention_core_flops(m, seq, causal=attention == CAUSAL)


@lru_cache(maxsize=1024)
def model_flops_per_token(m: ModelSpec, seq: int, attention: str = CAUSAL, recompute: bool = False,
                          logits: bool = True, mtp: bool = False) -> float:
    """Training FLOPs per token: 3 x forward (forward, input gradient, weight gradient; the
    attention scores' backward counted as twice their forward), plus one more forward of the
    layers when activations are recomputed."""
    if attention not in (CAUSAL, FULL):
        raise ValueError(f"attention must be {CAUSAL!r} or {FULL!r}")
    moe_layers = sum(m.moe_layer(i) for i in range(m.layers))  # the others are alike: dense FFN
    dense_layers = m.layers - moe_layers
    layers = (moe_layers * forward_layer_flops(m, m.layers - 1, seq, attention)
              + (dense_layers * forward_layer_flops(m, 0, seq, attention) if dense_layers else 0.0))
    head = sum(g.flops_per_token() for g in head_gemms(m)) if logits else 0.0
    extra = 0.0
    if mtp and m.mtp_depth:
        module = sum(g.flops_per_token() for g in mtp_gemms(m) if g.counted) + attention_core_flops(m, seq, attention == CAUSAL)
        extra = m.mtp_depth * module
    return (3 + (1 if recompute else 0)) * layers + 3 * head + 3 * extra


def activated_params(m: ModelSpec) -> float:
    """Parameters a token meets: every GEMM weight of the layers (routed experts by top_k) and
    the output head; embeddings excluded (a lookup)."""
    per_layer = sum(sum(g.flops_per_token() / 2 for g in layer_gemms(m, i) if g.counted) for i in range(m.layers))
    return per_layer + sum(g.flops_per_token() / 2 for g in head_gemms(m))


def six_n(m: ModelSpec) -> float:
    """Kaplan/Chinchilla: 6 x activated parameters per token, attention scores not counted."""
    return 6.0 * activated_params(m)


def meg21_per_sequence(seq: int, layers: int, hidden: int, vocab: int) -> float:
    """MEG21 Eq. 3 divided by the batch: 96 s l h^2 (1 + s/6h + V/16lh), GPT with a 4h MLP,
    full attention, activation recomputation counted (four passes over the layers)."""
    s, l, h, v = seq, layers, hidden, vocab
    return 96.0 * s * l * h * h * (1 + s / (6 * h) + v / (16 * l * h))


def mfu(tokens_per_s_per_gpu: float, flops_per_token: float, peak_tflops: float) -> float:
    """Model FLOP utilisation: achieved model FLOP/s per GPU over the dense peak."""
    return tokens_per_s_per_gpu * flops_per_token / (peak_tflops * 1e12)
