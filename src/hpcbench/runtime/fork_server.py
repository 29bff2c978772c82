"""Imported first by the fork server the local ranks come from (runtime.launch), for its side
effects on a stop. A terminal's Ctrl-C reaches the whole process group, the server included:

- the server ignores Ctrl-C (still importing torch, it would print a KeyboardInterrupt traceback
  of its own; the launcher stops it anyway): the launcher starts it with Ctrl-C blocked, and this
  ignores it, then unblocks it (a Ctrl-C that came meanwhile is dropped). Ranks forked from it
  inherit the ignoring and take Ctrl-C back first thing (launch._rank_main).
- a rank forked while the launcher is already winding the launch down finds the launcher's
  semaphore gone before any of its own code runs; it ends without a traceback (the launcher says
  what happened). Any other failure there is printed as usual.
"""

import signal
import sys
import traceback

signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

_print = sys.excepthook


def _launcher_gone(exc_type, exc, tb) -> bool:
    frames = traceback.extract_tb(tb)
    return (issubclass(exc_type, FileNotFoundError) and bool(frames)
            and frames[-1].filename.endswith("synchronize.py") and frames[-1].name == "__setstate__")


def _excepthook(exc_type, exc, tb):
    if not _launcher_gone(exc_type, exc, tb):
        _print(exc_type, exc, tb)


sys.excepthook = _excepthook
