"""Column names every row carries, whatever the benchmark. Benchmarks add their own after these."""

# 2: pipeline rows carry every step's time (samples_s, median_s) like the other timed families
SCHEMA_VERSION = 2

CONFIG_FILE = "config.yaml"
METADATA_FILE = "metadata.json"
ROWS_FILE = "rows.jsonl"
ROWS_ARROW = "rows.arrow"  # the columnar copy written when a run ends (see results.columnar)

# status of a point: measured and verified / failed a check (no speed reported) / not run, with reason
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"

COMMON_COLUMNS = [
    "schema_version",
    "run_id",
    "benchmark",
    "point",  # index of the point within the run
    "status",
    "reason",  # why a point failed or was skipped
    "device",  # device name as torch reports it
    "device_kind",  # "cuda" | "cpu"
    "fallback",  # True for CPU-fallback measurements, never comparable with GPU rows
    "timing_method",
    "finished_at",
]
