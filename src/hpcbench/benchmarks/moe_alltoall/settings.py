"""The `moe_alltoall:` section: its types, the presets, the points it expands to, and its checks.

Presets and explicit keys: the shape keys (tokens_per_rank, hidden, num_experts, top_k,
dispatch_dtypes, layouts) default to [] in the YAML. A non-empty key is always used as given; an
empty key takes the preset's value (preset=deepseek_v3), or with preset=none the device's default
sweep. On the CPU the deepseek_v3 preset keeps its shape but its 4096 tokens per rank become
CPU_PRESET_TOKENS (the rows say so in `note`), unless tokens_per_rank is given explicitly.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from enum import auto

from omegaconf import MISSING

from hpcbench.benchmarks.moe_alltoall.exchange import RowFormat
from hpcbench.benchmarks.moe_alltoall.routing import (
    FP8_BLOCK,
    MAX_EXACT_TOPK,
    matrix_tokens,
    read_matrix,
)
from hpcbench.api import checks
from hpcbench.api.errors import UserError
from hpcbench.api.family import Choice


class Preset(Choice):
    none = auto()
    deepseek_v3 = auto()  # hidden 7168, 256 experts, top-8, 4096 tokens per rank, FP8 dispatch, BF16 combine


class Layout(Choice):
    per_rank = auto()  # one row per (token, destination rank): DeepEP normal mode
    per_expert = auto()  # one row per (token, expert): DeepEP low-latency mode, pplx


class Payload(Choice):
    bf16 = auto()
    fp8 = auto()  # E4M3 + one FP32 scale per token per 128 channels


class RoutingKind(Choice):
    uniform = auto()
    skewed = auto()
    node_limited = auto()
    matrix = auto()


class Impl(Choice):
    torch = auto()  # torch.distributed.all_to_all_single with split sizes
    deep_ep = auto()  # DeepEP's Buffer, when importable on GPUs (skipped otherwise)


@dataclass
class Config:
    """Types of the `moe_alltoall:` section; defaults and documentation: conf/benchmark/moe_alltoall.yaml."""

    preset: Preset = MISSING
    tokens_per_rank: list[int] = MISSING
    hidden: list[int] = MISSING
    num_experts: list[int] = MISSING
    top_k: list[int] = MISSING
    dispatch_dtypes: list[Payload] = MISSING
    layouts: list[Layout] = MISSING
    routing: RoutingKind = MISSING
    imbalance: list[float] = MISSING
    node_groups: int = MISSING
    groups_per_token: int = MISSING
    traffic_matrix: str = MISSING
    weighted: bool = MISSING
    impls: list[Impl] = MISSING
    expert_overlap: bool = MISSING
    expert_ffn: int = MISSING
    uniform_baseline: bool = MISSING
    seed: int = MISSING
    iters: int = MISSING
    warmup_iters: int = MISSING


SHAPE_KEYS = ("tokens_per_rank", "hidden", "num_experts", "top_k", "dispatch_dtypes", "layouts")
PRESETS = {"deepseek_v3": {"tokens_per_rank": [4096], "hidden": [7168], "num_experts": [256], "top_k": [8],
                           "dispatch_dtypes": ["fp8"], "layouts": ["per_rank"]}}
AUTO = {"cpu": {"tokens_per_rank": [128], "hidden": [256], "num_experts": [24], "top_k": [4],
                "dispatch_dtypes": ["bf16", "fp8"], "layouts": ["per_rank", "per_expert"]},
        "cuda": {"tokens_per_rank": [1024, 4096], "hidden": [7168], "num_experts": [256], "top_k": [8],
                 "dispatch_dtypes": ["bf16", "fp8"], "layouts": ["per_rank", "per_expert"]}}
CPU_PRESET_TOKENS = 256
AUTO_FFN = {"cpu": 32, "cuda": 2048}


@dataclass(frozen=True)
class Sizes:
    tokens_per_rank: tuple[int, ...] | None  # None: from the traffic matrix
    hidden: tuple[int, ...]
    num_experts: tuple[int, ...]
    top_k: tuple[int, ...]
    dispatch_dtypes: tuple[str, ...]
    layouts: tuple[str, ...]
    note: str | None  # how a preset was sized down, if it was


def sizes(cfg: Config, kind: str) -> Sizes:
    chosen, note = {}, None
    for key in SHAPE_KEYS:
        given = [str(v) if isinstance(v, Choice) else v for v in getattr(cfg, key)]
        chosen[key] = tuple(given or (PRESETS[cfg.preset][key] if cfg.preset != "none" else AUTO[kind][key]))
    tokens_given = bool(cfg.tokens_per_rank)
    if cfg.preset != "none" and kind == "cpu" and not tokens_given:
        chosen["tokens_per_rank"] = (CPU_PRESET_TOKENS,)
        note = (f"preset {cfg.preset} sized down for the CPU: tokens_per_rank {PRESETS[cfg.preset]['tokens_per_rank'][0]}"
                f" -> {CPU_PRESET_TOKENS} (set moe_alltoall.tokens_per_rank to override)")
    elif cfg.routing == "matrix" and not tokens_given and cfg.preset == "none":
        chosen["tokens_per_rank"] = None
    return Sizes(**chosen, note=note)


@dataclass(frozen=True)
class Point:
    """What identifies a point (the family's PARAMS, less `phase`)."""

    impl: str
    layout: str
    dispatch_dtype: str
    tokens_per_rank: int
    hidden: int
    num_experts: int
    top_k: int
    routing: str
    imbalance: float | None
    node_groups: int | None
    groups_per_token: int | None
    traffic_matrix: str | None
    weighted: bool
    seed: int

    def params(self) -> dict:
        return asdict(self)

    @property
    def fmt(self) -> RowFormat:
        return RowFormat(self.dispatch_dtype, self.hidden, self.layout, self.top_k, self.weighted)

    @property
    def routing_key(self) -> tuple:
        return (self.tokens_per_rank, self.num_experts, self.top_k, self.routing, self.imbalance, self.node_groups,
                self.groups_per_token, self.traffic_matrix, self.seed)

    @property
    def label(self) -> str:
        return label_of(self.params())


def _int(v) -> int:
    return int(float(v))


def label_of(row: dict) -> str:
    """A point's short name (its pytest case id, less the phase); rows read back by pandas are fine."""
    kind = row["routing"]
    route = {"skewed": lambda: f"skewed{float(row['imbalance']):g}",
             "node_limited": lambda: f"node_limited{_int(row['node_groups'])}g{_int(row['groups_per_token'])}"}
    return (f"{row['impl']}-{row['layout']}-{row['dispatch_dtype']}-t{_int(row['tokens_per_rank'])}"
            f"-h{_int(row['hidden'])}-e{_int(row['num_experts'])}-k{_int(row['top_k'])}"
            f"-{route[kind]() if kind in route else kind}")


def phases(impl: str, expert_overlap: bool) -> tuple[str, ...]:
    """The rows a point yields: counts (torch: the layout, the count exchange and the host's read of
    the splits) or layout (DeepEP: its local layout kernel alone; its count exchange runs inside an
    uncached dispatch and cannot be timed apart, so the row is named for what it times), dispatch,
    combine, and the overlapped micro-batches (torch only)."""
    first = "layout" if impl == "deep_ep" else "counts"
    return (first, "dispatch", "combine", *(("overlapped",) if expert_overlap and impl == "torch" else ()))


def _routing_variants(cfg: Config) -> list[dict]:
    none = {"imbalance": None, "node_groups": None, "groups_per_token": None, "traffic_matrix": None}
    if cfg.routing == "skewed":
        return [{**none, "imbalance": float(r)} for r in cfg.imbalance]
    if cfg.routing == "node_limited":
        return [{**none, "node_groups": cfg.node_groups, "groups_per_token": cfg.groups_per_token}]
    if cfg.routing == "matrix":
        return [{**none, "traffic_matrix": cfg.traffic_matrix}]
    return [none]


def points(cfg: Config, kind: str) -> list[Point]:
    """Every point, in run order: shapes and routings outermost (one routing drawn per group)."""
    s = sizes(cfg, kind)
    matrix = read_matrix(cfg.traffic_matrix) if cfg.routing == "matrix" else None
    out = []
    for k, hidden, experts in itertools.product(s.top_k, s.hidden, s.num_experts):
        tokens = s.tokens_per_rank or (matrix_tokens(matrix, k),)
        for t, variant in itertools.product(tokens, _routing_variants(cfg)):
            for layout, dtype, impl in itertools.product(s.layouts, s.dispatch_dtypes, cfg.impls):
                out.append(Point(str(impl), layout, dtype, t, hidden, experts, k, str(cfg.routing), **variant,
                                 weighted=cfg.weighted, seed=cfg.seed))
    return out


# ---- checks ---------------------------------------------------------------------------------------

def _check_numbers(cfg: Config) -> None:
    checks.at_least("moe_alltoall", cfg, {"expert_ffn": "0 = auto"}, iters=1, warmup_iters=0, expert_ffn=0, seed=0,
                    node_groups=1, groups_per_token=1)  # the last two checked even where routing does not read them
    if (cfg.routing == "skewed" and not cfg.imbalance) or any(not r >= 1 for r in cfg.imbalance):
        raise UserError(f"moe_alltoall.imbalance={list(cfg.imbalance)}: use ratios >= 1 (the busiest rank receives "
                        "r x the mean of the others; 1 = uniform)")
    if cfg.routing == "matrix" and not cfg.traffic_matrix:
        raise UserError("moe_alltoall.traffic_matrix: routing=matrix needs a file of W x W token counts")
    if not cfg.impls:
        raise UserError("moe_alltoall.impls: name at least one of torch, deep_ep")


def _check_shape(cfg: Config, s: Sizes) -> None:
    for key in ("tokens_per_rank", "hidden", "num_experts", "top_k"):
        checks.each_positive(f"moe_alltoall.{key}", getattr(s, key) or ())
    if "fp8" in s.dispatch_dtypes and any(h % FP8_BLOCK for h in s.hidden):
        bad = next(h for h in s.hidden if h % FP8_BLOCK)
        raise UserError(f"moe_alltoall.hidden={bad}: FP8 dispatch needs a multiple of {FP8_BLOCK} "
                        "(one scale per 128 channels); use dispatch_dtypes=[bf16] or another hidden size")
    for e, k in itertools.product(s.num_experts, s.top_k):
        if k > e:
            raise UserError(f"moe_alltoall.top_k={k} is more than num_experts={e}")
    if max(s.top_k) > MAX_EXACT_TOPK or max(s.num_experts) > 32767:
        raise UserError(f"moe_alltoall: top_k <= {MAX_EXACT_TOPK} and num_experts <= 32767 "
                        "(the exact check and the int16 expert ids)")


def _check_routing(cfg: Config, s: Sizes) -> None:
    if cfg.routing == "node_limited":
        g, per = cfg.node_groups, cfg.groups_per_token
        if g < 1 or not 1 <= per <= g:
            raise UserError(f"moe_alltoall: node_groups={g}, groups_per_token={per}: need 1 <= groups_per_token "
                            "<= node_groups")
        for e, k in itertools.product(s.num_experts, s.top_k):
            if e % g or k > per * (e // g):
                raise UserError(f"moe_alltoall: {e} experts in {g} node groups, top_k={k} within {per} group(s) "
                                "per token: the experts must split evenly and the groups hold the top-k")
    if cfg.routing == "matrix":
        matrix = read_matrix(cfg.traffic_matrix)
        rows = matrix.sum(dim=1)
        for t, k in itertools.product(s.tokens_per_rank or (), s.top_k):
            if int(matrix.max()) > t or int(rows.max()) > k * t:
                raise UserError(f"moe_alltoall.traffic_matrix: needs at least {matrix_tokens(matrix, k)} tokens per "
                                f"rank at top_k={k} (tokens_per_rank={t})")


def check_world(cfg: Config, kind: str, world: int) -> None:
    """Checks that need the number of ranks."""
    s = sizes(cfg, kind)
    for e in s.num_experts:
        if e % world:
            raise UserError(f"moe_alltoall.num_experts={e} is not divisible by the {world} ranks "
                            "(experts are block-partitioned over ranks)")
    if cfg.routing == "node_limited" and world % cfg.node_groups:
        raise UserError(f"moe_alltoall.node_groups={cfg.node_groups} does not divide the {world} ranks")
    if cfg.routing == "matrix":
        n = read_matrix(cfg.traffic_matrix).shape[0]
        if n != world:
            raise UserError(f"moe_alltoall.traffic_matrix is {n} x {n}, the run has {world} ranks")


def validate(cfg: Config) -> None:
    _check_numbers(cfg)
    for kind in ("cpu", "cuda"):
        s = sizes(cfg, kind)
        _check_shape(cfg, s)
        _check_routing(cfg, s)
