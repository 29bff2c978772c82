"""A stored run's MAMF per dtype, for "% of MAMF" columns elsewhere (the gemm family's, say).

    device, best = mamf_best("results/mamf-h200")   # ("NVIDIA H200", {"bf16": 771.2, "fp8": 1402.0})

The device name is the one the run recorded in its metadata: match it against the device of the
rows it is held against before showing any percentage (an unmatched device shows nothing).
"""

from __future__ import annotations

import warnings

import pandas as pd

from hpcbench.api.errors import UserError
from hpcbench.results import load_run
from hpcbench.results.schema import STATUS_OK

BENCHMARK = "mamf"


def mamf_best(run_dir: str) -> tuple[str | None, dict[str, float]]:
    """(the device name recorded in the run's metadata, {dtype: best TFLOP/s over its ok mamf points}).

    The best is the highest `tflops` (median time) of the ok point rows; summary rows are not read,
    so a run cut short before its summary still gives its MAMF. Raises UserError (one line) when
    `run_dir` is not a run or holds no ok mamf point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a truncated last line (a run cut short) is no reason to complain here
        df = load_run(run_dir)
    needed = {"benchmark", "status", "dtype", "tflops"}
    if not needed <= set(df.columns):
        raise UserError(f"{run_dir}: no ok mamf rows in this run")
    points = df["record"].isna() | (df["record"] == "point") if "record" in df.columns else True
    tflops = pd.to_numeric(df["tflops"], errors="coerce")
    ok = df[(df["benchmark"] == BENCHMARK) & (df["status"] == STATUS_OK) & points & tflops.notna()]
    if ok.empty:
        raise UserError(f"{run_dir}: no ok mamf rows in this run")
    best = tflops[ok.index].groupby(ok["dtype"], sort=False).max()
    device = df.attrs.get("metadata", {}).get("device_name")
    return (str(device) if device else None), {str(d): float(v) for d, v in best.items()}
