"""The `grouped_gemm:` section: its types, the shape presets, the points they expand to, its checks.

A shape is a list of sizes whose meaning depends on the layout (DeepGEMM's notation):
  contiguous  [G, M, N, K]         G experts, M rows per receiving expert on average, B [G, N, K]
  masked      [G, M, max_m, N, K]  as contiguous, each expert's rows in a buffer of capacity max_m
  k_grouped   [G, M, N, K]         fixed M and N, K tokens per receiving expert on average (wgrad)
Presets are YAML files in conf/shapes/grouped_gemm/ with one such list per layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import auto

import yaml
from omegaconf import MISSING

from hpcbench.api import checks
from hpcbench.api.errors import UserError
from hpcbench.api.family import Choice
from hpcbench.api.shapes import preset_dir, preset_names

FAMILY_NAME = "grouped_gemm"
MIN_ALIGNMENT = 64  # the smallest BLOCK_M of the Triton configs: a contiguous tile must never span two experts


class Layout(Choice):
    contiguous = auto()  # M-grouped: experts' rows concatenated, padded to the alignment, m_indices (-1: padding)
    masked = auto()  # A [G, max_m, K] with masked_m[G] valid rows
    k_grouped = auto()  # MoE weight gradient: per-expert K (tokens), FP32 out [G, M, N]


class Dtype(Choice):
    bf16 = auto()
    fp8 = auto()  # E4M3, 1x128 activation tiles / 128x128 weight blocks (k_grouped: 1x128 along K on both)


class Backend(Choice):
    triton = auto()  # kernels/grouped_gemm.py
    torch_loop = auto()  # one torch.matmul / torch._scaled_mm per expert
    torch_grouped_mm = auto()  # torch._grouped_mm (BF16), where this torch has it and it runs here


class RoutingKind(Choice):
    uniform = auto()
    skewed = auto()


SHAPE_LENGTHS = {"contiguous": 4, "masked": 5, "k_grouped": 4}
SHAPE_NAMES = {"contiguous": "[G, M, N, K]", "masked": "[G, M, max_m, N, K]", "k_grouped": "[G, M, N, K]"}


@dataclass
class CustomShapes:
    contiguous: list[list[int]] = field(default_factory=list)
    masked: list[list[int]] = field(default_factory=list)
    k_grouped: list[list[int]] = field(default_factory=list)


@dataclass
class Config:
    """Types of the `grouped_gemm:` section; defaults and documentation: conf/benchmark/grouped_gemm.yaml."""

    shapes: str = MISSING  # auto | custom | a preset in conf/shapes/grouped_gemm/
    custom: CustomShapes = MISSING
    layouts: list[Layout] = MISSING
    dtypes: list[Dtype] = MISSING
    backends: list[Backend] = MISSING
    routing: RoutingKind = MISSING
    imbalance: list[float] = MISSING
    empty_experts: int = MISSING
    alignment: int = MISSING
    seed: int = MISSING
    tol_bf16: float = MISSING
    tol_fp8_kernel: float = MISSING
    tol_fp8_e2e: float = MISSING
    interpret_max_flops: float = MISSING


@dataclass(frozen=True)
class Point:
    """One grouped GEMM problem: a layout, a shape, a routing draw."""

    layout: str
    G: int
    M: int
    N: int
    K: int
    max_m: int | None  # masked only
    routing: str
    imbalance: float | None  # skewed only
    empty_experts: int
    alignment: int | None  # contiguous rows, k_grouped tokens per expert
    seed: int

    def params(self) -> dict:
        return {"layout": self.layout, "G": self.G, "M": self.M, "N": self.N, "K": self.K, "max_m": self.max_m,
                "routing": self.routing, "imbalance": self.imbalance, "empty_experts": self.empty_experts}

    @property
    def label(self) -> str:
        return label_of(self.params())


def label_of(row: dict) -> str:
    """'contiguous 4x8192x4096x7168' (masked: '... cap 4096'; skewed: '... r=3')."""
    text = f"{row['layout']} {row['G']}x{row['M']}x{row['N']}x{row['K']}"
    if row.get("max_m") is not None and row["layout"] == "masked":
        text += f" cap {int(row['max_m'])}"
    if row.get("routing") == "skewed":
        text += f" r={float(row['imbalance']):g}"
    return text


# ---- shapes -----------------------------------------------------------------------------------

def _preset(name: str) -> dict:
    path = preset_dir(FAMILY_NAME) / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"grouped_gemm.shapes={name!r}: no such preset "
                        f"(available: {', '.join(preset_names(FAMILY_NAME))}, auto, custom)")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - {"description", *SHAPE_LENGTHS}
    if unknown:
        raise UserError(f"grouped_gemm.shapes={name}: unknown keys {sorted(unknown)}")
    return spec


def _checked(layout: str, items, where: str) -> list[tuple[int, ...]]:
    out = []
    for item in items or []:
        item = list(item) if isinstance(item, (list, tuple)) else item
        if not isinstance(item, list) or len(item) != SHAPE_LENGTHS[layout]:
            raise UserError(f"{where}.{layout}: expected entries {SHAPE_NAMES[layout]}, got {item!r}")
        for i, v in enumerate(item):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                what = f"groups G={v!r}" if i == 0 else f"size {v!r}"
                raise UserError(f"{where}.{layout}: {item}: {what}: must be a positive integer")
        if layout == "masked" and item[1] > item[2]:
            raise UserError(f"{where}.masked: {item}: M={item[1]} rows per expert exceed the capacity max_m={item[2]}")
        out.append(tuple(item))
    return out


def shapes_for(cfg: Config, kind: str | None) -> dict[str, list[tuple[int, ...]]]:
    """Shapes per selected layout. kind: "cpu" | "cuda" (auto picks smoke on the CPU, deepseek_v3
    on a GPU); None validates both of auto's presets."""
    layouts = [str(x) for x in cfg.layouts]
    if cfg.shapes == "custom":
        spec, where = {k: getattr(cfg.custom, k) for k in SHAPE_LENGTHS}, "grouped_gemm.custom"
    else:
        if cfg.shapes != "auto":
            _preset(cfg.shapes)  # an unknown preset is the first thing to say
        if any(getattr(cfg.custom, k) for k in SHAPE_LENGTHS):
            raise UserError("grouped_gemm.custom is only read with grouped_gemm.shapes=custom")
        name = cfg.shapes
        if name == "auto":
            if kind is None:
                for k in ("cpu", "cuda"):
                    shapes_for(cfg, k)
                return shapes_for(cfg, "cpu")
            name = "smoke" if kind == "cpu" else "deepseek_v3"
        spec, where = _preset(name), f"grouped_gemm.shapes={name}"
    chosen = {layout: _checked(layout, spec.get(layout), where) for layout in layouts}
    if not any(chosen.values()):
        raise UserError(f"{where}: no shapes for the layouts {layouts}")
    return chosen


def points(cfg: Config, kind: str | None) -> list[Point]:
    imbalances = [float(r) for r in cfg.imbalance] if cfg.routing == "skewed" else [None]
    out = []
    for layout, shapes in shapes_for(cfg, kind).items():
        for shape in shapes:
            if layout == "masked":
                G, M, max_m, N, K = shape
            else:
                (G, M, N, K), max_m = shape, None
            for r in imbalances:
                # at most G - 1 experts go without tokens: one must receive them
                out.append(Point(layout, G, M, N, K, max_m, str(cfg.routing), r, min(cfg.empty_experts, G - 1),
                                 cfg.alignment if layout != "masked" else None, cfg.seed))
    return out


# ---- value checks (before a run directory exists) ------------------------------------------------

def validate(cfg: Config) -> None:
    checks.positive("grouped_gemm", cfg, "tol_bf16", "tol_fp8_kernel", "tol_fp8_e2e", "interpret_max_flops")
    checks.at_least("grouped_gemm", cfg, seed=0)
    for key in ("layouts", "dtypes", "backends"):
        if not getattr(cfg, key):
            raise UserError(f"grouped_gemm.{key} is empty: nothing to run")
    if cfg.alignment <= 0 or cfg.alignment % MIN_ALIGNMENT:
        raise UserError(f"grouped_gemm.alignment={cfg.alignment}: must be a positive multiple of {MIN_ALIGNMENT} "
                        "(a tile of rows must never span two experts)")
    if cfg.empty_experts < 0:
        raise UserError(f"grouped_gemm.empty_experts={cfg.empty_experts}: must be >= 0")
    if cfg.routing == "skewed" and not cfg.imbalance:
        raise UserError("grouped_gemm.imbalance=[]: routing=skewed needs at least one ratio >= 1")
    if any(not r >= 1 for r in cfg.imbalance):  # checked whatever the routing: a wrong value is a mistake anyway
        raise UserError(f"grouped_gemm.imbalance={list(cfg.imbalance)}: use ratios >= 1 (expert 0 receives r x the "
                        "mean of the others)")
