"""Load runs into pandas DataFrames: a run directory, its rows.jsonl, or an exported .parquet file.

Older schema versions are upgraded on load (see UPGRADES); a version newer than this hpcbench is
a clear error. Damage is never fatal when something is readable: a truncated last line (a run
killed mid-write) or corrupt lines are skipped, and what was skipped is listed in
`df.attrs["damage"]` and raised as a warning.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from hpcbench.api.errors import UserError
import hpcbench.results.columnar as columnar
from hpcbench.results.schema import METADATA_FILE, ROWS_ARROW, ROWS_FILE, SCHEMA_VERSION


def _median_from_step_ms_v1(df: pd.DataFrame) -> pd.DataFrame:
    """Schema 1 kept only the median step (step_ms) of rows timed per step, not every step's time."""
    if "step_ms" in df.columns:
        if "median_s" not in df.columns:
            df["median_s"] = None
        gap = df["median_s"].isna() & df["step_ms"].notna()
        df.loc[gap, "median_s"] = df.loc[gap, "step_ms"] / 1e3
    return df


# version -> function taking that version's rows to the next version's
UPGRADES = {1: _median_from_step_ms_v1}


def read_metadata(run_dir: Path | str) -> dict:
    path = Path(run_dir) / METADATA_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a results run (no {METADATA_FILE})")
    try:
        metadata = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: corrupt metadata ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(metadata, dict):
        raise UserError(f"{path}: corrupt metadata (a JSON {type(metadata).__name__}, not an object)")
    return metadata


def read_jsonl(path: Path, damage: list[str]) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    bad = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            row = None
        if not isinstance(row, dict):
            if i == last:
                damage.append(f"{path}: dropped a truncated last row (line {i + 1}; the run was cut mid-write)")
            else:
                bad.append(i + 1)
            continue
        rows.append(row)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        damage.append(f"{path}: skipped {len(bad)} corrupt line(s): {shown}")
    return rows


def _compacted_is_current(run_dir: Path) -> bool:
    copy, log = run_dir / ROWS_ARROW, run_dir / ROWS_FILE
    if not copy.is_file() or not log.is_file():
        return False
    try:
        source = (columnar.schema_of(copy).metadata or {}).get(columnar.SOURCE_BYTES_KEY)
    except Exception:  # noqa: BLE001 - an unreadable copy: the log is the truth
        return False
    return source is not None and int(source) == log.stat().st_size


def _upgrade(df: pd.DataFrame, version, where: Path) -> pd.DataFrame:
    if not isinstance(version, int):
        raise UserError(f"{where}: no schema version in the metadata: not written by hpcbench")
    if version < 1:
        raise UserError(f"{where}: schema version {version} was never written by hpcbench")
    if version > SCHEMA_VERSION:
        raise UserError(f"{where}: schema version {version} is newer than this hpcbench reads "
                        f"({SCHEMA_VERSION}): upgrade hpcbench")
    for v in range(version, SCHEMA_VERSION):
        df = UPGRADES[v](df)
    return df


WHAT = "expected a results directory, rows.jsonl or an exported .parquet"


def open_run(path: Path) -> tuple[pa.Table | list[dict], dict, list[str]]:
    """(an Arrow table or the log's rows, the run metadata, damage found)."""
    damage: list[str] = []
    if path.is_file() and path.suffix == ".parquet":
        try:
            metadata = columnar.embedded_metadata(columnar.schema_of(path))
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a file that is not parquet vary
            raise UserError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0][:120]})") from None
        if metadata is None:
            raise UserError(f"{path}: not an hpcbench export (no run metadata in the file)")
        return path, metadata, damage
    if path.is_file() and path.name.endswith(".jsonl"):
        return read_jsonl(path, damage), read_metadata(path.parent), damage
    if path.is_dir():
        metadata = read_metadata(path)
        if _compacted_is_current(path):
            return path / ROWS_ARROW, metadata, damage
        return _rows_against_counts(path, read_jsonl(path / ROWS_FILE, damage), metadata, damage), metadata, damage
    if not path.exists():
        raise UserError(f"{path}: no such run ({WHAT})")
    raise UserError(f"{path}: not a results run ({WHAT})")


def _counted(metadata: dict) -> int | None:
    """How many rows the metadata says were stored (its ok/failed/skipped counts), if it says."""
    points = metadata.get("points")
    if not isinstance(points, dict):
        return None
    try:
        return sum(int(v) for v in points.values())
    except (TypeError, ValueError):
        return None


def _rows_against_counts(path: Path, rows: list[dict], metadata: dict, damage: list[str]) -> pa.Table | list[dict] | Path:
    """The log's rows, unless it holds fewer than the metadata counts (emptied, deleted, cut):
    then the columnar copy where it holds more, and said either way. A run whose rows are
    all unreadable is an error, not an empty table."""
    expected, log = _counted(metadata), path / ROWS_FILE
    if expected is None or len(rows) >= expected:
        return rows
    state = "missing" if not log.is_file() else f"holds {len(rows)} row(s)"
    copy = path / ROWS_ARROW
    try:
        in_copy = columnar.read_table(copy).num_rows if copy.is_file() else 0
    except Exception:  # noqa: BLE001 - an unreadable copy is no copy
        in_copy = 0
    if in_copy > len(rows):
        damage.append(f"{log}: {state}, the metadata counts {expected}: read the {in_copy} row(s) of {ROWS_ARROW}")
        return copy
    if not rows and expected:
        raise UserError(f"{log}: {state}, the metadata counts {expected} row(s), and no readable copy "
                        f"({ROWS_ARROW}) holds them: nothing of this run's rows is left to read")
    damage.append(f"{log}: {state}, the metadata counts {expected}: {expected - len(rows)} row(s) lost")
    return rows


_open = open_run  # the name it had before it was public


def _finish(df: pd.DataFrame, metadata: dict, damage: list[str], path: Path) -> pd.DataFrame:
    df = _upgrade(df, metadata.get("schema_version"), path)
    for message in damage:
        warnings.warn(message, stacklevel=3)
    df.attrs["metadata"] = metadata
    df.attrs["damage"] = damage
    return df


def load_run(path: Path | str, as_lists: bool = True) -> pd.DataFrame:
    """All rows of one run as a DataFrame, one row per measured point.

    `path` is a run directory, its rows.jsonl, or a .parquet file from `hpcbench export`.
    `df.attrs["metadata"]` holds the run's environment metadata, `df.attrs["damage"]` what could
    not be read. A run killed mid-sweep loads with every row it completed. List columns (the raw
    samples) hold lists; `as_lists=False` may leave numpy arrays instead (fast for large runs).
    """
    path = Path(path)
    source, metadata, damage = open_run(path)
    df = pd.DataFrame(source) if isinstance(source, list) else columnar.to_frame(columnar.read_table(source), as_lists)
    return _finish(df, metadata, damage, path)


@dataclass
class Samples:
    """One list column of every row, flat: row i is values[starts[i]:starts[i] + lengths[i]]."""
    values: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_lists(cls, lists) -> "Samples":
        """From one list (or array) of samples per row; a missing list is an empty row, and a
        sample that is not a number reads as NaN (compare reports its point as damaged)."""
        rows = [v if isinstance(v, (list, tuple, np.ndarray)) else () for v in lists]
        lengths = np.fromiter((len(v) for v in rows), np.int64, len(rows))
        values = np.fromiter((x if isinstance(x, (int, float, np.number)) and not isinstance(x, bool) else np.nan
                              for v in rows for x in v), np.float64, int(lengths.sum()))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(rows) else lengths
        return cls(values, starts, lengths)

    def matrix(self, rows: np.ndarray, n: int, copy: bool = True) -> np.ndarray:
        """The samples of `rows` (all of length n) as a (len(rows), n) array. `copy=False` allows a
        read-only view where the rows' samples lie back to back (no copy to make)."""
        starts = self.starts[rows]
        if not copy and len(starts) and starts[0] >= 0 and starts[-1] + n <= len(self.values) \
                and starts[-1] - starts[0] == (len(starts) - 1) * n and (np.diff(starts) == n).all():
            block = self.values[starts[0]: starts[-1] + n].reshape(-1, n)
            block.flags.writeable = False  # a view of the run's samples: not the caller's to change
            return block
        if len(starts) and not (starts % n).any() and starts.max() + n <= len(self.values):
            # rows on a stride of n (a run whose points all kept n samples): whole-row copies
            return self.values[: len(self.values) // n * n].reshape(-1, n)[starts // n]
        return self.values[starts[:, None] + np.arange(n)]


def load_run_samples(path: Path | str, column: str = "samples_s",
                     only: set[str] | None = None) -> tuple[pd.DataFrame, Samples]:
    """The run's scalar columns as a DataFrame (list columns left out) and `column` as flat
    Samples aligned with its rows: what compare needs from a million-row run, without a Python
    object per sample list. `only` limits the columns read from a columnar copy."""
    path = Path(path)
    source, metadata, damage = open_run(path)
    if isinstance(source, list):
        df = pd.DataFrame(source)
        samples = Samples.from_lists(df.pop(column) if column in df.columns else [None] * len(df))
        df = df.drop(columns=[c for c in df.columns if df[c].map(lambda v: isinstance(v, (list, dict))).any()])
    else:
        schema = columnar.schema_of(source)
        scalar = [f.name for f in schema if not pa.types.is_list(f.type) and (only is None or f.name in only)]
        table = columnar.read_table(source, columns=scalar + ([column] if column in schema.names else []))
        if column in schema.names and pa.types.is_list(schema.field(column).type):
            values, starts, lengths = columnar.flat_lists(table.column(column))
            samples = Samples(values, starts, lengths)  # a null sample reads as NaN: reported as damaged
            table = table.drop_columns([column])
        else:
            samples = Samples(np.zeros(0), np.zeros(table.num_rows, np.int64), np.zeros(table.num_rows, np.int64))
        df = columnar.to_frame(table, as_lists=False)
    return _finish(df, metadata, damage, path), samples


def quietly(load, *args, **kwargs):
    """Call a loader (load_run, load_run_samples) for a command line: what could not be read is
    said as one `hpcbench: warning:` line each on stderr rather than as Python warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = load(*args, **kwargs)
    df = result[0] if isinstance(result, tuple) else result
    for message in df.attrs.get("damage", []):
        print(f"hpcbench: warning: {message}", file=sys.stderr)
    return result


def load_runs(run_dirs) -> pd.DataFrame:
    """Rows of several runs concatenated; the `run_id` column tells them apart."""
    frames = [load_run(d) for d in run_dirs]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def find_runs(root: Path | str = "results") -> list[Path]:
    """Every run directory under `root` (those holding a metadata file), oldest first."""
    root = Path(root)
    return sorted((p.parent for p in root.rglob(METADATA_FILE)), key=lambda p: p.stat().st_mtime)
