"""The best TFLOP/s per dtype that a MAMF run (gemm.mamf_run) measured on this device: what the
gemm rows' `pct_mamf` is a percentage of."""

from __future__ import annotations

import sys

# what a MAMF run may call each dtype
_MAMF_DTYPES = {"bf16": ("bf16", "bfloat16", "torch.bfloat16"),
                "fp8": ("fp8", "float8_e4m3fn", "torch.float8_e4m3fn", "e4m3", "fp8_e4m3")}


def mamf_of_device(mamf_run: str | None, ctx) -> dict | None:
    """{"bf16"/"fp8": best TFLOP/s} of the MAMF run gemm.mamf_run names, when it measured this device;
    otherwise None, with a warning when the devices differ (a MAMF of another GPU says nothing here)."""
    if mamf_run is None:
        return None
    from hpcbench.benchmarks.mamf.best import (
        mamf_best,  # the mamf family; imported only when asked for
    )

    device, best = mamf_best(mamf_run)
    here = ctx.device.name
    if not device or not here or device.strip().lower() != here.strip().lower():
        print(f"hpcbench: warning: gemm.mamf_run={mamf_run} measured {device or 'an unnamed device'}, "
              f"this run is on {here or 'an unnamed device'}: no % MAMF column", file=sys.stderr)
        return None
    found = {}
    for dtype, names in _MAMF_DTYPES.items():
        value = next((best[n] for n in names if best.get(n)), None)
        if value:
            found[dtype] = float(value)
    return found
