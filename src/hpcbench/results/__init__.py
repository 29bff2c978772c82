"""Results store: one directory per run, tidy rows that pandas loads.

A run directory holds
  config.yaml     the composed, resolved config
  metadata.json   environment metadata (see hpcbench.runtime.environment), schema version, status
  rows.jsonl      one JSON object per measured point, appended and fsync'ed as each completes

Load it with `hpcbench.results.load_run(path)` (a DataFrame) or `load_runs([...])`.
"""

from hpcbench.results.reader import find_runs, load_run, load_runs, read_metadata
from hpcbench.results.schema import SCHEMA_VERSION
from hpcbench.results.writer import RunWriter

__all__ = ["SCHEMA_VERSION", "RunWriter", "find_runs", "load_run", "load_runs", "read_metadata"]
