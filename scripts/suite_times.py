"""Time the test tiers as README quotes them: the best of N runs, wall time and CPU time including
every child process, on an idle machine or with every core kept busy by spin loops.

    python scripts/suite_times.py --tier fast --runs 3            # pytest -m fast
    python scripts/suite_times.py --tier full --runs 3 --busy     # pytest, both cores busy

Each run is `python -m pytest -q` with the tier's arguments; its CPU time is the user + system time
the finished pytest process and all its descendants took (`resource.getrusage(RUSAGE_CHILDREN)`,
read before and after; this script is their subreaper, so orphaned descendants count too). A failed run is reported and ends the script with status 1: a time of a red
suite is no time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import time

TIERS = {"fast": ["-m", "fast"], "full": []}


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def _adopt_orphans() -> None:
    """Become the subreaper of everything the tests start (Linux): a process whose parent exits
    without waiting for it (the forkserver local ranks fork from) is then re-parented here instead
    of to init, and `_reap` counts its CPU time too."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("warning: not a subreaper: the CPU time of orphaned processes is not counted", file=sys.stderr)


def _reap() -> None:
    """Wait for every adopted process that has ended (the spin loops run on)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(args: list[str]) -> tuple[float, float, int, str]:
    cpu0, t0 = _children_cpu_s(), time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                       capture_output=True, text=True)
    time.sleep(1)  # orphans end with the processes that made them
    _reap()
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - cpu0
    lines = r.stdout.strip().splitlines()
    # a red run names what failed (pytest's -ra short summary): its time is no time, its failures matter
    failed = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    summary = "\n".join([(lines or [""])[-1], *failed])
    return wall, cpu, r.returncode, summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tier", choices=sorted(TIERS), default="fast")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--busy", action="store_true", help="keep every core busy with a spin loop meanwhile")
    p.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = p.parse_args(argv)
    if sys.platform == "linux":
        _adopt_orphans()
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
                for _ in range(os.cpu_count() or 1)] if a.busy else []
    for s in spinners:
        s.start()
    results = []
    try:
        for i in range(a.runs):
            wall, cpu, code, summary = one_run([*TIERS[a.tier], *a.pytest_args])
            print(f"run {i + 1}: wall {wall:7.1f} s  cpu {cpu:7.1f} s  exit {code}  {summary}", flush=True)
            if code != 0:
                return 1
            results.append((wall, cpu))
    finally:
        stop.set()
        for s in spinners:
            s.join()
    best_wall, best_cpu = min(w for w, _ in results), min(c for _, c in results)
    load = f"{len(spinners)} spin loops" if spinners else "idle"
    print(f"{a.tier} tier, {os.cpu_count()} cores, {load}: best of {a.runs}: wall {best_wall:.1f} s, "
          f"cpu (with children) {best_cpu:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
