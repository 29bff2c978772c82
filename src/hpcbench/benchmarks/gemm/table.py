"""The gemm family's terminal table: one row per kernel, shape and pass, with its time, rate,
speedups and accuracy (a failed or skipped row's reason is a numbered note under the table)."""

from __future__ import annotations

from hpcbench.results.schema import STATUS_FAILED, STATUS_OK
from hpcbench.api.tables import ReasonNotes, fmt, new_table

_STATUS = {STATUS_OK: "[green]ok[/]", STATUS_FAILED: "[red]FAILED[/]"}


def _ms(r: dict, key: str) -> str:
    return fmt(r[key] * 1e3 if r.get(key) is not None else None, ".4g")


def table(rows: list[dict], fallback: bool):
    mamf = any(r.get("pct_mamf") is not None for r in rows)  # only when gemm.mamf_run matched the device
    columns = ["M×N×K", "pass", "kernel", "status", "median ms", "p10–p90 ms", "CV", "TFLOP/s", "% peak",
               *(["% MAMF"] if mamf else []), "×BF16", "×BF16+q", "pred ×BF16+q", "calc_diff", "SQNR dB"]
    t = new_table("GEMM C = A @ B^T", fallback, "Triton interpreter", columns, left=("M×N×K", "pass", "kernel", "status"))
    for col in t.columns:
        col.no_wrap = True
    notes = ReasonNotes()
    for r in rows:
        ok = r.get("status") == STATUS_OK
        t.add_row(
            f"{fmt(r['M'])}×{fmt(r['N'])}×{fmt(r['K'])}", r.get("pass") or "fprop", r["kernel"],
            _STATUS.get(r.get("status"), "[dim]skipped[/]") + ("" if ok else f" {notes.mark(r)}"),
            _ms(r, "median_s") if ok else "",
            f"{_ms(r, 'p10_s')}–{_ms(r, 'p90_s')}" if ok else "",
            fmt(r.get("cv"), ".1%"), fmt(r.get("tflops"), ".4g"), fmt(r.get("pct_peak"), ".1f"),
            *([fmt(r.get("pct_mamf"), ".1f")] if mamf else []),
            fmt(r.get("speedup_vs_bf16"), ".2f"), fmt(r.get("speedup_vs_bf16_with_quant"), ".2f"),
            fmt(r.get("predicted_speedup"), ".2f"),
            fmt(r.get("calc_diff_orig"), ".2e"), fmt(r.get("sqnr_orig_db"), ".1f"),
        )
    return notes.attach(t)
