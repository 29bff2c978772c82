"""The package's layout is its architecture (docs/architecture.md): a few layer packages at the
top, imports flowing down only, no cycles, short modules, every package in the wheel, and every
older import name still working."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from importlinter import cli as lint
from setuptools.config.pyprojecttoml import read_configuration

from conftest import REPO

SRC = REPO / "src" / "hpcbench"
MAX_TOP_LEVEL = 12
MAX_LINES = 400


def test_the_top_level_holds_at_most_twelve_entries():
    entries = sorted(p.name for p in SRC.iterdir() if p.name != "__pycache__")
    assert len(entries) <= MAX_TOP_LEVEL, entries


def test_no_module_is_longer_than_400_lines():
    files = [*SRC.rglob("*.py"), *(REPO / "kernels").glob("*.py"), *(REPO / "scripts").glob("*.py")]
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_layer_contract_holds(capsys):
    """pyproject's [tool.importlinter]: nothing imports a layer above it, no import cycle."""
    status = lint.lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True)
    assert status == lint.EXIT_STATUS_SUCCESS, capsys.readouterr().out[-3000:]


def _hpcbench_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] == "hpcbench"}


def test_the_kernels_import_only_themselves():
    """kernels/ ships as hpcbench.kernels from outside src/, where the contract's graph cannot see
    it: it is the bottom layer."""
    for path in (REPO / "kernels").glob("*.py"):
        outside = {m for m in _hpcbench_imports(path) if not m.startswith("hpcbench.kernels")}
        assert not outside, (path.name, outside)


def test_the_wheel_lists_every_package_under_src():
    listed = set(read_configuration(REPO / "pyproject.toml")["tool"]["setuptools"]["packages"])
    present = {".".join(p.parent.relative_to(REPO / "src").parts) for p in SRC.rglob("__init__.py")}
    assert present - listed == set(), "missing from pyproject's packages: the wheel would drop them"
    assert {"hpcbench.conf", "hpcbench.kernels"} <= listed


_IMPORT_EVERY_OLD_NAME = """
import importlib, json, sys, warnings
import hpcbench.api.names as names
out = {}
for old, new in {**names.PUBLIC, **names.MOVED}.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(f"import {old}", "<importer>", "exec"))
    module = sys.modules[old]
    out[old] = {"same": module is importlib.import_module(new), "spec": module.__spec__.name,
                "warnings": [str(w.message) for w in caught if w.category is DeprecationWarning],
                "where": [w.filename for w in caught]}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    exec(compile("from hpcbench.kernelcheck import compile_job", "<importer>", "exec"))
from hpcbench.kernelcheck.check import compile_job as new
out["hpcbench.kernelcheck.compile_job"] = {"same": sys.modules["hpcbench.kernelcheck"].compile_job is new, "spec": "",
    "warnings": [str(w.message) for w in caught], "where": [w.filename for w in caught]}
print(json.dumps(out))
"""


@pytest.mark.subprocess
def test_every_old_import_name_still_imports_the_same_module():
    from hpcbench.api import names

    r = subprocess.run([sys.executable, "-c", _IMPORT_EVERY_OLD_NAME], capture_output=True, text=True, timeout=300,
                       check=True)
    seen = json.loads(r.stdout)
    assert set(seen) == {*names.PUBLIC, *names.MOVED, "hpcbench.kernelcheck.compile_job"}
    for old, got in seen.items():
        assert got["same"], old
        if old in names.PUBLIC:
            assert got["warnings"] == [], old  # the plugin API: no warning
            assert got["spec"] == names.PUBLIC[old]  # the module keeps its own spec
        else:
            assert len(got["warnings"]) == 1 and "moved to hpcbench." in got["warnings"][0], (old, got)
            assert got["where"] == ["<importer>"], (old, got)  # pointed at the importing line


@pytest.mark.subprocess
@pytest.mark.parametrize("old", ["hpcbench.cli", "hpcbench.kernelcheck_cli"])
def test_python_dash_m_runs_an_old_name(old):
    r = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr[-2000:]
