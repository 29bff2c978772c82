"""The performance targets, judged on the runs' own rows against the detected device's anchors.

Every target is a fraction of a published figure from `conf/anchors.yaml` for the device that
ran (never a number written for one GPU model): an H100 is held to the H100's MAMF, an H200 to
the H200's. A device with no anchor gets `n/a` with the reason. DeepGEMM published its block-scaled
and grouped FP8 figures on an H800, which has the H100 SXM's compute (989 BF16 / 1979 FP8 dense
TFLOP/s; only its NVLink is narrower, which no GEMM uses), so H100 and H200 SXM are held to those.
"""

from __future__ import annotations

import math
import numbers
import re

from hpcbench.models import anchors

PASS, FAIL, NA = "PASS", "FAIL", "n/a"

MAMF_WITHIN = 0.97  # the MAMF search: within 3 % of the device's published MAMF
SQUARE_OF_MAMF = 0.95  # Triton at 8192^3, as a fraction of the device's MAMF of that dtype
SQUARE_PEER_RATIO = {"triton_bf16": 1.0, "triton_fp8_tensor": 1.05}  # over cuBLAS / torch._scaled_mm
FP8_OVER_BF16 = 1.8
BLOCK_OF_DEEPGEMM = 0.79  # block-scaled FP8 at DeepSeek-V3's shapes, median of per-shape ratios
GROUPED_OF_DEEPGEMM = 0.82
PASSES_TARGET_SPEEDUP = 1.4
PASSES = ("fprop", "dgrad", "wgrad")
PASSES_M = 16384
SQUARE = {"M": 8192, "N": 8192, "K": 8192}
GROUPED_POINT = {"layout": "contiguous", "G": 4, "M": 8192, "N": 4096, "K": 7168}
BLOCK_M = 4096

MAMF_METHOD = ("mamf-finder reports the best iteration at boost clock after 30 s of warm-up; hpcbench the median "
               "of its repetitions with L2 flushed, so a few % below is the method, not the GPU")
TWIN_NOTE = "DeepGEMM's figure is an H800's: the H100 SXM's compute (989/1979 dense TFLOP/s), narrower NVLink only"


def reference_device(device: str | None) -> str | None:
    """The device whose published figures apply: DeepGEMM's H800 for an H100 or H200 SXM."""
    if device and re.search(r"H100|H200", device) and not re.search(r"NVL|PCIe", device, re.I):
        return "NVIDIA H800"
    return device


# ---- rows ---------------------------------------------------------------------------------------

def ok_rows(df, **where):
    """The ok rows whose columns equal the values given (none where a column is missing)."""
    if df is None or "status" not in df:
        return None
    rows = df[df["status"] == "ok"]
    for column, value in where.items():
        if column not in rows:
            return rows.iloc[0:0]
        rows = rows[rows[column] == value]
    return rows


def numbers_of(rows, column: str) -> list[float]:
    if rows is None or column not in rows:
        return []
    values = [float(v) for v in rows[column] if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    return [v for v in values if math.isfinite(v) and v > 0]


def median(values) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def median_of(df, column: str, **where) -> float | None:
    return median(numbers_of(ok_rows(df, **where), column))


def judge(value, minimum) -> str:
    if value is None or minimum is None:
        return NA
    return PASS if value >= minimum else FAIL


def row(target: str, wanted: str, verdict: str, tflops=None, ratio=None, seconds=None, note: str = "",
        known_weak: bool = False) -> dict:
    return {"target": target, "TFLOP/s": tflops, "ratio": ratio, "seconds": seconds, "wanted": wanted,
            "verdict": verdict, "note": note, "known_weak": known_weak}


def device_of(frames: dict) -> str | None:
    for df in frames.values():
        if df is not None and "device" in df:
            names = [str(d) for d in df["device"].dropna().unique() if str(d)]
            if names:
                return names[0]
    return None


# ---- the targets --------------------------------------------------------------------------------

def _anchor_value(metric: str, device: str | None, **config) -> float | None:
    found = anchors.match(metric, device, **config) if device else None
    return found.value if found else None


def square_targets(df, device: str | None) -> list[dict]:
    out = []
    for kernel, peer, dtype in (("triton_bf16", "torch_bf16", "bf16"), ("triton_fp8_tensor", "torch_fp8_tensor", "fp8")):
        mine, other = median_of(df, "tflops", kernel=kernel, **SQUARE), median_of(df, "tflops", kernel=peer, **SQUARE)
        mamf = _anchor_value(f"mamf_{dtype}_tflops", device)
        ratio = mine / other if mine and other else None
        floor = SQUARE_OF_MAMF * mamf if mamf else None
        verdicts = {judge(mine, floor), judge(ratio, SQUARE_PEER_RATIO[kernel])}
        verdict = NA if NA in verdicts else (FAIL if FAIL in verdicts else PASS)
        wanted = (f"≥ {SQUARE_OF_MAMF:g} × {dtype.upper()} MAMF {mamf:g} = {floor:.0f} TFLOP/s" if mamf
                  else f"n/a: no {dtype.upper()} MAMF anchor for {device or 'this device'}")
        out.append(row(f"Triton {dtype.upper()} at 8192³ vs {peer}", f"{wanted} and ≥ {SQUARE_PEER_RATIO[kernel]:g}× {peer}",
                       verdict, tflops=mine, ratio=ratio, note=MAMF_METHOD))
    fp8, bf16 = median_of(df, "tflops", kernel="triton_fp8_tensor", **SQUARE), median_of(df, "tflops", kernel="triton_bf16",
                                                                                       **SQUARE)
    ratio = fp8 / bf16 if fp8 and bf16 else None
    out.append(row("FP8/BF16 at 8192³ (Triton per-tensor / Triton BF16)", f"≥ {FP8_OVER_BF16:g}×",
                   judge(ratio, FP8_OVER_BF16), ratio=ratio))
    return out


def hopper_path_target(df, capability: tuple[int, int] | None) -> dict:
    wanted = "kernel_impl = tma_persistent for every Triton GEMM row on sm_90"
    if df is None or "kernel_impl" not in df or capability != (9, 0):
        return row("Hopper path (TMA, persistent) used by the Triton GEMMs", wanted, NA,
                   note="" if capability == (9, 0) else "not an sm_90 device")
    triton = df[df["kernel"].astype(str).str.startswith("triton") & (df["status"] == "ok")]
    impls = set(triton["kernel_impl"].dropna())
    verdict = NA if not impls else (PASS if impls == {"tma_persistent"} else FAIL)
    return row("Hopper path (TMA, persistent) used by the Triton GEMMs", wanted, verdict, note=", ".join(sorted(impls)))


def block_target(df, device: str | None) -> dict:
    """Block-scaled FP8 at DeepSeek-V3's N x K with M = 4096, each shape over DeepGEMM's figure
    for it; judged on the median ratio over the shapes that have a figure."""
    ref = reference_device(device)
    rows = ok_rows(df, kernel="triton_fp8_block", M=BLOCK_M)
    ratios, rates = [], []
    for (n, k), group in (rows.groupby(["N", "K"]) if rows is not None and len(rows) else []):
        rate = median(numbers_of(group, "tflops"))
        published = _anchor_value("matmul_fp8_tflops", ref, M=BLOCK_M, N=int(n), K=int(k), scaling="block")
        if rate and published:
            ratios.append(rate / published)
            rates.append(rate)
    ratio = median(ratios)
    note = f"{len(ratios)} shape(s) with a DeepGEMM figure; {TWIN_NOTE}" if ratios else (
        f"no DeepGEMM figure for {device or 'this device'} at these shapes")
    return row(f"block-scaled FP8, DeepSeek-V3 shapes at M={BLOCK_M} (median of × DeepGEMM)",
               f"≥ {BLOCK_OF_DEEPGEMM:g} × DeepGEMM per shape (median)", judge(ratio, BLOCK_OF_DEEPGEMM),
               tflops=median(rates), ratio=ratio, note=note)


def grouped_target(df, device: str | None) -> dict:
    """Triton's block-scaled FP8 grouped GEMM at DeepSeek-V3's contiguous point over DeepGEMM's."""
    fp8 = median_of(df, "tflops", kernel="triton_fp8", **GROUPED_POINT)
    published = _anchor_value("grouped_fp8_tflops", reference_device(device), **GROUPED_POINT)
    point = "×".join(str(GROUPED_POINT[k]) for k in ("G", "M", "N", "K"))
    wanted = (f"≥ {GROUPED_OF_DEEPGEMM:g} × DeepGEMM {published:g} = {GROUPED_OF_DEEPGEMM * published:.0f} TFLOP/s"
              if published else f"n/a: no DeepGEMM figure for {device or 'this device'}")
    ratio = fp8 / published if fp8 and published else None
    return row(f"grouped FP8 block-scaled (Triton), DeepSeek-V3 contiguous {point}", wanted,
               judge(ratio, GROUPED_OF_DEEPGEMM if published else None), tflops=fp8, ratio=ratio,
               note=f"pointer kernel (no TMA, no persistence): expected to FAIL; {TWIN_NOTE}", known_weak=True)


def passes_speedup(df, shapes) -> tuple[float | None, float | None]:
    """(speedup, FP8 TFLOP/s) of a training step's GEMMs over every shape and pass:

        speedup = sum over shapes and passes of triton_bf16 median_s
                  / sum over shapes and passes of triton_fp8_block e2e_median_s (casts included)

    and the FP8 rate sum(2MNK) / sum(e2e_median_s). (None, None) unless every (shape, pass) has both."""
    bf16 = fp8 = flops = 0.0
    for M, N, K in shapes:
        for p in PASSES:
            at = {"M": M, "N": N, "K": K, "pass": p}
            b = median_of(df, "median_s", kernel="triton_bf16", **at)
            f = median_of(df, "e2e_median_s", kernel="triton_fp8_block", **at)
            if b is None or f is None:
                return None, None
            bf16, fp8, flops = bf16 + b, fp8 + f, flops + 2 * M * N * K
    return (bf16 / fp8, flops / fp8 / 1e12) if fp8 else (None, None)


def passes_target(df, shapes) -> dict:
    speedup, tflops = passes_speedup(df, shapes)
    return row(f"FP8 block-scaled fprop+dgrad+wgrad over BF16, Llama-3-70B layers at M={PASSES_M}",
               f"≥ {PASSES_TARGET_SPEEDUP:g}× = Σ BF16 median / Σ FP8 e2e median (casts incl.), Triton",
               judge(speedup, PASSES_TARGET_SPEEDUP), tflops=tflops, ratio=speedup)


def mamf_best(df, dtype: str) -> float | None:
    """The MAMF of a dtype: the highest TFLOP/s (median time) of its ok points."""
    rows = ok_rows(df, dtype=dtype)
    if rows is not None and "record" in rows:
        rows = rows[rows["record"].isna() | (rows["record"] == "point")]
    values = numbers_of(rows, "tflops")
    return max(values) if values else None


def mamf_target(df, dtype: str, device: str | None) -> dict:
    anchor = anchors.match(f"mamf_{dtype}_tflops", device) if device else None
    best = mamf_best(df, dtype)
    if anchor is None:
        return row(f"MAMF {dtype.upper()} (swept around the published best shape)",
                   f"n/a: no published {dtype.upper()} MAMF for {device or 'this device'}", NA, tflops=best)
    minimum = MAMF_WITHIN * anchor.value
    return row(f"MAMF {dtype.upper()} (swept around the published best shape)",
               f"≥ {MAMF_WITHIN:g} × {anchor.value:g} = {minimum:.1f} TFLOP/s (mamf-finder, {anchor.hardware})",
               judge(best, minimum), tflops=best, ratio=best / anchor.value if best else None, note=MAMF_METHOD)


def judge_all(frames: dict, passes_shapes, capability=None) -> list[dict]:
    """Every target of the default call from the runs' frames (name -> DataFrame or None)."""
    device = device_of(frames)
    out = square_targets(frames.get("gemm-square"), device)
    out.append(hopper_path_target(frames.get("gemm-square"), capability))
    out.append(block_target(frames.get("gemm-deepseek_v3"), device))
    out.append(grouped_target(frames.get("grouped"), device))
    out.append(passes_target(frames.get("passes"), passes_shapes))
    out.extend(mamf_target(frames.get(f"mamf-{dtype}"), dtype, device) for dtype in ("bf16", "fp8"))
    return out


FINGERPRINT_MAX_S = 180.0


def fingerprint_target(status: str | None, seconds: float, limit_s: float | None, lines: int) -> dict:
    """benchmark=fingerprint's wall time: a pass needs the run to end with its summary lines inside
    FINGERPRINT_MAX_S; a run stopped at a limit of at least that long is a fail; anything else n/a."""
    wanted = f"≤ {FINGERPRINT_MAX_S:g} s wall, ending with its summary"
    if status == "timeout" and limit_s is not None and limit_s >= FINGERPRINT_MAX_S:
        return row("fingerprint wall time", wanted, FAIL, seconds=seconds)
    if status == "ok" and lines > 0:
        return row("fingerprint wall time", wanted, PASS if seconds <= FINGERPRINT_MAX_S else FAIL, seconds=seconds)
    return row("fingerprint wall time", wanted, NA, seconds=seconds if status else None)
