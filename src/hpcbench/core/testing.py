"""hpcbench's benchmark families as pytest-benchmark cases (see benchmarks/ at the repository root).

Every point a family measures becomes one pytest-benchmark case, measured exactly as the CLI
measures it: single-process families run through `runner.run_rank` in this process,
multi-rank families through the `hpcbench` command on the ranks it starts itself. A case then
checks the point's status (the family has verified its output) and hands the row's raw
samples, taken by hpcbench's timer (`hpcbench.measure.timing`: CUDA events on a GPU, the host clock on
the CPU fallback), to pytest-benchmark as its rounds. pytest-benchmark's own clock never times
anything: it is replaced for the case by a `SampleClock` that replays the recorded samples, so
`--benchmark-json` reports hpcbench's numbers, not the duration of a Python call.

    @pytest.mark.parametrize(("family", "point"), [(f, p) for f in registry.names() for p in smoke_points(f)])
    def test_point(family, point, smoke, benchmark):
        record_samples(benchmark, smoke.row(family, point))
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import traceback
import uuid
from functools import cache
from pathlib import Path

from hpcbench.api.errors import UserError
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED

# for the multi-rank run: a hung rank stops it well before a CI job's limit
_DIST_OVERRIDES = ("dist.timeout_s=120",)
_CLI_TIMEOUT_S = 900


def _family_names() -> list[str]:
    from hpcbench.api import registry

    return registry.names()


def _family(name: str):
    from hpcbench.api import registry

    return registry.get(name)


def point_id(family: str, row: dict) -> str:
    """The case id of a row of `family` (its `case_id`, or its params joined by '-')."""
    return _family(family).point_id(row)


# ---- configs ------------------------------------------------------------------------------------

def compose(families: list[str], overrides=()):
    """The config the CLI would compose for `benchmark=[families] suite=[families] overrides...`."""
    from hpcbench.core.config import compose as compose_config

    names = ",".join(families)
    return compose_config([f"benchmark=[{names}]", f"suite=[{names}]", *overrides])


def family_config(family: str, overrides=(), smoke: bool = True):
    """The validated `Config` dataclass of `family`: its YAML's defaults, at smoke size unless
    `smoke=False`, plus `overrides`."""
    from hpcbench.core.config import family_config as validated

    fam = _family(family)
    return validated(fam, compose([family], [*(fam.smoke if smoke else ()), *overrides]))


@cache
def smoke_points(family: str) -> list[str]:
    """The case ids of `family` at smoke size, known at collection time (nothing is run)."""
    from hpcbench.runtime.device import device_kind

    fam = _family(family)
    if fam.planned is None:
        return []  # a family that declares no planned points has no pytest-benchmark cases
    ids = [fam.point_id(p) for p in fam.planned(family_config(family), device_kind("auto"))]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{family}: two smoke points share a case id in {ids}")
    return ids


def is_distributed(family: str) -> bool:
    return _family(family).distributed


# ---- running the families -----------------------------------------------------------------------

class SmokeRunFailed(RuntimeError):
    """A smoke run that did not leave its rows (bad config, crashed ranks)."""


def _plain(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return value


def _rows_of(run_dir: Path) -> dict[str, list[dict]]:
    """The rows of a run just written, by benchmark, as written: a DataFrame (`load_run`) would turn
    integer columns with gaps (a column one family lacks) into floats."""
    import json

    from hpcbench.results import read_metadata
    from hpcbench.results.schema import ROWS_FILE, SCHEMA_VERSION

    meta = read_metadata(run_dir)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise SmokeRunFailed(f"{run_dir}: schema version {meta.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    if meta.get("status") != "complete":
        raise SmokeRunFailed(f"{run_dir}: the run ended {meta.get('status')!r}: {meta.get('error')}")
    out: dict[str, list[dict]] = {}
    for line in (Path(run_dir) / ROWS_FILE).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out.setdefault(row["benchmark"], []).append(row)
    return out


def run_in_process(families: list[str], workdir: Path, overrides=()) -> dict[str, list[dict]]:
    """Single-process families through the runner, as the CLI runs them; rows read back from the store."""
    from hpcbench.core import runner

    from hpcbench.core.plan import plan_run

    cfg = compose(families, [*(o for f in families for o in _family(f).smoke), *overrides])
    run_dir = Path(workdir) / f"pytest-{uuid.uuid4().hex[:8]}"
    runner.run_rank(plan_run(cfg), run_dir)  # 1 if a point failed: that point's case fails
    return _rows_of(run_dir)


_MAIN = "import sys; from hpcbench.core.cli import main; sys.exit(main())"


def run_cli(families: list[str], workdir: Path, overrides=()) -> dict[str, list[dict]]:
    """Multi-rank families through the `hpcbench` command (local ranks it starts itself), in `workdir`."""
    run_id = f"pytest-benchmark-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    names = ",".join(families)
    args = [f"benchmark=[{names}]", f"suite=[{names}]", f"results_root={workdir}", *_DIST_OVERRIDES,
            *(o for f in families for o in _family(f).smoke), *overrides]
    exe = Path(sys.executable).with_name("hpcbench")  # the console script, as a user runs it
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", _MAIN]
    env = {**os.environ, "HPCBENCH_RUN_ID": run_id}
    env.pop("TRITON_INTERPRET", None)  # the CLI turns the interpreter on by itself on the CPU
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    out = subprocess.run([*cmd, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=_CLI_TIMEOUT_S,
                         check=False)
    try:
        if out.returncode not in (0, 1):  # 1: a point failed, and its case will say so
            raise SmokeRunFailed("")
        return _rows_of(Path(workdir) / run_id)
    except (SmokeRunFailed, UserError, OSError, ValueError) as exc:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-15:])
        raise SmokeRunFailed(f"`hpcbench {' '.join(args)}` exited with status {out.returncode}: {exc}\n"
                             f"{tail}") from None


class SmokeRuns:
    """Each family run once at smoke size, on first use; rows by case id.

    `wanted()` names the families the session will ask for: the multi-rank ones among them run
    together in one `hpcbench` invocation (one start of the ranks instead of one per family)."""

    def __init__(self, workdir: Path, wanted=None):
        self.workdir = Path(workdir)
        self.wanted = wanted or (lambda: set(_family_names()))
        self._rows: dict[str, dict[str, dict]] = {}
        self._errors: dict[str, str] = {}

    def _run(self, family: str) -> None:
        if is_distributed(family):
            families = sorted(f for f in self.wanted() | {family} if is_distributed(f))
            runner = run_cli
        else:
            families, runner = [family], run_in_process
        try:
            produced = runner(families, self.workdir)
        except SmokeRunFailed as exc:
            self._errors.update({f: str(exc) for f in families})
            return
        except Exception:  # every case of these families fails with this, without running them again
            self._errors.update({f: traceback.format_exc() for f in families})
            return
        for f in families:
            rows = [r for r in produced.get(f, []) if _family(f).is_point(r)]
            by_id = {point_id(f, r): r for r in rows}
            missing = [i for i in smoke_points(f) if i not in by_id]
            extra = [i for i in by_id if i not in smoke_points(f)]
            if missing or extra or len(by_id) != len(rows):
                self._errors[f] = (f"{f}: the run's points do not match the planned cases "
                                   f"(missing {missing}, unplanned {extra}, {len(rows)} rows)")
            else:
                self._rows[f] = by_id

    def row(self, family: str, point: str) -> dict:
        if family not in self._rows and family not in self._errors:
            self._run(family)
        if family in self._errors:
            import pytest

            pytest.fail(self._errors[family], pytrace=False)
        return self._rows[family][point]


# ---- reporting to pytest-benchmark --------------------------------------------------------------

class SampleClock:
    """A pytest-benchmark timer that reads recorded samples instead of a clock.

    Each round, pytest-benchmark calls `setup` (`rewind`: the clock reads 0), reads the timer,
    calls the target (`advance`: the clock jumps by the next sample), and reads it again, so the
    round's duration is exactly that sample. `__name__` is what pytest-benchmark reports as the
    timer: `hpcbench:` and the row's timing method (cuda_event, cuda_graph, perf_counter)."""

    def __init__(self, samples_s: list[float], method: str | None):
        self.samples_s = [float(s) for s in samples_s]
        self.__name__ = f"hpcbench:{method or 'samples_s'}"
        self._next = 0
        self._now = 0.0

    def __call__(self) -> float:
        return self._now

    def rewind(self) -> None:
        self._now = 0.0

    def advance(self) -> None:
        if self._next < len(self.samples_s):  # replays beyond the samples (e.g. --benchmark-cprofile) add nothing
            self._now = self.samples_s[self._next]
            self._next += 1


def _extra_info(row: dict, params: tuple[str, ...]) -> dict:
    info = {k: _plain(row.get(k)) for k in params if k in row}
    for k in ("benchmark", "status", "timing_method", "device", "device_kind", "fallback", "n_samples", "median_s",
              "world_size", "backend"):
        if row.get(k) is not None:
            info[k] = _plain(row[k])
    return info


def record_samples(benchmark, row: dict, params: tuple[str, ...] | None = None) -> dict:
    """Report one hpcbench row to pytest-benchmark: its raw samples become the case's rounds.

    A failed point fails the case and a skipped point skips it, with the row's reason. With
    benchmarks disabled (`--benchmark-disable`) the row is still checked. Returns the row."""
    import pytest

    status = row.get("status")
    label = row.get("benchmark") or "point"
    if status == STATUS_SKIPPED:
        pytest.skip(f"{label}: {row.get('reason') or 'skipped'}")
    if status == STATUS_FAILED:
        pytest.fail(f"{label}: failed: {row.get('reason') or 'no reason recorded'}", pytrace=False)
    if status != STATUS_OK:
        pytest.fail(f"{label}: unknown status {status!r}", pytrace=False)
    samples = row.get("samples_s")
    if not samples or not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in samples):
        pytest.fail(f"{label}: an ok point needs positive raw samples (samples_s), got {samples!r}", pytrace=False)
    if params is None:
        params = _family(row["benchmark"]).params if row.get("benchmark") else ()

    if not hasattr(benchmark, "_timer"):
        import pytest_benchmark

        raise RuntimeError(f"pytest-benchmark {getattr(pytest_benchmark, '__version__', '?')} has no "
                           "BenchmarkFixture._timer: hpcbench cannot report its own timer's samples through it")
    clock = SampleClock(samples, row.get("timing_method"))
    benchmark.extra_info.update(_extra_info(row, params))
    if row.get("benchmark"):
        benchmark.group = row["benchmark"]
    benchmark._timer = clock  # read when pedantic builds each round's runner
    benchmark.pedantic(clock.advance, setup=clock.rewind, rounds=len(clock.samples_s), iterations=1,
                       warmup_rounds=0)
    if benchmark.enabled:
        recorded = list(benchmark.stats.stats.data)
        if recorded != clock.samples_s:
            raise RuntimeError("pytest-benchmark did not time the replay with hpcbench's samples "
                               f"(recorded {recorded[:3]}..., expected {clock.samples_s[:3]}...): "
                               "its fixture internals changed")
    return row


# ---- machine info -------------------------------------------------------------------------------

def machine_info(device: str = "auto") -> dict:
    """The environment the CLI records with a run (GPU, driver, CUDA, NCCL, torch, triton, ...),
    without what belongs to one run (its id, start time, command line)."""
    from hpcbench.runtime.device import DeviceInfo, cpu_name, device_kind, resolve_device
    from hpcbench.runtime.environment import collect_environment

    # on the CPU, resolve_device would also turn the Triton interpreter on: not a machine_info's business
    dev = resolve_device(device) if device_kind(device) == "cuda" else DeviceInfo("cpu", cpu_name(), None, None, None)
    env = collect_environment(dev, run_id="")
    for key in ("run_id", "started_at", "command"):
        env.pop(key, None)
    return env
