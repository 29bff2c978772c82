"""Start local ranks for a multi-rank benchmark through torch's elastic launcher (what torchrun uses).

A multi-rank family run on a laptop or a CI machine has no launcher around it: this module
starts one process per GPU (or `dist.nproc` CPU ranks) with c10d rendezvous on the loopback
interface, waits, and turns a failed rank into one line naming the rank and what it was doing. The
elastic agent stops the surviving ranks when one fails, so nothing is left behind.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hpcbench.api.errors import RunFailed, UserError
from hpcbench.runtime import watchdog
from hpcbench.runtime.ranks import is_rank0
from hpcbench.runtime.signals import Terminated, arm_stops, stop_ends_process

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # a rank Ctrl-C stopped (130, as a shell says)


@dataclass(frozen=True)
class LaunchOutcome:
    """How the local ranks ended: rank 0's exit status, or why they failed."""

    status: int = 0
    failure: str | None = None  # one line naming the rank and what it was doing
    user_error: bool = False  # every rank exited with status 2 (rank 0 printed the error)


def local_nproc(requested, device_kind: str) -> int:
    if requested in (None, "auto"):
        return max(1, torch.cuda.device_count()) if device_kind == "cuda" else 2
    return int(requested)


def check_fits(nproc: int, device_kind: str, per_core: int, rank_memory_mb: int) -> None:
    """Refuse, before anything starts, a local world this machine cannot hold: one line naming the
    limit and the key that moves it."""
    if device_kind == "cuda":
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise UserError(f"dist.nproc={nproc}: {gpus} GPU(s) visible, one local rank each "
                            f"(CUDA_VISIBLE_DEVICES chooses them); use dist.nproc <= {gpus} or auto")
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if nproc > per_core * cores:
            raise UserError(f"dist.nproc={nproc}: more CPU ranks than {cores} core(s) x dist.max_ranks_per_core="
                            f"{per_core} = {per_core * cores}; lower dist.nproc or raise dist.max_ranks_per_core")
    available = _available_memory_mb()
    if available is not None and nproc * rank_memory_mb > available:
        raise UserError(f"dist.nproc={nproc}: {nproc} ranks x dist.rank_memory_mb={rank_memory_mb} MB = "
                        f"{nproc * rank_memory_mb} MB, more than the {available} MB available; lower dist.nproc "
                        "or dist.rank_memory_mb")


def _available_memory_mb() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where the kernel does not say."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) // 1024
    except (OSError, KeyError, ValueError):
        return None


def _stop_with_the_launcher(grace_s: float = 10.0) -> None:
    """A rank never outlives its launcher. Its parent is the forkserver, which exits when the
    launcher's end of their pipe closes, whatever ended the launcher (SIGKILL and the OOM killer
    included): once the parent changes, the rank stops as on a stop request (rank 0 records the
    run as cut short), and ends outright if that has not happened within `grace_s` (a collective
    waiting on a peer that is gone)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="hpcbench-launcher-watch", daemon=True).start()


def _rank_main(entry: Callable[..., int], args: tuple) -> int:
    """Each local rank (forked from a server that imported torch: see _fresh_forkserver) runs `entry(*args)`."""
    arm_stops()  # the fork server ignored Ctrl-C (fork_server)
    _stop_with_the_launcher()
    try:
        try:
            return entry(*args)
        finally:
            # The run has recorded how it ended; a stop request from here on (the agent stopping the
            # survivors of a failed rank) just ends the process instead of a traceback mid-exit.
            stop_ends_process()
    except UserError as exc:  # bad input only a rank can see (e.g. the backend on this machine)
        if is_rank0():
            print(f"hpcbench: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except (RunFailed, Terminated):
        sys.exit(1)  # the launcher prints one summary for all ranks
    except KeyboardInterrupt:  # Ctrl-C reaches every rank: rank 0 recorded it, the launcher says it
        sys.exit(EXIT_INTERRUPTED)


def _fresh_forkserver(preload: list[str]) -> None:
    """Ranks fork from a server that imported torch once, instead of each importing it (spawn).

    A rank's start drops from a fresh interpreter's torch import (~2-3 s of CPU each) to a fork. The
    server is single-threaded (nothing has run a kernel or started gloo in it), which is what makes
    forking safe, and CUDA is first touched in the ranks, as with spawn. A server inherits the
    environment, working directory and sys.path of the moment it starts; the one an earlier launch
    of this process left is stopped, so each launch gets a server of its own moment, as spawn would.
    """
    server = multiprocessing.forkserver._forkserver
    stop = getattr(server, "_stop", None)  # CPython 3.8+; without it the old server stays
    if stop is not None:
        stop()
    multiprocessing.set_forkserver_preload(preload)
    # started with Ctrl-C blocked (a signal mask survives fork and exec) until fork_server has made
    # it ignore Ctrl-C: one while it imports would print a traceback. Blocked, not ignored, here:
    # a Ctrl-C meanwhile waits and stops this process once unblocked, instead of being lost.
    # (the mask is this thread's: a Ctrl-C another thread of this process takes, this process's
    # handler raises here, which stops the launch as anywhere else)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def launch_local(nproc: int, entry: Callable[..., int], args: tuple, run_id: str, timeout_s: float) -> LaunchOutcome:
    """Run `nproc` local ranks of `entry(*args)` (a module-level function); say how they ended."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The board outlives the ranks, so the launcher can still say where a crashed rank was.
    board_host = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    board = dist.PrefixStore(f"hpcbench/{run_id}/", board_host)
    os.environ[watchdog.BOARD_ENV] = f"127.0.0.1:{board_host.port}"
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=run_id,
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
        max_restarts=0, monitor_interval=0.1, start_method="forkserver", shutdown_timeout=10,
    )
    # their failure reports are replaced by the one line of the outcome
    # (each elastic module's logger has a level of its own, so each is quieted, not only their parent)
    quiet = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.multiprocessing",
                                                   *logging.Logger.manager.loggerDict)
             if name.startswith(("torch.distributed.elastic", "torch.multiprocessing"))]
    levels = [log.level for log in quiet]
    # the agent installs handlers of its own (SIGINT, SIGTERM, SIGHUP, SIGQUIT) and leaves them
    # behind (a Ctrl-C after the ranks ended would kill this process silently): this process's
    # are put back afterwards, except for the stop just received (it is being handled: a second
    # one must not cut that short)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    received = None
    try:
        for log in quiet:
            log.setLevel(logging.CRITICAL)
        _fresh_forkserver(["hpcbench.runtime.fork_server", "torch", "torch.distributed", __name__, entry.__module__])
        results = elastic_launch(config, _rank_main)(entry, args)
    except SignalException as exc:  # the agent's stop: the ranks have been stopped and recorded it
        received = exc.sigval
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise Terminated(f"received {signal.Signals(exc.sigval).name}") from None
    except ChildFailedError as exc:
        if all(f.exitcode == EXIT_USER_ERROR for f in exc.failures.values()):
            return LaunchOutcome(EXIT_USER_ERROR, "bad input (see the error printed by rank 0)", user_error=True)
        if all(f.exitcode == EXIT_INTERRUPTED for f in exc.failures.values()):
            raise KeyboardInterrupt from None  # the ranks saw Ctrl-C before the agent did
        return LaunchOutcome(1, failure_message(exc.failures, watchdog.snapshot(board, nproc), timeout_s))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, signal.SIG_IGN if sig == received else handler)
        for log, level in zip(quiet, levels):
            log.setLevel(level)
        os.environ.pop(watchdog.BOARD_ENV, None)
    return LaunchOutcome(int(results.get(0) or 0))


def failure_message(failures: dict, board: dict, timeout_s: float) -> str:
    """'rank 1 exited with SIGKILL; rank 1 stopped responding (last at ...)'"""
    how = []
    for rank, failure in sorted(failures.items()):
        code = failure.exitcode
        if code < 0:
            how.append(f"rank {rank} was killed by {failure.signal_name()}")
        elif code == watchdog.EXIT_HUNG:
            how.append(f"rank {rank} saw no progress for {timeout_s:g} s (dist.timeout_s) and stopped")
        else:
            how.append(f"rank {rank} exited with status {code}")
    return "; ".join(how) + " — " + watchdog.diagnose(board, time.time())
