"""Load runs written by RunWriter into pandas DataFrames."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd

from hpcbench.errors import UserError
from hpcbench.results.schema import METADATA_FILE, ROWS_FILE, SCHEMA_VERSION


def read_metadata(run_dir: Path | str) -> dict:
    path = Path(run_dir) / METADATA_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a results run (no {METADATA_FILE})")
    return json.loads(path.read_text())


def _read_rows(path: Path) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # the line being written when the run was killed
                warnings.warn(f"{path}: dropped a truncated last row", stacklevel=3)
            else:
                raise UserError(f"{path}:{i + 1}: corrupt row in the middle of the file")
    return rows


def load_run(run_dir: Path | str) -> pd.DataFrame:
    """All rows of one run as a DataFrame, one row per measured point.

    `df.attrs["metadata"]` holds the run's environment metadata. A run that was killed
    mid-sweep loads with every row it completed.
    """
    run_dir = Path(run_dir)
    metadata = read_metadata(run_dir)
    version = metadata.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{run_dir}: schema version {version}, this hpcbench reads {SCHEMA_VERSION}")
    df = pd.DataFrame(_read_rows(run_dir / ROWS_FILE))
    df.attrs["metadata"] = metadata
    return df


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
