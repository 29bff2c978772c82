"""The `hpcbench` console script. It only arms the stop signals before the command loads: a
Ctrl-C or SIGTERM that lands while Hydra, torch and the families are still being imported is one
line and the shell's status (130, 143), not an import traceback or a silent death. Everything else
is `hpcbench.cli:main` (hpcbench.core.cli), which callers in Python use directly."""

from __future__ import annotations

import signal
import sys

from hpcbench.runtime.signals import Terminated, arm_stops, stops_deferred

NOTHING = "no run was started, nothing was written"


def main() -> int:
    arm_stops()  # the runner and the launcher take over from here
    try:
        with stops_deferred():  # a stop lands after the imports, not inside them (runtime.signals)
            from hpcbench.core.cli import main as cli_main
    except KeyboardInterrupt:
        print(f"hpcbench: interrupted: {NOTHING}", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as exc:
        print(f"hpcbench: stopped ({exc}): {NOTHING}", file=sys.stderr)
        return 128 + signal.SIGTERM
    try:
        return cli_main(console=True)
    except KeyboardInterrupt:  # landed before the command's own handling began
        print(f"hpcbench: interrupted: {NOTHING}", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as exc:
        print(f"hpcbench: stopped ({exc}): {NOTHING}", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:  # the run is recorded: a stop landing while the interpreter winds down changes nothing
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
