"""A family is one module and one YAML file: a toy family outside hpcbench's tree (tests/plugins)
runs, shows, compares, reports and becomes pytest-benchmark cases with no other file edited.
And a run's recorded counts agree with its stored rows wherever a stop request lands."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO
from hpcbench.core import cli
from hpcbench.api import registry
from hpcbench.results import find_runs, load_run
from hpcbench.runtime.signals import Terminated, stop_raises

PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture
def toy(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("HPCBENCH_FAMILIES", "toyfamily")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _main(*args) -> int:
    return cli.main(list(args))


def test_the_toy_family_is_registered_with_its_declaration(toy):
    fam = registry.get("toy")
    assert fam.params == ("n", "order") and not fam.distributed
    assert "toy" in registry.names() and "gemm" in registry.names()


def test_the_toy_family_runs_shows_compares_and_reports(toy, capsys):
    assert _main("benchmark=toy", "toy.sizes=[3,50]", "results_root=res") == 0
    (run,) = find_runs(toy / "res")
    df = load_run(run)
    assert sorted(df["n"]) == [3, 50] and list(df["total"]) == [6, 1275]  # 1+2+3, 50*51/2
    assert df.attrs["metadata"]["params"] == {"toy": ["n", "order"]}
    capsys.readouterr()
    assert _main("show", str(run)) == 0
    assert "toy sums" in capsys.readouterr().out
    assert _main("compare", str(run), str(run)) == 0
    out = capsys.readouterr().out
    assert "n=3 order=forward" in out and "2 matched points" in out
    assert _main("report", str(run), "--out", str(toy / "rep")) == 0
    md = (toy / "rep" / "report.md").read_text()
    assert "## Toy sums" in md and (toy / "rep" / "toy.png").stat().st_size > 1000


def test_a_bad_toy_value_is_one_line_and_leaves_no_run(toy, capsys):
    assert _main("benchmark=toy", "toy.order=sideways", "results_root=res") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hpcbench: error: toy.order='sideways' (available: forward, backward)"]
    assert not (toy / "res").exists() or not any((toy / "res").iterdir())


@pytest.mark.subprocess
def test_the_toy_family_appears_as_pytest_benchmark_cases(toy):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-enable",
                          "--benchmark-json", str(toy / "bench.json"), "-k", "toy", str(REPO / "benchmarks")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    names = {b["name"] for b in json.loads((toy / "bench.json").read_text())["benchmarks"]}
    assert names == {"test_point[toy:10-forward]", "test_point[toy:20-forward]"}


def _counts_agree(run: Path) -> tuple[dict, dict]:
    meta = json.loads((run / "metadata.json").read_text())
    rows = [json.loads(line) for line in (run / "rows.jsonl").read_text().splitlines() if line.strip()] \
        if (run / "rows.jsonl").exists() else []
    stored = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped")}
    return meta.get("points"), stored


def test_counts_agree_with_rows_wherever_a_stop_lands(toy):
    """At least 20 runs stopped by SIGTERM after random delays: the metadata's counts always equal
    the statuses of the rows in rows.jsonl (a stop between a row's write and its count used to
    leave them disagreeing)."""
    from hpcbench.core import runner
    from hpcbench.core.config import compose
    from hpcbench.core.plan import plan_run

    rng = random.Random(12)
    cfg = plan_run(compose(["benchmark=toy", "toy.sizes=[5,6,7,8,9,10,11,12,13,14,15,16]", "toy.pause_s=0.02",
                   "timing.cpu.min_reps=2", "timing.cpu.max_reps=3", "timing.cpu.warmup=0"]))
    t0 = time.perf_counter()
    runner.run_rank(cfg, toy / "unstopped")  # how long a whole run takes on this machine, now
    whole = time.perf_counter() - t0
    original = signal.getsignal(signal.SIGTERM)
    stopped, cut_midway = 0, 0
    try:
        for attempt in range(24):
            run_dir = toy / f"run{attempt}"
            stop_raises()  # installed before the timer can fire, as `runner.run` does
            # stops spread over the whole run, however slow the machine is today
            timer = threading.Timer(rng.uniform(0.0, 1.1 * whole), os.kill, (os.getpid(), signal.SIGTERM))
            try:
                timer.start()
                try:
                    runner.run_rank(cfg, run_dir)
                finally:
                    timer.join()
                    time.sleep(0.01)  # the signal, if it came late, is handled inside this try
            except Terminated:
                stopped += 1
            signal.signal(signal.SIGTERM, original)
            if not (run_dir / "metadata.json").exists():
                continue  # stopped before the run was opened: nothing was written
            recorded, stored = _counts_agree(run_dir)
            assert recorded == stored, (attempt, recorded, stored)
            cut_midway += 0 < sum(stored.values()) < 12
    finally:
        signal.signal(signal.SIGTERM, original)
    assert stopped >= 20 and cut_midway >= 5, (stopped, cut_midway)


def test_a_stop_from_another_thread_waits_for_the_end_of_a_deferred_block():
    """Python runs handlers in the main thread whichever thread the signal reaches: the block must
    hold a stop sent while other threads run, and deliver it when the block ends."""
    from hpcbench.runtime.signals import stops_deferred

    original = signal.getsignal(signal.SIGTERM)
    stop_raises()
    done = []
    try:
        with pytest.raises(Terminated):
            with stops_deferred():
                sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
                sender.start()
                sender.join()
                time.sleep(0.05)  # handlers run between bytecodes: here, if the block did not hold it
                done.append("the block finished")
        assert done == ["the block finished"]
    finally:
        signal.signal(signal.SIGTERM, original)
