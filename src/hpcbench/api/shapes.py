"""Shape presets: YAML files in conf/shapes/<benchmark>/, expanded to (M, N, K) triples.

A preset may combine these keys:
  square: [S, ...]            M = N = K = S
  mnk: [[M, N, K], ...]       explicit triples
  m: [M, ...] with nk: [[N, K], ...]   every M with every (N, K) (weight shapes x token counts)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from hpcbench.api.errors import UserError

Shape = tuple[int, int, int]


def preset_dir(benchmark: str) -> Path:
    return Path(str(resources.files("hpcbench.conf"))) / "shapes" / benchmark


def preset_names(benchmark: str) -> list[str]:
    return sorted(p.stem for p in preset_dir(benchmark).glob("*.yaml"))


def load_preset(benchmark: str, name: str) -> list[Shape]:
    path = preset_dir(benchmark) / f"{name}.yaml"
    if not path.is_file():
        raise UserError(
            f"{benchmark}.shapes={name!r}: no such preset (available: {', '.join(preset_names(benchmark))}, custom)"
        )
    return expand(yaml.safe_load(path.read_text()) or {}, where=f"{benchmark}.shapes={name}")


def _dim(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{where}: sizes must be positive integers, got {value!r}")
    return value


def _pairs(items, n: int, where: str) -> list[tuple[int, ...]]:
    out = []
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != n:
            raise UserError(f"{where}: expected entries of {n} sizes, got {item!r}")
        out.append(tuple(_dim(v, where) for v in item))
    return out


def expand(spec: dict, where: str) -> list[Shape]:
    unknown = set(spec) - {"description", "square", "mnk", "m", "nk"}
    if unknown:
        raise UserError(f"{where}: unknown keys {sorted(unknown)}")
    shapes: list[Shape] = [(s, s, s) for s in (_dim(v, where) for v in spec.get("square", []))]
    shapes += _pairs(spec.get("mnk", []), 3, where)
    if ("m" in spec) != ("nk" in spec):
        raise UserError(f"{where}: 'm' and 'nk' go together")
    ms = [_dim(v, where) for v in spec.get("m", [])]
    shapes += [(m, n, k) for n, k in _pairs(spec.get("nk", []), 2, where) for m in ms]
    if not shapes:
        raise UserError(f"{where}: no shapes")
    return shapes
