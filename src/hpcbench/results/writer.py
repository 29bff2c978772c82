"""Append-only run writer.

Each row is written as one JSON line, flushed and fsync'ed before the next point starts, so a run
killed with SIGKILL keeps every completed row readable (at worst the line being written is cut,
and the reader drops that one). Metadata is replaced atomically (write to a temp file, rename).
Only rank 0 writes; other ranks get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from hpcbench.results.schema import (CONFIG_FILE, METADATA_FILE, ROWS_ARROW, ROWS_FILE, STATUS_FAILED, STATUS_OK,
                                     STATUS_SKIPPED)


def _clean(value):
    """JSON-safe value: NaN becomes null; tuples become lists; numpy/torch scalars become floats."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _clean(value.item())
    return value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _drop_cut_line(path: Path) -> None:
    """A run killed mid-write left half a row at the end of the log; a resumed run would glue its
    first row onto it. That half row never completed: cut the log back to its last full line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


class RunWriter:
    def __init__(self, run_dir: Path | str, enabled: bool = True):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.rows_written = 0
        self._rows = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, yaml_text: str, hydra_record: tuple = ()) -> None:
        """The run's resolved config, and Hydra's record of the job (`.hydra/`: its overrides and
        configs), which Hydra itself is told not to write: it would write it before the run is locked."""
        if self.enabled:
            _atomic_write(self.run_dir / CONFIG_FILE, yaml_text)
            for name, text in hydra_record:
                (self.run_dir / ".hydra").mkdir(exist_ok=True)
                _atomic_write(self.run_dir / ".hydra" / name, text)

    def write_metadata(self, metadata: dict) -> None:
        if self.enabled:
            _atomic_write(self.run_dir / METADATA_FILE, json.dumps(_clean(metadata), indent=2) + "\n")

    def append(self, row: dict) -> None:
        if not self.enabled:
            return
        if self._rows is None:
            _drop_cut_line(self.run_dir / ROWS_FILE)
            self._rows = open(self.run_dir / ROWS_FILE, "a")
        self._rows.write(json.dumps(_clean(row)) + "\n")
        self._rows.flush()
        os.fsync(self._rows.fileno())
        self.rows_written += 1

    def close(self) -> None:
        if self._rows is not None:
            self._rows.close()
            self._rows = None

    def stored(self) -> tuple[list[dict], bool]:
        """The rows in rows.jsonl now, every attempt's (a cut last line dropped), and whether any
        line was unreadable. The counts in the metadata come from here, so they always agree
        with the rows, whenever a stop request lands."""
        from hpcbench.results.reader import read_jsonl

        damage: list[str] = []
        rows = read_jsonl(self.run_dir / ROWS_FILE, damage) if self.enabled else []
        return rows, bool(damage)

    def compact(self, rows: list[dict] | None = None) -> bool:
        """Write rows.arrow, the columnar copy of rows.jsonl that large runs load from (`rows`: the
        log's rows, when already read). The log stays the truth: a log with unreadable lines is
        not compacted (the reader reports them)."""
        import hpcbench.results.columnar as columnar

        log = self.run_dir / ROWS_FILE
        if not self.enabled or not log.is_file():
            return False
        size = log.stat().st_size
        if rows is None:
            rows, damaged = self.stored()
            if damaged:
                return False
        columnar.write_table(columnar.rows_table(rows, source_bytes=size), self.run_dir / ROWS_ARROW)
        return True


def status_counts(rows: list[dict]) -> dict[str, int]:
    return {s: sum(r.get("status") == s for r in rows) for s in (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED)}


def record_failure(run_dir: Path, message: str) -> None:
    """Record in a run's metadata that it did not finish, and why as the launcher saw it (it knows
    every rank's exit; rank 0's own view, if it wrote one, is kept as rank0_error)."""
    from hpcbench.api.errors import UserError
    from hpcbench.results.reader import read_metadata

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
