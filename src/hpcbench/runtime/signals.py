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


def raise_interrupted(signum, _frame):
    """Ctrl-C, once: a terminal's Ctrl-C reaches every process of the group and torchrun's agent
    forwards it to the ranks again; the second one must not cut short the recording of the first
    (the same rule as raise_terminated)."""
    signal.signal(signum, signal.SIG_IGN)
    raise KeyboardInterrupt


def arm_stops() -> None:
    """Ctrl-C raises KeyboardInterrupt and SIGTERM Terminated in the main thread, each once."""
    signal.signal(signal.SIGINT, raise_interrupted)
    signal.signal(signal.SIGTERM, raise_terminated)


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def stop_raises() -> None:
    """From now on SIGTERM raises Terminated in the main thread."""
    if on_main_thread():
        signal.signal(signal.SIGTERM, raise_terminated)


def stop_ends_process() -> None:
    """From now on SIGTERM ends the process and Ctrl-C is ignored (what happened is already
    recorded; the launcher says how the run ended)."""
    if on_main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def stops_deferred():
    """Hold SIGTERM/SIGINT while a record is made whole (a row and its count, the final metadata),
    or while modules are imported (a KeyboardInterrupt raised inside an extension module's
    initialisation becomes an ImportError, or is cleared by C code and lost): a stop requested
    meanwhile is delivered when the block ends. Python runs signal handlers in
    the main thread whichever thread the signal reached, so swapping the handlers holds them in a
    process with many threads too (a signal mask would hold only the main thread's)."""
    if not on_main_thread():
        yield
        return
    got: list[int] = []
    previous: dict = {}
    try:
        # one at a time, inside the try: signal.signal runs a pending handler before it swaps, so
        # a stop may land between two of them; what was swapped is then put back all the same
        for s in (signal.SIGTERM, signal.SIGINT):
            previous[s] = signal.signal(s, lambda signum, _frame: got.append(signum))
        yield
    finally:
        # collected ones are delivered below: restoring first would let one land in between
        for s in previous:
            signal.signal(s, signal.SIG_IGN if got else previous[s])
        if got:
            for s, handler in previous.items():
                if s != got[0]:
                    signal.signal(s, handler)
            signal.signal(got[0], previous[got[0]])
            _deliver(got[0], previous[got[0]])


def _deliver(signum: int, handler) -> None:
    """What the handler in force before the block would have done with the signal."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)
