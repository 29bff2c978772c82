"""Columnar copies of a run: the compacted rows of a finished run, and `hpcbench export` files.

rows.jsonl is the store's log: append-only and crash-safe, but slow to parse at a million rows.
When a run ends, rank 0 writes the same rows as rows.arrow (Arrow IPC, uncompressed: it is memory
mapped, so a million rows with their raw samples open in a fraction of a second; the samples are a
list<double> column). The reader uses it only while it still describes rows.jsonl byte for byte (a
resumed run appends, and the log wins again). Exports are .parquet (smaller, read by every data
tool) with the run's metadata embedded, so one file is a whole run.

Columns whose values are not one flat type (nested dicts, lists of strings, mixed kinds) are stored
as JSON text and decoded on load; their names travel in the file's key-value metadata.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import pandas as pd
import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
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
    if isinstance(value, list) and all(v is None or (isinstance(v, numbers.Number) and not isinstance(v, bool))
                                       for v in value):
        return "numbers"  # None: a NaN the writer stored as null
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


def rows_table(rows: list[dict], metadata: dict | None = None, source_bytes: int | None = None) -> pa.Table:
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
    return table.replace_schema_metadata(kv)


def write_table(table: pa.Table, path: Path) -> None:
    """.parquet or .arrow by the suffix; written aside and renamed, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        pq.write_table(table, tmp)
    else:
        # one record batch: the list columns map to one contiguous buffer, read without a copy
        feather.write_feather(table, tmp, compression="uncompressed", chunksize=max(1, table.num_rows))
    tmp.replace(path)


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path, columns=columns)
    # the IPC reader on the memory map: zero copy, where feather.read_table takes tens of ms on a
    # million rows for the same table
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    return table if columns is None else table.select(columns)


def schema_of(path: Path) -> pa.Schema:
    if path.suffix == ".parquet":
        return pq.read_schema(path)
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).schema


def to_frame(table: pa.Table, as_lists: bool = True) -> pd.DataFrame:
    """Rows as the jsonl reader gives them: JSON columns decoded; list columns as Python lists
    (`as_lists=False` leaves numpy arrays: much faster for a million rows)."""
    kv = table.schema.metadata or {}
    df = table.to_pandas()
    for name in json.loads(kv.get(JSON_COLUMNS_KEY, b"[]")):
        if name in df.columns:
            df[name] = df[name].astype(object).map(lambda s: json.loads(s) if isinstance(s, str) else None)
    if as_lists:
        for field in table.schema:
            if pa.types.is_list(field.type):
                df[field.name] = df[field.name].map(lambda a: a if a is None else a.tolist())
    return df


def embedded_metadata(schema: pa.Schema) -> dict | None:
    kv = schema.metadata or {}
    return json.loads(kv[META_KEY]) if META_KEY in kv else None


def flat_lists(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<double> column as (values, starts, lengths): row i is values[starts[i]:starts[i] + lengths[i]];
    a null row has length 0. No per-row Python work: a million rows take milliseconds."""
    if isinstance(column, pa.ChunkedArray):
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    else:
        array = column
    offsets = array.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    if array.null_count:
        lengths[~array.is_valid().to_numpy(zero_copy_only=False)] = 0
    values = array.values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return values, offsets[:-1], lengths
