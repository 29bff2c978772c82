"""Test tiers: what each heavy test costs is a marker, and a test that starts processes without one fails.

    pytest -m fast     the fast tier, before every commit (README gives its time)
    pytest             the full suite, as CI runs it

Markers of cost (pyproject): `subprocess` (starts hpcbench, Python, a shell script or a SLURM job
in a child process: a fresh interpreter imports torch), `world` (starts local ranks of a
multi-rank world), `compile` (compiles kernels with the real Triton compiler), `slurm`. `smoke`
keeps a heavy test in the fast tier: a family's end-to-end run at smoke size, the exact multi-rank
checks. Every test without a cost marker, and every `smoke` test, is also marked `fast`.

A test that starts a child process (a Python or hpcbench subprocess, a shell or SLURM command, a
multiprocessing start) and carries no cost marker fails, naming what it started: the fast tier
stays fast as tests are added. HPCBENCH_MARKER_REPORT=FILE records instead of failing (one JSON
line per test that started something), to find the tests to mark.
"""

import ast
import json
import multiprocessing.process
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent
COST_MARKERS = ("subprocess", "world", "compile", "slurm")
_HEAVY_COMMANDS = {"hpcbench", "torchrun", "srun", "sbatch", "salloc", "scancel", "bash", "sh"}
_started: list[str] = []


def _command_name(args) -> str:
    first = args if isinstance(args, (str, bytes, os.PathLike)) else (args[0] if args else "")
    first = os.fsdecode(first) if isinstance(first, (bytes, os.PathLike)) else str(first)
    return os.path.basename(first.split()[0]) if first.split() else ""


_popen_init = subprocess.Popen.__init__
_process_start = multiprocessing.process.BaseProcess.start


def _recording_popen_init(self, args, *rest, **kw):
    name = _command_name(args)
    if name.startswith("python") or name in _HEAVY_COMMANDS or name == os.path.basename(sys.executable):
        _started.append(f"subprocess {name}")
    _popen_init(self, args, *rest, **kw)


def _recording_start(self):
    _started.append(f"process {type(self).__name__}")
    _process_start(self)


subprocess.Popen.__init__ = _recording_popen_init
multiprocessing.process.BaseProcess.start = _recording_start


def pytest_configure(config):
    if os.environ.get("HPCBENCH_CPU_REPORT") and sys.platform == "linux":
        _adopt_orphans()
    if hasattr(config, "workerinput"):  # a pytest-xdist worker (CI runs `pytest -n 3`)
        # what the worker adds to the environment would change what the tests' child processes do:
        # COLUMNS=80 narrows their tables, PYTEST_XDIST_* turns pytest-benchmark off in an inner pytest
        for name in ("COLUMNS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
            os.environ.pop(name, None)


# the order the costly tests start in: the workers of `pytest -n 3` take the costliest first and fill
# in with the rest (longest first), instead of one starting a two-minute test when the others are done
_COST_ORDER = ("compile", "world", "slurm", "subprocess")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("smoke") or not any(item.get_closest_marker(m) for m in COST_MARKERS):
            item.add_marker(pytest.mark.fast)
    items.sort(key=lambda item: next((i for i, m in enumerate(_COST_ORDER) if item.get_closest_marker(m)),
                                     len(_COST_ORDER)))


def _shared_fixture_scopes() -> list[str]:
    """Test files, and folders whose conftest.py, define a module- or session-scoped fixture."""
    scopes = []
    for top in ("tests", "benchmarks"):
        for path in sorted((_ROOT / top).rglob("*.py")):
            if not (path.name.startswith("test_") or path.name == "conftest.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.keyword) and node.arg == "scope" and \
                        isinstance(node.value, ast.Constant) and node.value.value in ("module", "session"):
                    where = path.parent if path.name == "conftest.py" else path
                    scopes.append(where.relative_to(_ROOT).as_posix())
                    break
    return scopes


def pytest_xdist_make_scheduler(config, log):
    """`pytest -n 3 --dist loadgroup`: tests are handed to the workers one at a time, except that a
    test file defining a module- or session-scoped fixture (the fingerprint's run, the report's
    smoke runs, the sm_90 compile, the bare image), or a folder whose conftest.py defines one
    (benchmarks/), goes to one worker whole, so that its fixture is made once. pytest-xdist's own
    groups (xdist_group markers) are read from item._nodeid, which pytest 9 no longer uses for
    node ids: with them every test was handed out alone and such fixtures were made twice."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    shared = _shared_fixture_scopes()

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((s for s in shared if path == s or path.startswith(s + "/")), nodeid)

    return SharedFixtureScheduling(config, log)


def _adopt_orphans() -> None:
    """With HPCBENCH_CPU_REPORT, this process becomes the subreaper of what its tests start: a
    process whose parent did not wait for it (the forkserver of local ranks) is re-parented here
    and counted with the test that started it."""
    import ctypes

    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_adopted() -> None:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def _cpu_s() -> float:
    """CPU time of this process and of the children it has waited for (user + system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """HPCBENCH_CPU_REPORT=FILE: one JSON line per test with its wall and CPU time (setup, call and
    teardown; processes it started and waited for included): where a tier's time goes."""
    report = os.environ.get("HPCBENCH_CPU_REPORT")
    cpu0, t0 = _cpu_s(), time.perf_counter()
    yield
    if report:
        _reap_adopted()
        with open(report, "a") as out:
            out.write(json.dumps({"test": item.nodeid, "wall_s": round(time.perf_counter() - t0, 2),
                                  "cpu_s": round(_cpu_s() - cpu0, 2)}) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    _started.clear()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield
    started = sorted(set(_started))
    _started.clear()
    if not started or any(item.get_closest_marker(m) for m in COST_MARKERS):
        return
    report = os.environ.get("HPCBENCH_MARKER_REPORT")
    if report:
        with open(report, "a") as out:
            out.write(json.dumps({"test": item.nodeid, "started": started, "fixtures": item.fixturenames}) + "\n")
        return
    pytest.fail(f"{item.nodeid} started {', '.join(started)} but carries no cost marker "
                f"({', '.join(COST_MARKERS)}): mark it, so that `pytest -m fast` leaves it out", pytrace=False)
