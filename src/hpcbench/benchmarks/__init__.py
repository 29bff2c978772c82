"""Benchmark families. A benchmark is one module here plus one YAML file in conf/benchmark/.

The module `hpcbench.benchmarks.<name>` provides
  Config                 a dataclass of its knobs; the `<name>:` section of the config is
                         validated against it (unknown keys and wrong types are user errors)
  run(cfg, ctx)          a generator yielding one row (dict) per measured point, as each
                         completes; the runner adds the common columns and writes it at once
  validate(cfg)          optional: raise UserError for bad values, before anything runs
  table(rows, fallback)  optional: a rich renderable of the rows for the terminal
  PARAMS                 the row columns that identify a point: `hpcbench compare` joins two runs
                         on them (a family without PARAMS is listed as not comparable). Timed rows
                         carry `median_s` and the raw `samples_s` that compare's statistics use
  DISTRIBUTED = True     optional: the benchmark runs on several ranks (torchrun/srun's, or local
                         ranks hpcbench starts); `ctx.world` is then set, `ctx.heartbeat()` feeds
                         the watchdog
and the YAML file selects it: `suite: [<name>]` plus a `<name>:` section of defaults.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from hpcbench.api.errors import UserError


def available() -> list[str]:
    import hpcbench.benchmarks as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def load(name: str) -> ModuleType:
    if name not in available():
        raise UserError(f"unknown benchmark {name!r} (available: {', '.join(available())})")
    module = importlib.import_module(f"hpcbench.benchmarks.{name}")
    for attr in ("Config", "run"):
        if not hasattr(module, attr):
            raise TypeError(f"benchmark module {module.__name__} lacks {attr}")
    return module
