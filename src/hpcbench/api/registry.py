"""The families hpcbench knows: every `FAMILY` under `hpcbench.benchmarks`, plus plugin modules.

Plugins: `HPCBENCH_FAMILIES=pkg.module[,other]` names importable modules that each declare a
`FAMILY`; a plugin package holding `conf/benchmark/<name>.yaml` beside its `__init__.py` has that
directory added to Hydra's search path (see `config_search_paths`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from functools import cache
from pathlib import Path

from hpcbench.api.errors import UserError
from hpcbench.api.family import Family

PLUGINS_ENV = "HPCBENCH_FAMILIES"
BUILTIN_PACKAGE = "hpcbench.benchmarks"


def _plugin_modules() -> tuple[str, ...]:
    return tuple(m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip())


def _builtin_modules() -> list[str]:
    pkg = importlib.import_module(BUILTIN_PACKAGE)
    return [f"{BUILTIN_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]


@cache
def _families(plugins: tuple[str, ...]) -> dict[str, Family]:
    found: dict[str, Family] = {}
    for module_name in [*_builtin_modules(), *plugins]:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # a built-in family that does not import is a bug: its traceback stands
            if module_name not in plugins:
                raise
            raise UserError(f"{PLUGINS_ENV}: {module_name} does not import ({type(exc).__name__}: {exc})") from None
        fam = getattr(module, "FAMILY", None)
        if not isinstance(fam, Family):
            raise TypeError(f"{module_name} declares no FAMILY = hpcbench.api.family.Family(...)")
        if fam.name in found:
            raise TypeError(f"two families are named {fam.name!r} ({module_name})")
        found[fam.name] = fam
    return dict(sorted(found.items()))


def families() -> dict[str, Family]:
    """Every family, by name."""
    return _families(_plugin_modules())


def names() -> list[str]:
    return list(families())


def get(name: str) -> Family:
    fams = families()
    if name not in fams:
        raise UserError(f"unknown benchmark {name!r} (available: {', '.join(fams)})")
    return fams[name]


def param_defaults(name: str) -> dict:
    """A known family's values for params older runs did not record ({} otherwise)."""
    fam = families().get(name)
    return dict(fam.param_defaults) if fam else {}


def params_of(name: str) -> tuple[str, ...] | None:
    """A known family's PARAMS, else None (a run of a family this installation lacks)."""
    fam = families().get(name)
    return fam.params if fam else None


def config_search_paths() -> list[str]:
    """Hydra search-path entries of plugin packages that ship their own `conf/`."""
    out = []
    for module_name in _plugin_modules():
        try:
            spec = importlib.util.find_spec(module_name)
        except ImportError as exc:  # a parent package that does not exist (no.such.module)
            raise UserError(f"{PLUGINS_ENV}: {module_name} does not import ({type(exc).__name__}: {exc})") from None
        if spec and spec.submodule_search_locations:
            conf = Path(next(iter(spec.submodule_search_locations))) / "conf"
            if conf.is_dir():
                out.append(f"file://{conf}")
    return out
