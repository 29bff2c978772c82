"""Published training steps the what-if model is checked against (inputs: the published
hardware figures and layouts only), and the one calibration per cluster.

  DeepSeek-V3, 2,048 H800 (ISCA'25 Table 4, multi-plane fat-tree): step 19.926 s, 272.80B
    tokens/day, phases 1F 1.13 / bubble 2.06 / 1B 1.99 / 1W 0.48 / F&B 13.95 / optimizer 0.29 s.
  Megatron-LM 2021 Table 1 (A100): TFLOP/s per GPU under MEG21 Eq. 3 (full attention, the
    recomputed forward counted), end to end.
  NeMo 24.12 FP8 pre-training (H100): model TFLOP/s per GPU (full attention, no recompute).

Calibration: each cluster's `compute_efficiency` is fitted (bisection) so that ONE anchor is
matched, then held fixed for every other anchor and configuration: h800 on the DeepSeek-V3 step,
a100 on MEG21's 145.6B row, h100 on NeMo's GPT3-175B row (h200 carries the H100's value).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hpcbench.benchmarks.whatif import specs
from hpcbench.benchmarks.whatif.flops import FULL, model_flops_per_token
from hpcbench.benchmarks.whatif.rates import Rates
from hpcbench.benchmarks.whatif.step import predict

DEEPSEEK_PHASES = {"phase_1f_s": 1.13, "phase_bubble_s": 2.06, "phase_1b_s": 1.99, "phase_1w_s": 0.48,
                   "phase_fnb_s": 13.95, "optimizer_phase_s": 0.29}
MEG21_TFLOPS = {"1_7b": 137, "3_6b": 138, "7_5b": 142, "18_4b": 135, "39_1b": 138, "76_1b": 140, "145_6b": 148,
                "310_1b": 155, "529_6b": 163, "1008b": 163}
NEMO_TFLOPS = {"gpt3_175b": 888, "llama3_70b": 734, "llama3_8b": 711}
TOLERANCE = {"deepseek": 0.15, "meg21": 0.15, "nemo": 0.20}


@dataclass(frozen=True)
class Anchor:
    name: str
    group: str  # deepseek | meg21 | nemo
    metric: str  # what is compared
    published: float
    model: str
    cluster: str
    parallel: str

    def predicted(self, out: dict, model: specs.ModelSpec, par: specs.ParallelSpec) -> float:
        if self.metric == "step_s":
            return out["step_s"]
        if self.metric == "tokens_per_day_B":
            return out["tokens_per_day"] / 1e9
        if self.metric == "meg21_tflops":  # Eq. 3: the recomputed forward counted
            return out["tokens_per_s_per_gpu"] * model_flops_per_token(model, par.seq, FULL, recompute=True) / 1e12
        if self.metric == "model_tflops":
            return out["tflops_per_gpu_full"]
        return out[self.metric]


def anchors() -> list[Anchor]:
    out = [Anchor("DeepSeek-V3 step (s)", "deepseek", "step_s", 19.926, "deepseek_v3", "h800", "deepseek_v3"),
           Anchor("DeepSeek-V3 tokens/day (B)", "deepseek", "tokens_per_day_B", 272.80, "deepseek_v3", "h800",
                  "deepseek_v3")]
    out += [Anchor(f"DeepSeek-V3 {k.replace('phase_', '').replace('_s', '').replace('fnb', 'F&B')} (s)", "phase", k,
                   v, "deepseek_v3", "h800", "deepseek_v3") for k, v in DEEPSEEK_PHASES.items()]
    out += [Anchor(f"MEG21 {k.replace('_', '.').upper()} TFLOP/s/GPU", "meg21", "meg21_tflops", v, f"meg21_{k}",
                   "a100", f"meg21_{k}") for k, v in MEG21_TFLOPS.items()]
    out += [Anchor(f"NeMo {k} FP8 model TFLOP/s/GPU", "nemo", "model_tflops", v, k, "h100", f"nemo_{k}")
            for k, v in NEMO_TFLOPS.items()]
    return out


# one fitted efficiency per cluster with an anchor of its own; the H800 and H200 carry the H100's
# (same compute), so DeepSeek-V3's step on 2,048 H800 is predicted, not fitted
CALIBRATION = {"a100": "MEG21 145.6B TFLOP/s/GPU", "h100": "NeMo gpt3_175b FP8 model TFLOP/s/GPU"}


def evaluate(anchor: Anchor, efficiency: float | None = None) -> float:
    model = specs.load("model", anchor.model)
    cluster = specs.load("cluster", anchor.cluster)
    par = specs.load("parallel", anchor.parallel)
    if efficiency is not None:
        cluster = replace(cluster, compute_efficiency=efficiency)
    return anchor.predicted(predict(model, cluster, par, Rates(cluster)), model, par)


def calibrate(anchor: Anchor) -> float:
    """The compute efficiency at which `anchor` is predicted exactly (bisection; the prediction
    is monotonic in it: faster compute, shorter step, more throughput)."""
    lo, hi = 0.05, 1.0
    rising = evaluate(anchor, hi) > evaluate(anchor, lo)
    for _ in range(40):
        mid = (lo + hi) / 2
        above = evaluate(anchor, mid) > anchor.published
        if above == rising:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def validation_table() -> list[dict]:
    rows = []
    for a in anchors():
        predicted = evaluate(a)
        rows.append({"anchor": a.name, "group": a.group, "published": a.published, "predicted": predicted,
                     "error": predicted / a.published - 1, "cluster": a.cluster,
                     "calibration": CALIBRATION.get(a.cluster) == a.name})
    return rows
