"""Import names that are not where the module lives.

hpcbench's modules live in the package of their layer (`hpcbench.api`, `hpcbench.measure`, ...;
docs/architecture.md). Two kinds of older name still import:

- PUBLIC: the names README's plugin example and plugin packages import (`hpcbench.family`,
  `hpcbench.timing`, ...), and the console entry point `hpcbench.cli:main`. They are the stable
  plugin API and stay for good, without a warning.
- MOVED: every other module that moved into its layer package; importable by its old name for one
  release, with a DeprecationWarning that names the new place.

Both resolve to the same module object as the new name (one set of classes, one module state):
an alias is a finder on `sys.meta_path`, installed by `hpcbench/__init__.py`, not a file.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings

PUBLIC = {
    "hpcbench.cli": "hpcbench.core.cli",
    "hpcbench.errors": "hpcbench.api.errors",
    "hpcbench.family": "hpcbench.api.family",
    "hpcbench.registry": "hpcbench.api.registry",
    "hpcbench.tables": "hpcbench.api.tables",
    "hpcbench.testing": "hpcbench.core.testing",
    "hpcbench.timing": "hpcbench.measure.timing",
}

MOVED = {
    "hpcbench.sizes": "hpcbench.api.sizes",
    "hpcbench.shapes": "hpcbench.api.shapes",
    "hpcbench.rank_timing": "hpcbench.measure.rank_timing",
    "hpcbench.stragglers": "hpcbench.measure.stragglers",
    "hpcbench.energy": "hpcbench.measure.energy",
    "hpcbench.side_stream": "hpcbench.measure.side_stream",
    "hpcbench.overlap_metrics": "hpcbench.measure.overlap_metrics",
    "hpcbench.accuracy": "hpcbench.measure.accuracy",
    "hpcbench.hardware": "hpcbench.models.hardware",
    "hpcbench.roofline": "hpcbench.models.roofline",
    "hpcbench.costmodel": "hpcbench.models.costmodel",
    "hpcbench.anchors": "hpcbench.models.anchors",
    "hpcbench.config": "hpcbench.core.config",
    "hpcbench.runner": "hpcbench.core.runner",
    "hpcbench.context": "hpcbench.core.context",
    "hpcbench.resume": "hpcbench.core.resume",
    "hpcbench.progress": "hpcbench.core.progress",
    "hpcbench.kernelcheck_cli": "hpcbench.kernelcheck.cli",
    "hpcbench.kernelcheck_jobs": "hpcbench.kernelcheck.jobs",
}

class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        module = importlib.import_module(self.new)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.own_spec  # the import system stamped the alias's spec on the shared module
        if self.old in MOVED:  # stacklevel 2: the importing line (warnings skips the import machinery's frames)
            warnings.warn(f"{self.old} moved to {self.new}; the old name goes in the next release",
                          DeprecationWarning, stacklevel=2)

    def get_code(self, fullname):  # `python -m <old name>` runs the module's code
        return importlib.util.find_spec(self.new).loader.get_code(self.new)

    def is_package(self, fullname):
        return False


class AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = PUBLIC.get(fullname) or MOVED.get(fullname)
        if new is None:
            return None
        # the module's file as origin: `python -m <old name>` sets sys.argv[0] from it
        origin = importlib.util.find_spec(new).origin
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(fullname, new), origin=origin)


def install() -> None:
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(AliasFinder())
