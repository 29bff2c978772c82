"""The three descriptions a what-if composes: a model (architecture only), a cluster (published
hardware figures) and a parallel layout. Each is a YAML file in conf/whatif/<kind>/<name>.yaml,
chosen as a Hydra config group (`whatif/model=llama3_70b`, whose keys `whatif.model.layers=...`
then override) or by name (`whatif.model=llama3_70b`, read here from the same files)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from hpcbench.api.errors import UserError
from hpcbench.api.family import Choice, choices
from hpcbench.pipeline.schedules import SCHEDULES

ScheduleName = choices("WhatifSchedule", SCHEDULES)
Recompute = choices("Recompute", ("none", "selective", "full"))
LayerSplit = choices("LayerSplit", ("even", "balanced"))
GemmDtype = choices("GemmDtype", ("bf16", "fp8"))
StateDtype = choices("StateDtype", ("bf16", "fp32"))


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer. Attention is multi-head/grouped-query unless the MLA ranks are
    set; the FFN is dense unless `experts` > 0 (then the first `dense_layers` layers stay dense)."""

    name: str = ""
    layers: int = 0
    hidden: int = 0
    heads: int = 0
    kv_heads: int = 0  # 0 = heads (multi-head attention)
    head_dim: int = 0  # 0 = hidden / heads
    ffn: int = 0  # dense FFN width
    gated_ffn: bool = False  # SwiGLU: three matrices (gate, up, down) instead of two
    vocab: int = 0
    # multi-head latent attention (DeepSeek-V2/V3); kv_lora_rank 0 = standard attention
    q_lora_rank: int = 0  # 0 = queries projected straight from the hidden state
    kv_lora_rank: int = 0
    qk_nope_dim: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    # mixture of experts; experts 0 = dense
    experts: int = 0
    top_k: int = 0
    shared_experts: int = 0
    expert_ffn: int = 0
    dense_layers: int = 0  # the first layers keep a dense FFN of width `ffn`
    max_nodes_per_token: int = 0  # node-limited routing: a token's experts lie on at most this many nodes (0: no limit)
    mtp_depth: int = 0  # multi-token-prediction modules (each one layer, a projection and the shared output head)
    source: str = ""

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe(self) -> bool:
        return self.experts > 0

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def qk_dim(self) -> int:
        """Per-head width of a query-key dot product."""
        return self.qk_nope_dim + self.qk_rope_dim if self.mla else self.dim

    @property
    def v_dim(self) -> int:
        return self.v_head_dim if self.mla else self.dim

    def moe_layer(self, index: int) -> bool:
        return self.moe and index >= self.dense_layers


@dataclass(frozen=True)
class ClusterSpec:
    """Published per-GPU figures of one machine type. Bandwidths are per GPU and per direction,
    the figures a well-tuned collective reaches (sources in each file), decimal GB/s."""

    name: str = ""
    gpu: str = ""  # what torch calls the device contains this (matches measured runs to it)
    peak_tflops: dict = field(default_factory=dict)  # dense datasheet peak per dtype (bf16, fp8)
    hbm_GB: float = 0.0
    hbm_GBps: float = 0.0
    sms: int = 0
    gpus_per_node: int = 0
    nvlink_GBps: float = 0.0
    nvlink_latency_us: float = 0.0
    net_GBps: float = 0.0  # scale-out network per GPU (one NIC each)
    net_latency_us: float = 0.0
    # THE calibration (one per cluster): the fraction of the dense peak that compute reaches where
    # nothing was measured, fitted on the anchor named in `calibrated_on` and held fixed elsewhere
    compute_efficiency: float = 0.0
    calibrated_on: str = ""
    source: str = ""


@dataclass(frozen=True)
class ParallelSpec:
    """How a training step is laid out over the GPUs. tp x pp x dp x cp = gpus; the experts of
    a MoE layer are split over `ep` of the dp x cp replicas of a stage (not over TP)."""

    name: str = ""
    gpus: int = 0
    tp: int = 1
    pp: int = 1
    dp: int = 0  # 0 = gpus / (tp x pp x cp)
    cp: int = 1
    ep: int = 1
    zero: int = 0  # 0 plain data parallel, 1 optimizer states sharded, 2 + gradients, 3 + parameters
    seq: int = 0
    micro_batch: int = 1  # sequences per microbatch
    global_batch: int = 0  # sequences per step
    microbatches: int = 0  # 0 = global_batch / (dp x micro_batch)
    schedule: ScheduleName = ScheduleName("1f1b")
    layer_split: LayerSplit = LayerSplit("even")  # even: chunks must divide layers; balanced: by cost
    recompute: Recompute = Recompute("none")
    gemm_dtype: GemmDtype = GemmDtype("bf16")
    flash_attention: bool = True  # fused attention: only the computed half of a causal mask, no score traffic
    grad_dtype: StateDtype = StateDtype("bf16")  # gradients as reduced over data parallel
    moment_dtype: StateDtype = StateDtype("fp32")  # Adam's two moments
    dp_overlap: bool = False  # gradient reduce / parameter gather overlapped with the backward / next forward
    tp_overlap: bool = False  # tensor-parallel collectives hidden behind GEMMs
    a2a_sms: int = 0  # SMs reserved for the MoE all-to-all while it overlaps compute (DeepSeek-V3: 20)
    source: str = ""

    @property
    def data_parallel(self) -> int:
        return self.dp or self.gpus // max(1, self.tp * self.pp * self.cp)

    @property
    def microbatch_count(self) -> int:
        per_step = self.data_parallel * self.micro_batch
        return self.microbatches or (self.global_batch // per_step if per_step else 0)


KINDS = {"model": ModelSpec, "cluster": ClusterSpec, "parallel": ParallelSpec}


def spec_dir(kind: str) -> Path:
    return Path(str(resources.files("hpcbench.conf"))) / "whatif" / kind


def names(kind: str) -> list[str]:
    return sorted(p.stem for p in spec_dir(kind).glob("*.yaml"))


@lru_cache(maxsize=None)
def _file(kind: str, name: str) -> dict:
    path = spec_dir(kind) / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"whatif.{kind}={name!r}: no such {kind} (available: {', '.join(names(kind))})")
    return {"name": name, **(yaml.safe_load(path.read_text()) or {})}


def _read(kind: str, name: str) -> dict:
    return dict(_file(kind, name))


def load(kind: str, value) -> object:
    """The `kind` description from a config value: a name (a file) or the composed group (a dict)."""
    if value is None or value == "":
        raise UserError(f"whatif.{kind} is empty (available: {', '.join(names(kind))})")
    raw = _read(kind, str(value)) if isinstance(value, str) else dict(value)
    return typed(f"whatif.{kind}", KINDS[kind], raw)


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _coerce(where: str, hint, value):
    if isinstance(hint, type) and issubclass(hint, Choice):
        if str(value).lower() in ("true", "false") and isinstance(value, bool):
            value = str(value).lower()
        if str(value) not in hint.__members__:
            raise UserError(f"{where}={value!r} (available: {', '.join(hint.__members__)})")
        return hint(str(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}={value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}={value!r}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}={value!r}: expected a number")
        return float(value)
    if hint is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}={value!r}: expected a mapping")
        return {str(k): _coerce(f"{where}.{k}", float, v) for k, v in value.items()}
    return str(value)


def typed(where: str, cls: type, raw: dict):
    """`raw` as an instance of the dataclass `cls`: unknown keys and wrong types are one-line
    UserErrors. (Plain checks rather than OmegaConf's: a sweep of 1,000 configurations loads 3,000.)"""
    hints = _hints(cls)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(hints)})")
    return cls(**{k: _coerce(f"{where}.{k}", hints[k], v) for k, v in raw.items()})


def check_values(model: ModelSpec, cluster: ClusterSpec, par: ParallelSpec) -> None:
    """Values no layout could use (a UserError: a typo, not a point of a sweep)."""
    for what, obj, keys in (("model", model, ("layers", "hidden", "heads", "vocab")),
                            ("cluster", cluster, ("hbm_GB", "hbm_GBps", "sms", "gpus_per_node", "nvlink_GBps",
                                                  "net_GBps")),
                            ("parallel", par, ("gpus", "tp", "pp", "cp", "ep", "seq", "micro_batch"))):
        for key in keys:
            if not getattr(obj, key) > 0:
                raise UserError(f"whatif.{what}.{key} must be positive (got {getattr(obj, key)!r})")
    if model.moe and not (model.top_k > 0 and model.expert_ffn > 0):
        raise UserError("whatif.model: a MoE model needs top_k and expert_ffn")
    if not model.moe and not model.ffn > 0:
        raise UserError("whatif.model.ffn must be positive for a dense model")
    if par.dp < 0 or par.microbatches < 0 or par.global_batch < 0 or par.zero not in (0, 1, 2, 3):
        raise UserError("whatif.parallel: dp, microbatches, global_batch must be >= 0 and zero one of 0..3")
    if not par.global_batch and not par.microbatches:
        raise UserError("whatif.parallel: give global_batch (sequences per step) or microbatches")
    if not 0 < cluster.compute_efficiency <= 1:
        raise UserError("whatif.cluster.compute_efficiency must be in (0, 1]")
    if "bf16" not in cluster.peak_tflops:
        raise UserError("whatif.cluster.peak_tflops needs a bf16 entry")
    if par.gemm_dtype not in cluster.peak_tflops:
        raise UserError(f"whatif: {cluster.name} has no {par.gemm_dtype} peak (its peaks: "
                        f"{', '.join(cluster.peak_tflops)}); use whatif.parallel.gemm_dtype=bf16")
    if not 0 <= par.a2a_sms < cluster.sms:
        raise UserError(f"whatif.parallel.a2a_sms must be in [0, {cluster.sms})")


def infeasible(model: ModelSpec, par: ParallelSpec, chunks: int | None = None) -> str | None:
    """Why this layout cannot run this model (a recorded row of a sweep), or None."""
    denom = par.tp * par.pp * par.cp
    if par.dp and denom * par.dp != par.gpus:
        return f"tp x pp x dp x cp = {denom * par.dp}, not the {par.gpus} GPUs"
    if not par.dp and par.gpus % denom:
        return f"tp x pp x cp = {denom} does not divide the {par.gpus} GPUs"
    dp = par.data_parallel
    if model.heads % par.tp or (model.kv >= par.tp and model.kv % par.tp):
        return f"tp={par.tp} does not divide the {model.heads} heads / {model.kv} KV heads"
    if par.seq % par.cp:
        return f"cp={par.cp} does not divide the sequence of {par.seq}"
    if model.moe:
        if model.experts % par.ep:
            return f"ep={par.ep} does not divide the {model.experts} experts"
        if (dp * par.cp) % par.ep:
            return f"ep={par.ep} does not divide the dp x cp = {dp * par.cp} replicas of a stage"
    elif par.ep != 1:
        return f"ep={par.ep} on a dense model"
    if not par.microbatches and par.global_batch % (dp * par.micro_batch):
        return (f"global batch {par.global_batch} is not a multiple of dp x micro_batch = "
                f"{dp} x {par.micro_batch}")
    if par.microbatch_count < 1:
        return "no microbatch per step"
    if chunks is not None and par.layer_split == "even" and model.layers % chunks:
        return (f"pp={par.pp} with {chunks // par.pp} chunk(s) per rank cuts {chunks} stages, which do not divide "
                f"the {model.layers} layers (layer_split=balanced allows uneven stages)")
    if chunks is not None and chunks > model.layers + 1:
        return f"{chunks} pipeline stages for {model.layers} layers"
    return None

