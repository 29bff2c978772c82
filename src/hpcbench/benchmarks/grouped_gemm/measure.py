"""Check, then time, one variant on one problem; the row's metrics.

Check (before any timing): the output buffer is filled with a sentinel, the variant runs once, its
valid rows are compared with the float64 reference (calc_diff, SQNR, max relative error: against
the original BF16 inputs and, for FP8, against the dequantized inputs), and the rows it must not
write (padding rows, rows beyond masked_m) must still hold the sentinel. A miss is a failed row
with no speed.
"""

from __future__ import annotations

from hpcbench.measure.accuracy import accuracy, fp8_tolerance
from hpcbench.benchmarks.grouped_gemm.problems import SENTINEL, Problem, bytes_moved, flops
from hpcbench.benchmarks.grouped_gemm.variants import Prepared, Variant, prepare
from hpcbench.api.errors import ImpossibleMeasurement
from hpcbench.models.hardware import peak_tflops
from hpcbench.results.schema import STATUS_FAILED, STATUS_OK
from hpcbench.measure.timing import tflops, time_fn, timed_columns


def reduction_length(problem: Problem) -> int:
    """The longest K one output element sums over (k_grouped: the largest expert's tokens)."""
    return max(problem.sizes) if problem.layout == "k_grouped" else problem.point.K


def tolerances(v: Variant, problem: Problem, accumulation: str, cfg) -> dict:
    if v.dtype == "bf16":
        return {"tol_orig": cfg.tol_bf16, "tol_deq": None}
    extra = fp8_tolerance(0.0, reduction_length(problem), accumulation)
    return {"tol_orig": cfg.tol_fp8_e2e + extra, "tol_deq": cfg.tol_fp8_kernel + extra}


def check(v: Variant, problem: Problem, out, prepared: Prepared, reference, cfg) -> tuple[dict, str | None]:
    """Accuracy columns, the tolerances applied, the untouched-row count and, on a miss, the reason."""
    got = problem.valid(out)
    orig = accuracy(got, reference)
    deq = accuracy(got, problem.reference(*prepared.dequantized)) if prepared.dequantized else orig
    cols = {"accumulation": prepared.accumulation, **tolerances(v, problem, prepared.accumulation, cfg)}
    for tag, m in (("deq", deq), ("orig", orig)):
        cols.update({f"calc_diff_{tag}": m["calc_diff"], f"sqnr_{tag}_db": m["sqnr_db"],
                     f"max_rel_err_{tag}": m["max_rel_err"]})
    written = problem.untouched(out) if prepared.in_place else None
    cols["rows_written_outside"] = written
    cols["padding_check"] = ("sentinel" if written is not None
                             else "n/a: allocates its output" if problem.layout != "k_grouped" else "n/a: no padding")
    checks = [("original inputs", orig["calc_diff"], cols["tol_orig"])]
    if v.dtype == "fp8":
        checks.append(("dequantized inputs", deq["calc_diff"], cols["tol_deq"]))
    for against, value, tol in checks:
        if not value <= tol:  # also catches NaN
            return cols, f"calc_diff {value:.3g} > tolerance {tol:g} against {against}"
    if written:
        return cols, f"{written} rows that must stay untouched (padding / beyond masked_m) were written"
    return cols, None


def measure(v: Variant, problem: Problem, reference, cfg, ctx, bf16_time: dict) -> dict:
    out = problem.new_output(SENTINEL)
    prepared = prepare(v, problem, out)
    result = prepared.run()
    cols, failure = check(v, problem, result, prepared, reference, cfg)
    cols["kernel_impl"] = prepared.kernel_impl
    if failure:
        return {**cols, "status": STATUS_FAILED, "reason": failure}
    timing = time_fn(prepared.run, ctx.device.torch_device, ctx.timing)
    median = timing.stats.median_s
    cols.update(timed_columns(timing.samples_s, timing.method))
    peak = None if ctx.device.fallback else peak_tflops(ctx.device.name, v.dtype)
    try:
        cols["tflops"] = tflops(flops(problem), median, peak)
    except ImpossibleMeasurement as exc:
        return {**cols, "status": STATUS_FAILED, "reason": str(exc)}
    cols["bytes"] = bytes_moved(problem, v.dtype)
    cols["GBps"] = cols["bytes"] / median / 1e9
    cols["peak_tflops"] = peak
    cols["pct_peak"] = 100 * cols["tflops"] / peak if peak else None
    if v.dtype == "bf16":
        bf16_time[v.backend] = median
    else:
        base = bf16_time.get(v.backend)
        cols["speedup_vs_bf16"] = base / median if base else None
    return {**cols, "status": STATUS_OK, "reason": None}
