"""Stop a multi-rank run that stopped making progress, and say which rank and collective it was.

Every rank counts its progress (`Watchdog.tick`: once per point and once per timed sample, a
couple of attribute writes on the hot path). A background thread publishes the count, the label of
the current work and a timestamp to a shared c10d store (the "board") twice a second. When a rank
has made no progress for `timeout_s`, its thread reads the board: the ranks whose count is behind
the others' (or whose heartbeat stopped) are the ones that hung or died, and the label of the
ranks ahead is the collective they are waiting in. Rank 0 records that in the run's metadata,
every rank exits, and the launcher stops the rest.

Ranks SPMD-step through the same points and samples, so equal counts mean "same place".
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import sys
import threading
import time
from typing import Callable

import torch.distributed as dist

BOARD_ENV = "HPCBENCH_BOARD"  # host:port of a store the launcher hosts (outlives crashed ranks)
FAULT_ENV = "HPCBENCH_INJECT_FAULT"  # "kill:RANK:POINT" or "hang:RANK:POINT", for testing failure paths
EXIT_HUNG = 3
_PUBLISH_EVERY_S = 0.5


def store_from_env(prefix: str) -> dist.Store | None:
    """A client of the board store: the launcher's if it hosts one, else the process group's."""
    address = os.environ.get(BOARD_ENV) or (
        f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}" if os.environ.get("MASTER_ADDR") else None)
    if not address:
        return None
    host, port = address.rsplit(":", 1)
    store = dist.TCPStore(host, int(port), is_master=False, timeout=_dt.timedelta(seconds=10),
                          wait_for_workers=False)
    return dist.PrefixStore(f"hpcbench/{prefix}/", store)


def publish(store: dist.Store, rank: int, state: dict) -> None:
    store.set(f"rank{rank}", json.dumps(state))


def snapshot(store: dist.Store, world_size: int) -> dict[int, dict | None]:
    """Every rank's last published state (None for a rank that never published)."""
    keys = [f"rank{r}" for r in range(world_size)]
    present = [k for k in keys if store.check([k])]
    values = dict(zip(present, store.multi_get(present))) if present else {}
    return {r: (json.loads(values[k]) if k in values else None) for r, k in enumerate(keys)}


def diagnose(board: dict[int, dict | None], now: float, stale_s: float = 4 * _PUBLISH_EVERY_S) -> str:
    """Which ranks are behind or silent, and where the others are waiting. Pure: tests feed it boards."""
    alive = {r: s for r, s in board.items() if s is not None and now - s["time"] <= stale_s}
    silent = sorted(r for r in board if r not in alive)
    if not board or not any(board.values()):
        return "no rank reported any progress"
    lead = max(s["tick"] for s in board.values() if s is not None)
    leaders = sorted(r for r, s in board.items() if s is not None and s["tick"] == lead)
    behind = sorted(r for r, s in alive.items() if s["tick"] < lead)
    where = board[leaders[0]]["label"]
    parts = []
    for r in behind:
        parts.append(f"rank {r} did not reach '{where}' (last at '{board[r]['label']}')")
    for r in silent:
        last = board[r]["label"] if board[r] else "start-up"
        parts.append(f"rank {r} stopped responding (last at '{last}')")
    detail = "; ".join(f"rank {r}: {s['where']}" for r, s in sorted(board.items()) if s and s.get("where"))
    if not parts:
        return f"all ranks are inside '{where}' and it did not complete" + (f" ({detail})" if detail else "")
    waiting = ", ".join(map(str, [r for r in leaders if r not in silent]))
    return ("; ".join(parts) + (f"; rank(s) {waiting} waited in '{where}'" if waiting else "")
            + (f" ({detail})" if detail else ""))


class Watchdog:
    """Per-rank progress counter plus the thread that publishes it and stops a stuck run."""

    def __init__(self, store: dist.Store | None, rank: int, world_size: int, timeout_s: float,
                 on_hang: Callable[[str], None], label_store: dist.Store | None = None):
        # two clients: the thread's, and the main thread's for publishing a new label at once
        # (so the board names the point a rank entered even if it is killed right after)
        self.store, self.label_store, self.rank, self.world_size = store, label_store, rank, world_size
        self.timeout_s = timeout_s
        self.on_hang = on_hang
        self.count = 0
        self.label = "start-up"
        self.where = ""  # finer than the label, e.g. a pipeline action; published by the thread only
        self.last_progress = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a new label: publish now, not at the next period
        self._thread = threading.Thread(target=self._run, name="hpcbench-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._wake.set()  # publish "start-up" at once
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def tick(self, label: str | None = None) -> None:
        self.count += 1
        self.last_progress = time.monotonic()
        if label is not None:
            self.label, self.where = label, ""
            if self.label_store is not None:
                publish(self.label_store, self.rank, self._state())

    def at(self, where: str) -> None:
        """Progress inside a point whose ranks do different work (pipeline actions): no count, so
        ranks stay comparable; the thread publishes `where` at its next period."""
        self.where = where
        self.last_progress = time.monotonic()

    def _state(self) -> dict:
        return {"tick": self.count, "label": self.label, "where": self.where, "time": time.time(), "pid": os.getpid()}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(_PUBLISH_EVERY_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self.store is not None:
                    publish(self.store, self.rank, self._state())
                if time.monotonic() - self.last_progress > self.timeout_s:
                    self._fire()
                    return
            except Exception:  # the store went away with the run; nothing left to watch
                if self._stop.is_set():
                    return

    def _fire(self) -> None:
        if self.store is not None:
            publish(self.store, self.rank, self._state())
            time.sleep(_PUBLISH_EVERY_S)  # let the other ranks' last states land
            where = diagnose(snapshot(self.store, self.world_size), time.time())
        else:
            where = f"rank {self.rank} made no progress in '{self.label}'"
        message = f"no progress for {self.timeout_s:g} s (dist.timeout_s): {where}"
        try:
            self.on_hang(message)
        finally:
            os._exit(EXIT_HUNG)  # the main thread is blocked in a collective; only a hard exit stops it


def inject_fault(rank: int, point: int | str) -> None:
    """Testing aid: HPCBENCH_INJECT_FAULT=kill:1:2 kills rank 1 after its point 2; hang:... sleeps.
    The pipeline executor calls it with action labels before each action (hang:1:1F3)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    action, fault_rank, fault_point = spec.split(":")
    if action == "slow":  # a delay on every timed iteration: hpcbench.measure.rank_timing applies it
        return
    if int(fault_rank) != rank or fault_point != str(point):
        return
    print(f"hpcbench: injecting fault {action!r} on rank {rank} at {point}", file=sys.stderr, flush=True)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        while True:
            time.sleep(3600)
    raise ValueError(f"{FAULT_ENV}: unknown action {action!r} (kill or hang)")
