"""Stop requests (scancel, SLURM's time limit, the launcher stopping survivors) as an exception, so
that unwinding records the run as cut short."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(BaseException):
    """The launcher (or SLURM) asked this process to stop."""


def raise_terminated(signum, _frame):
    # SLURM signals every process of a step and torchrun's agent forwards its own SIGTERM: the
    # second one must not kill the rank before it has recorded the run as cut short (the default
    # is restored once it has; SLURM's SIGKILL after KillWait still bounds the wait)
    signal.signal(signum, signal.SIG_IGN)
    raise Terminated(f"received {signal.Signals(signum).name}")


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def stop_raises() -> None:
    """From now on SIGTERM raises Terminated in the main thread."""
    if on_main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


def stop_ends_process() -> None:
    """From now on SIGTERM ends the process (what happened is already recorded)."""
    if on_main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def stops_deferred():
    """Hold SIGTERM/SIGINT while a record is made whole (a row and its count, the final metadata);
    a stop requested meanwhile is delivered when the block ends."""
    if not on_main_thread():
        yield
        return
    held = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
