"""Parquet copies of a run: the compacted rows of a finished run, and `hpcbench export` files.

rows.jsonl is the store's log: append-only and crash-safe, but slow to parse at a million rows.
When a run ends, rank 0 writes the same rows as rows.parquet (columnar; the raw samples become a
list<double> column that loads without a per-row parse). The reader uses it only while it still
describes rows.jsonl byte for byte (a resumed run appends, and the log wins again). Exported files
are the same format with the run's metadata embedded, so one file is a whole run.

Columns whose values are not one flat type (nested dicts, lists of strings, mixed kinds) are stored
as JSON text and decoded on load; their names travel in the file's key-value metadata.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

META_KEY = b"hpcbench.metadata"
JSON_COLUMNS_KEY = b"hpcbench.json_columns"
SOURCE_BYTES_KEY = b"hpcbench.source_bytes"


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Number):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list) and all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in value):
        return "numbers"
    return "other"


def _column(values: list) -> tuple[pa.Array, bool]:
    """(arrow array, stored as JSON text?) for one column of row values."""
    kinds = {_kind(v) for v in values if v is not None}
    if kinds == {"numbers"}:
        return pa.array(values, type=pa.list_(pa.float64())), False
    if kinds <= {"number"}:
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64()), False
    if len(kinds) == 1 and kinds < {"bool", "str"}:
        return pa.array(values), False
    return pa.array([None if v is None else json.dumps(v) for v in values], type=pa.string()), True


def write_rows(rows: list[dict], path: Path, metadata: dict | None = None, source_bytes: int | None = None) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    arrays, as_json = [], []
    for name in columns:
        array, is_json = _column([row.get(name) for row in rows])
        arrays.append(array)
        if is_json:
            as_json.append(name)
    table = pa.Table.from_arrays(arrays, names=columns) if columns else pa.table({})
    kv = {JSON_COLUMNS_KEY: json.dumps(as_json).encode()}
    if metadata is not None:
        kv[META_KEY] = json.dumps(metadata).encode()
    if source_bytes is not None:
        kv[SOURCE_BYTES_KEY] = str(source_bytes).encode()
    table = table.replace_schema_metadata(kv)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def file_metadata(path: Path) -> dict[bytes, bytes]:
    return pq.read_schema(path).metadata or {}


def read_rows(path: Path, as_lists: bool = True) -> tuple[pd.DataFrame, dict | None]:
    """(rows, embedded run metadata or None). List columns hold Python lists, as rows.jsonl gives
    them; `as_lists=False` leaves them numpy arrays (much faster for a million rows)."""
    table = pq.read_table(path)
    kv = table.schema.metadata or {}
    df = table.to_pandas()
    for name in json.loads(kv.get(JSON_COLUMNS_KEY, b"[]")):
        df[name] = df[name].astype(object).map(lambda s: json.loads(s) if isinstance(s, str) else None)
    if as_lists:
        for field in table.schema:
            if pa.types.is_list(field.type):
                df[field.name] = df[field.name].map(lambda a: a if a is None else a.tolist())
    metadata = json.loads(kv[META_KEY]) if META_KEY in kv else None
    return df, metadata
