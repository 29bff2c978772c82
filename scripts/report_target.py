"""The report's performance target: `hpcbench report` on a 100,000-row run in <= 20 s on one core.

Writes a synthetic run (50,000 GEMM rows: 7 kernels x ~7,100 shapes; 50,000 collectives rows:
6 collectives x 2 placements x ~4,200 sizes; every row with its raw samples, as real rows have)
through RunWriter, then times the report command (hpcbench.analysis.report.main: load the run and
build the report) and prints PASS or FAIL against 20 s. Pin it to one core:

    taskset -c 0 .venv/bin/python scripts/report_target.py [--rows 100000] [--dir DIR] [--keep]

The run goes to /dev/shm by default: RunWriter fsyncs every row (crash safety), which costs
~1 ms per row on a disk and is not what is being measured here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hpcbench.results import RunWriter
from hpcbench.results.schema import SCHEMA_VERSION

TARGET_S = 20.0
GEMM_KERNELS = [("torch_bf16", "torch", "bf16"), ("triton_bf16", "triton", "bf16"),
                ("torch_fp8_tensor", "torch", "fp8"), ("triton_fp8_tensor", "triton", "fp8"),
                ("torch_fp8_row", "torch", "fp8"), ("triton_fp8_row", "triton", "fp8"),
                ("triton_fp8_block", "triton", "fp8")]
COLLECTIVES = ["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "staged_all_reduce"]
PEAK = {"bf16": 989.0, "fp8": 1979.0}  # H100 SXM dense peaks: gives the plot its rooflines


def _common(run_id: str, benchmark: str, point: int, rng) -> dict:
    return {"schema_version": SCHEMA_VERSION, "run_id": run_id, "benchmark": benchmark, "point": point,
            "status": "ok" if rng.random() > 0.01 else "failed", "reason": None, "device": "NVIDIA H100 80GB HBM3",
            "device_kind": "cuda", "fallback": False, "timing_method": "cuda_event",
            "finished_at": "2026-01-01T00:00:00+00:00"}


def write_run(run_dir: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    run_id = run_dir.name
    writer = RunWriter(run_dir)
    writer.write_metadata({
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "started_at": "2026-01-01T00:00:00+00:00",
        "device_kind": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_count": 8, "driver_version": "550.54.15", "cuda_runtime": "12.4", "torch_version": "2.13.0",
        "nccl_version": "2.21.5", "world_size": 8, "fallback": False, "suite": ["gemm", "collectives"],
        "status": "complete"})
    point = 0
    n_gemm = rows // 2
    shapes = rng.integers(1, 64, size=(n_gemm // len(GEMM_KERNELS) + 1, 3)) * 128
    for m, n, k in shapes:
        flops = 2 * int(m) * int(n) * int(k)
        for kernel, backend, dtype in GEMM_KERNELS:
            if point >= n_gemm:
                break
            tflops = PEAK[dtype] * rng.uniform(0.2, 0.8)
            median_s = flops / (tflops * 1e12)
            writer.append({**_common(run_id, "gemm", point, rng), "shape_set": "synthetic", "M": int(m),
                           "N": int(n), "K": int(k), "kernel": kernel, "backend": backend, "dtype": dtype,
                           "flops": flops, "median_s": median_s, "tflops": tflops, "peak_tflops": PEAK[dtype],
                           "pct_peak": 100 * tflops / PEAK[dtype], "n_samples": 20,
                           "samples_s": (median_s * rng.uniform(0.95, 1.05, 20)).tolist()})
            point += 1
    combos = [(c, p) for c in COLLECTIVES for p in ("in_place", "out_of_place")]
    per_combo = (rows - point) // len(combos) + 1
    for coll, placement in combos:
        for size in np.linspace(8, 1 << 30, per_combo).astype(np.int64):
            if point >= rows:
                break
            t_us = 20 + int(size) / 150e3 * rng.uniform(0.9, 1.1)
            algbw = int(size) / (t_us * 1e-6) / 1e9
            writer.append({**_common(run_id, "collectives", point, rng), "record": "measurement",
                           "collective": coll, "placement": placement, "size_bytes": int(size), "type": "float",
                           "world_size": 8, "time_us": t_us, "algbw_GBps": algbw, "busbw_GBps": algbw * 1.75,
                           "median_s": t_us * 1e-6, "samples_s": (t_us * 1e-6 * rng.uniform(0.95, 1.05, 20)).tolist()})
            point += 1
    writer.close()
    if hasattr(writer, "compact"):
        writer.compact()  # a finished run is compacted by the runner; the reader loads that copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, help="where to write the run and the report (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run and the report")
    args = parser.parse_args(argv)
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    root = args.dir or Path(tempfile.mkdtemp(prefix="report-target-", dir=base))
    try:
        run_dir = root / "synthetic-100k"
        t0 = time.perf_counter()
        write_run(run_dir, args.rows)
        print(f"wrote {args.rows} rows to {run_dir} in {time.perf_counter() - t0:.1f} s")

        from hpcbench.analysis import report

        # what `hpcbench report RUN --out DIR` does: load the run, then build the report
        t0 = time.perf_counter()
        report.main([str(run_dir), "--out", str(root / "report")])
        total = time.perf_counter() - t0
        pngs = sorted(p.name for p in (root / "report").glob("*.png"))
        print(f"wrote {', '.join(pngs)}")
        passed = total <= TARGET_S
        print(f"{'PASS' if passed else 'FAIL'}: report on {args.rows} rows in {total:.2f} s "
              f"(target <= {TARGET_S:g} s)")
        return 0 if passed else 1
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
