"""Start local ranks for a multi-rank benchmark through torch's elastic launcher (what torchrun uses).

`hpcbench benchmark=collectives` on a laptop or a CI machine has no launcher around it: this module
starts one process per GPU (or `dist.nproc` CPU ranks) with c10d rendezvous on the loopback
interface, waits, and turns a failed rank into one line naming the rank and what it was doing. The
elastic agent stops the surviving ranks when one fails, so nothing is left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from hpcbench.errors import RunFailed, UserError
from hpcbench.results.reader import read_metadata
from hpcbench.results.writer import RunWriter
from hpcbench.runtime import watchdog


EXIT_USER_ERROR = 2


class Terminated(BaseException):
    """The launcher (or SLURM) asked this rank to stop; unwinding records the run as cut short."""


def _raise_terminated(signum, _frame):
    # SLURM signals every process of a step and torchrun's agent forwards its own SIGTERM: the
    # second one must not kill the rank before it has recorded the run as cut short (the runner
    # restores the default once it has; SLURM's SIGKILL after KillWait still bounds the wait)
    signal.signal(signum, signal.SIG_IGN)
    raise Terminated(f"received {signal.Signals(signum).name}")


def local_nproc(requested, device_kind: str) -> int:
    if requested in (None, "auto"):
        return max(1, torch.cuda.device_count()) if device_kind == "cuda" else 2
    return int(requested)


def _rank_main(cfg_yaml: str, run_dir: str) -> int:
    """Entry point of each local rank (a fresh interpreter: spawn start method)."""
    from omegaconf import OmegaConf

    from hpcbench import runner

    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        try:
            return runner.run_rank(OmegaConf.create(cfg_yaml), Path(run_dir))
        finally:
            # The run has recorded how it ended; a stop request from here on (the agent stopping the
            # survivors of a failed rank) just ends the process instead of a traceback mid-exit.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except UserError as exc:  # bad input only a rank can see (e.g. the backend on this machine)
        if os.environ.get("RANK") == "0":
            print(f"hpcbench: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except (RunFailed, Terminated):
        sys.exit(1)  # the launcher prints one summary for all ranks


def launch_local(nproc: int, cfg_yaml: str, run_dir: Path, timeout_s: float) -> int:
    """Run `nproc` ranks of `cfg_yaml` on this machine; returns rank 0's exit status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The board outlives the ranks, so the launcher can still say where a crashed rank was.
    board_host = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    board = dist.PrefixStore(f"hpcbench/{run_dir.name}/", board_host)
    os.environ[watchdog.BOARD_ENV] = f"127.0.0.1:{board_host.port}"
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=run_dir.name,
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
        max_restarts=0, monitor_interval=0.1, start_method="spawn", shutdown_timeout=10,
    )
    # their failure reports are replaced by the one line below
    quiet = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.multiprocessing")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.CRITICAL)
    try:
        results = elastic_launch(config, _rank_main)(cfg_yaml, str(run_dir))
    except ChildFailedError as exc:
        if all(f.exitcode == EXIT_USER_ERROR for f in exc.failures.values()):
            mark_cut_short(run_dir, "bad input (see the error printed by rank 0)")
            raise SystemExit(EXIT_USER_ERROR) from None  # rank 0 already printed the one line
        message = failure_message(exc.failures, watchdog.snapshot(board, nproc), timeout_s)
        mark_cut_short(run_dir, message)
        raise RunFailed(message) from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)
        os.environ.pop(watchdog.BOARD_ENV, None)
    return int(results.get(0) or 0)


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


def mark_cut_short(run_dir: Path, message: str) -> None:
    """Record in the run's metadata that it did not finish, and why as the launcher saw it (it knows
    every rank's exit; rank 0's own view, if it wrote one, is kept as rank0_error)."""
    try:
        metadata = read_metadata(run_dir)
    except (OSError, ValueError, UserError):
        return
    if metadata.get("status") == "complete":
        return
    if metadata.get("error"):
        metadata["rank0_error"] = metadata["error"]
    metadata.update(status="error", error=message)
    RunWriter(run_dir).write_metadata(metadata)
