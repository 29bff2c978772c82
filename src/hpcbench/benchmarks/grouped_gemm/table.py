"""The terminal table: one line per (point, variant)."""

from __future__ import annotations

from hpcbench.benchmarks.grouped_gemm.settings import label_of
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK
from hpcbench.api.tables import fmt, new_table

_STATUS = {STATUS_OK: "[green]ok[/]", STATUS_FAILED: "[red]FAILED[/]"}
COLUMNS = ["point", "kernel", "status", "rows", "imbal", "median ms", "TFLOP/s", "GB/s", "% peak", "×BF16",
           "calc_diff", "pad"]


def _pad(r: dict) -> str:
    written = r.get("rows_written_outside")
    if written is None:
        return ""
    return "[green]kept[/]" if written == 0 else f"[red]{fmt(written)} written[/]"


def table(rows: list[dict], fallback: bool):
    t = new_table("Grouped expert GEMMs (MoE)", fallback, "Triton interpreter",
                  COLUMNS, left=("point", "kernel", "status"))
    for r in rows:
        ok = r.get("status") == STATUS_OK
        work = r.get("sum_k") if r.get("layout") == "k_grouped" else r.get("valid_m")
        t.add_row(
            label_of(r), r["kernel"], _STATUS.get(r.get("status"), "[dim]skipped[/]"), fmt(work),
            fmt(r.get("imbalance_measured"), ".2f"),
            fmt(r["median_s"] * 1e3, ".4g") if ok else (r.get("reason") or "")[:40],
            fmt(r.get("tflops"), ".4g"), fmt(r.get("GBps"), ".4g"), fmt(r.get("pct_peak"), ".1f"),
            fmt(r.get("speedup_vs_bf16"), ".2f"), fmt(r.get("calc_diff_orig"), ".2e"), _pad(r),
        )
    t.caption = ("point: layout GxMxNxK (contiguous/masked: M rows per expert on average; k_grouped: K tokens per "
                 "expert on average). TFLOP/s on valid rows only; GB/s: DeepGEMM's bytes (FP8 1 B, BF16 2 B inputs; "
                 "BF16 out 2 B, k_grouped FP32 out 4 B); ×BF16: the same backend's BF16 time / this one; pad: rows "
                 "that must stay unwritten (padding, beyond masked_m), checked with a sentinel.")
    t.caption_justify = "left"
    return t
