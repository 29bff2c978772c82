"""Per-action costs of one microbatch through one pipeline chunk (a stage's layers), in seconds.

A layer's forward is its GEMMs (each at the rate for its shape and dtype), the attention scores
(BF16), memory-bound traffic (norms, residuals, activations; the score matrix when attention is
not fused) and its communication: tensor-parallel all-reduces and, for a MoE layer, the
all-to-all dispatch and combine. The backward splits into I (input gradients: the dgrad GEMMs,
the scores' backward, the all-to-all of gradients, and any recomputed forward) and W (the wgrad
GEMMs). An overlapped F&B pair (DualPipe) runs one chunk's forward with another's backward: the
all-to-all of each hides behind the other's compute, which then runs on the SMs the
all-to-all leaves free (the overlap slowdown), so the pair lasts
    max(slowdown x (compute_F + compute_I + compute_W), all-to-all_F + all-to-all_B) + exposed TP.

All-to-all with node-limited routing (DeepSeek-V3 sec. 3.2.2): a token crosses the network once
per destination node other than its own and fans out over NVLink inside each node; the two
links work at once, so a phase lasts max(network bytes / net rate, NVLink bytes / NVLink rate).
With its top_k experts drawn uniformly from at most M nodes, a token reaches
d = M (1 - (1 - 1/M)^top_k) nodes, and g = G (1 - (1 - 1/G)^(top_k/d)) GPUs in each (G per node).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from hpcbench.benchmarks.whatif.gemms import Gemm, attention_core_flops, head_gemms, layer_gemms, mtp_gemms
from hpcbench.benchmarks.whatif.rates import Rates
from hpcbench.benchmarks.whatif.specs import ClusterSpec, ModelSpec, ParallelSpec

# Stated modelling constants (held fixed for every cluster and anchor):
HIDDEN_PASSES = 16  # BF16 reads+writes of a hidden-sized vector per token per layer, forward (norms, residuals, biases, dropout)
FFN_PASSES = 3  # reads+writes per FFN activation element, forward (gate x up product, activation)
SCORE_BYTES = 9  # bytes per attention score, forward, when not fused: softmax read+write 4, dropout read+write+mask 5
FLASH_BACKWARD = 2.5  # fused attention's backward recomputes the scores: 2.5 x its forward FLOPs (2 unfused)
BACKWARD_TRAFFIC = 2.0  # memory-bound backward traffic relative to the forward's
FP8_CAST_BYTES = 3  # an FP8 GEMM operand cast from BF16: read 2 bytes, write 1 (forward: the input;
# backward: the output gradient, and transposed copies of both for the weight gradient: 3x the forward's)


@dataclass(frozen=True)
class Part:
    """One layer (or head/MTP) for one microbatch: compute and communication, seconds."""

    f: float = 0.0  # forward compute
    i: float = 0.0  # input-gradient compute (with any recomputation)
    w: float = 0.0  # weight-gradient compute
    a2a_f: float = 0.0  # all-to-all in the forward (dispatch + combine)
    a2a_b: float = 0.0  # all-to-all in the backward
    tp_f: float = 0.0  # exposed tensor-parallel collectives, forward
    tp_b: float = 0.0

    def __add__(self, o: "Part") -> "Part":
        return Part(*(a + b for a, b in zip(self.astuple(), o.astuple())))

    def astuple(self) -> tuple:
        return (self.f, self.i, self.w, self.a2a_f, self.a2a_b, self.tp_f, self.tp_b)

    def scaled(self, k: float) -> "Part":
        return Part(*(a * k for a in self.astuple()))


@dataclass(frozen=True)
class ChunkCosts:
    """A chunk's action costs (seconds): what the simulator is given."""

    F: float
    I: float
    W: float
    comp_f: float
    comp_b: float  # I + W compute
    a2a_f: float
    a2a_b: float
    tp_f: float
    tp_b: float

    @property
    def B(self) -> float:
        return self.I + self.W

    def pair(self, other: "ChunkCosts", slowdown: float) -> float:
        """This chunk's forward overlapped with `other`'s full backward."""
        comm = self.a2a_f + other.a2a_b
        if comm <= 0:
            return self.F + other.B
        comp = (self.comp_f + other.comp_b) * slowdown
        return max(comp, comm) + self.tp_f + other.tp_b


class LayerCoster:
    """Costs of the layers of one (model, cluster, layout), cached per kind of layer."""

    def __init__(self, model: ModelSpec, cluster: ClusterSpec, par: ParallelSpec, rates: Rates):
        self.m, self.c, self.p, self.r = model, cluster, par, rates
        self.tokens = par.micro_batch * par.seq / par.cp  # tokens of a microbatch on one GPU
        self._cache: dict = {}
        self.a2a_link = "nvlink"  # the link that bounds the all-to-all (where its exposed time is charged)

    # ---- building blocks -------------------------------------------------------------------
    def _gemms(self, gemms: list[Gemm]) -> tuple[float, float, float]:
        """(forward, dgrad, wgrad) seconds of these GEMMs for one microbatch."""
        f = i = w = 0.0
        t, dtype = self.tokens, self.p.gemm_dtype
        cast = 0.0  # FP8 operand elements cast in the forward
        for g in gemms:
            d = "bf16" if g.precise else dtype
            rows = t * g.rows / g.group  # rows each of the `group` local experts multiplies
            f += g.group * self.r.gemm_s(rows, g.n, g.k, d)
            i += g.group * self.r.gemm_s(rows, g.k, g.n, d)
            w += g.group * self.r.gemm_s(g.k, g.n, rows, d)
            if d == "fp8":
                cast += t * g.rows * g.k
        if cast:
            f += self.r.hbm_s(FP8_CAST_BYTES * cast)
            i += self.r.hbm_s(3 * FP8_CAST_BYTES * cast)
        return f, i, w

    def _traffic_s(self, ffn_elems: float) -> float:
        """Forward memory-bound time per microbatch: hidden-sized passes, FFN activations, and
        the score matrix when attention is not fused."""
        m, p, t = self.m, self.p, self.tokens
        tp = p.tp
        nbytes = 2.0 * t * (HIDDEN_PASSES * m.hidden + FFN_PASSES * ffn_elems / tp)
        if not p.flash_attention:
            nbytes += SCORE_BYTES * t * (m.heads // tp) * p.seq
        return self.r.hbm_s(nbytes)

    def _tp_s(self) -> float:
        """One tensor-parallel all-reduce of a microbatch's activations (BF16)."""
        p, c = self.p, self.c
        if p.tp <= 1 or p.tp_overlap:
            return 0.0
        return self.r.collective_s("all_reduce", p.tp, self.tokens * self.m.hidden * 2.0, p.tp > c.gpus_per_node)

    def _a2a_s(self) -> tuple[float, float]:
        """(forward, backward) all-to-all seconds of one MoE layer for one microbatch."""
        m, p, c = self.m, self.p, self.c
        if p.ep <= 1:
            return 0.0, 0.0
        gpn = min(c.gpus_per_node, p.ep)
        nodes = max(1, -(-p.ep // c.gpus_per_node))
        cap = min(m.max_nodes_per_token or nodes, nodes)
        reached = cap * (1 - (1 - 1 / cap) ** m.top_k)
        remote = reached * (1 - 1 / nodes)
        per_node = m.top_k / reached
        gpus = gpn * (1 - (1 - 1 / gpn) ** per_node)
        fanout = reached * gpus * (1 - 1 / gpn)  # NVLink sends per token (the landing GPU forwards)
        h = m.hidden
        dispatch = h * (1 + 4 / 128) if p.gemm_dtype == "fp8" else 2.0 * h  # FP8 rows carry a scale per 128
        combine = 2.0 * h
        net, nv = self.r.moe_Bps("network"), self.r.moe_Bps("nvlink")
        lat = (c.net_latency_us if nodes > 1 else c.nvlink_latency_us) * 1e-6

        self.a2a_link = "network" if remote / net >= fanout / nv else "nvlink"

        def phase(row_bytes: float) -> float:
            return max(self.tokens * remote * row_bytes / net, self.tokens * fanout * row_bytes / nv) + lat

        return phase(dispatch) + phase(combine), 2 * phase(2.0 * h)  # backward: BF16 gradients both ways

    def _attention(self) -> tuple[float, float]:
        """(forward, backward) seconds of the attention scores: the computed triangle or square."""
        flash = self.p.flash_attention
        flops = self.tokens * attention_core_flops(self.m, self.p.seq, causal=flash, tp=self.p.tp)
        f = self.r.attention_s(flops)
        return f, f * (FLASH_BACKWARD if flash else 2.0)

    # ---- layers ----------------------------------------------------------------------------
    def layer(self, index: int) -> Part:
        moe = self.m.moe_layer(index)
        if moe not in self._cache:
            self._cache[moe] = self._layer(layer_gemms(self.m, index, self.p.tp, self.p.ep), moe)
        return self._cache[moe]

    def _layer(self, gemms: list[Gemm], moe: bool) -> Part:
        m, p = self.m, self.p
        gf, gi, gw = self._gemms(gemms)
        af, ab = self._attention()
        if moe:
            ffn = (m.top_k + m.shared_experts) * m.expert_ffn * (2 if m.gated_ffn else 1)
        else:
            ffn = m.ffn * (2 if m.gated_ffn else 1)
        traffic = self._traffic_s(ffn)
        f = gf + af + traffic
        i = gi + ab + BACKWARD_TRAFFIC * traffic
        a2a_f, a2a_b = self._a2a_s() if moe else (0.0, 0.0)
        tp = self._tp_s()
        tp_f, tp_b = 2 * tp, 2 * tp
        if p.recompute == "full":  # the layer's forward again before its backward
            i += f + a2a_f
            tp_b += tp_f
        elif p.recompute == "selective":  # the attention scores again (Korthikanti et al.)
            i += af
        return Part(f, i, gw, a2a_f, a2a_b, tp_f, tp_b)

    def head(self) -> Part:
        """Output head and loss (BF16 GEMM; the loss is one pass over the logits)."""
        if "head" not in self._cache:
            gf, gi, gw = self._gemms(head_gemms(self.m, self.p.tp))
            loss = self.r.hbm_s(2.0 * 3 * self.tokens * self.m.vocab / self.p.tp)
            self._cache["head"] = Part(gf + loss, gi + loss, gw)
        return self._cache["head"]

    def mtp(self) -> Part:
        """The multi-token-prediction modules (each: projection, one layer, the shared head)."""
        if "mtp" not in self._cache:
            m = self.m
            proj = Part(*self._gemms([g for g in mtp_gemms(m, self.p.tp, self.p.ep) if g.name == "mtp_proj"]))
            module = proj + self.layer(m.layers - 1) + self.head()
            self._cache["mtp"] = module.scaled(m.mtp_depth)
        return self._cache["mtp"]

    def chunk(self, layers: range, first: bool, last: bool) -> ChunkCosts:
        total = Part()
        for index in layers:
            total = total + self.layer(index)
        if last:
            total = total + self.head() + (self.mtp() if self.m.mtp_depth else Part())
        gap = self.r.action_gap
        return ChunkCosts(F=total.f + total.a2a_f + total.tp_f + gap, I=total.i + total.a2a_b + total.tp_b + gap,
                          W=total.w + gap, comp_f=total.f, comp_b=total.i + total.w, a2a_f=total.a2a_f,
                          a2a_b=total.a2a_b, tp_f=total.tp_f, tp_b=total.tp_b)


def split_layers(weights: list[float], chunks: int, first_extra: float, last_extra: float) -> list[int]:
    """Layers per chunk, contiguous, minimising the heaviest chunk (its layers' weights plus the
    embedding on the first chunk and the head on the last): bisection on the bound, each chunk
    taking as many layers as fit (optimal for a fixed bound), found by bisection on prefix sums."""
    prefix = list(itertools.accumulate(weights, initial=0.0))
    n = len(weights)

    def counts_for(bound: float) -> list[int] | None:
        out, i = [], 0
        limit = bound * (1 + 1e-12)
        for c in range(chunks - 1):
            room = limit - (first_extra if c == 0 else 0.0)
            j = bisect.bisect_right(prefix, prefix[i] + room, lo=i) - 1  # the most layers that fit
            out.append(j - i)
            i = j
        last = (first_extra if chunks == 1 else 0.0) + last_extra
        if prefix[n] - prefix[i] + last > limit:
            return None
        return out + [n - i]

    lo, hi = max(weights + [0.0]), prefix[n] + first_extra + last_extra
    best = counts_for(hi)
    while hi - lo > 1e-6 * hi:
        mid = (lo + hi) / 2
        found = counts_for(mid)
        if found is None:
            lo = mid
        else:
            hi, best = mid, found
    return best
