"""The GPU paths no benchmark family covers on its own, each against a known answer.

    python -m hpcbench.acceptance.probes timing|nccl|p2p|nvml|accumulation

Each prints one JSON object (`status`: ok | failed | n/a, `detail`, and its figures) as its last
line and exits 0 unless it failed. Where the hardware a probe needs is absent (the CPU dry run),
it says `n/a` and why: never `ok` for a path that did not run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

import torch

from hpcbench.acceptance.verdicts import p2p_outcome

NA, OK, FAILED = "n/a", "ok", "failed"


def _result(status: str, detail: str = "", **figures) -> dict:
    return {"status": status, "detail": detail, **figures}


def timing() -> dict:
    """CUDA events time a BF16 matmul at a plausible rate (never above the datasheet peak); a
    CUDA-graph replay times a short kernel below the event time of one launch."""
    if not torch.cuda.is_available():
        return _result(NA, "no CUDA device")
    from hpcbench.models.hardware import peak_tflops
    from hpcbench.measure.timing import TimingPolicy, time_fn

    dev = torch.device("cuda")
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    events = time_fn(lambda: a @ b, dev, TimingPolicy(warmup=3, min_reps=10, max_reps=30, cuda_graph=False))
    rate = 2 * n**3 / events.stats.median_s / 1e12
    peak = peak_tflops(torch.cuda.get_device_name(), "bf16") or 2000.0
    x = torch.randn(4096, device=dev)
    graph = time_fn(lambda: x.mul_(1.0), dev, TimingPolicy(warmup=3, min_reps=20, max_reps=50, cuda_graph=True))
    # one evented launch, no flush queued ahead of it: the event pair spans the host's launch path,
    # which the graph replay removes
    one = time_fn(lambda: x.mul_(1.0), dev, TimingPolicy(warmup=3, min_reps=20, max_reps=50, cuda_graph=False,
                                                         flush_l2=False))
    figures = {"event_method": events.method, "bf16_tflops": rate, "peak_tflops": peak,
               "graph_method": graph.method, "graph_us": graph.stats.median_s * 1e6, "event_us": one.stats.median_s * 1e6}
    if events.method != "cuda_event" or graph.method != "cuda_graph":
        return _result(FAILED, f"methods {events.method}/{graph.method}", **figures)
    if not 10 < rate <= peak:
        return _result(FAILED, f"{rate:.0f} TFLOP/s is outside (10, {peak:g}]", **figures)
    if not 0 < graph.stats.median_s <= one.stats.median_s:
        return _result(FAILED, "a graph replay timed slower than a single evented launch", **figures)
    return _result(OK, f"{rate:.0f} TFLOP/s by events; {figures['graph_us']:.1f} us per launch in a graph", **figures)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _world_of_one() -> bool:
    """An NCCL process group of one rank on GPU 0; False where there is no NCCL to start."""
    import torch.distributed as dist

    if not (torch.cuda.is_available() and dist.is_available() and dist.is_nccl_available()):
        return False
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    return True


def _nccl_version() -> str:
    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int (2.21.5 -> 22105) in older ones
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def nccl() -> dict:
    """An all_reduce on an NCCL world of one: the buffer comes back unchanged (sum over one rank)."""
    import torch.distributed as dist

    if not _world_of_one():
        return _result(NA, "no CUDA device or no NCCL")
    try:
        x = torch.arange(1 << 20, device="cuda", dtype=torch.float32)
        want = x.clone()
        dist.all_reduce(x)
        torch.cuda.synchronize()
        same = bool(torch.equal(x, want))
        return _result(OK if same else FAILED, f"all_reduce of 4 MiB at world 1 {'exact' if same else 'changed'}",
                       nccl_version=_nccl_version())
    finally:
        dist.destroy_process_group()


def p2p() -> dict:
    """One batch_isend_irecv that sends to and receives from this rank itself on NCCL: how many
    Works it returns (NCCL coalesces a batch into one; gloo returns one per op) and the data."""
    import torch.distributed as dist

    if not _world_of_one():
        return p2p_outcome(nccl=False)
    try:
        x = torch.arange(4096, device="cuda", dtype=torch.float32)
        y = torch.empty_like(x)
        try:
            works = dist.batch_isend_irecv([dist.P2POp(dist.isend, x, 0), dist.P2POp(dist.irecv, y, 0)])
            for w in works:
                w.wait()
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - NCCL refusing a send to itself is an answer
            return p2p_outcome(nccl=True, error=f"{type(exc).__name__}: {exc}"[:200])
        return p2p_outcome(nccl=True, works=len(works), exact=bool(torch.equal(x, y)))
    finally:
        dist.destroy_process_group()


def nvml() -> dict:
    """NVML's energy counter advances across a second of matmuls, at a power between 20 W and
    the board's limit."""
    from hpcbench.measure.energy import open_meter

    if not torch.cuda.is_available():
        return _result(NA, "no CUDA device")
    meter = open_meter("cuda", 0)
    if not getattr(meter, "available", False):
        return _result(FAILED, f"no NVML meter: {meter.reason}")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    meter.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()
    reading = meter.stop()
    meter.close()
    if reading.energy_J is None:
        return _result(FAILED, reading.reason or "no energy")
    watts = reading.energy_J / reading.interval_s
    limit_w = meter.nvml.nvmlDeviceGetEnforcedPowerLimit(meter.handle) / 1e3
    figures = {"energy_J": reading.energy_J, "avg_W": watts, "power_limit_W": limit_w,
               "sm_clock_min_MHz": reading.sm_clock_min_MHz}
    ok = 20 < watts <= 1.05 * limit_w
    return _result(OK if ok else FAILED, f"{watts:.0f} W average (limit {limit_w:.0f} W)", **figures)


def accumulation() -> dict:
    """calc_diff of torch._scaled_mm with fast and with FP32 accumulation against float64, by K:
    the fast path's error should grow with K (Hopper's ~14-bit accumulator)."""
    from hpcbench.measure.accuracy import calc_diff

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    by_k = []
    for K in ([4096, 16384, 28672] if cuda else [256, 1024]):
        g = torch.Generator(device=dev).manual_seed(K)
        a = torch.randn(256, K, device=dev, generator=g)
        b = torch.randn(256, K, device=dev, generator=g)
        sa, sb = a.abs().max() / 448, b.abs().max() / 448
        aq, bq = (a / sa).to(torch.float8_e4m3fn), (b / sb).to(torch.float8_e4m3fn)
        ref = (aq.double() * sa.double()) @ (bq.double() * sb.double()).T
        row = {"K": K}
        for fast in (True, False):
            y = torch._scaled_mm(aq, bq.T, scale_a=sa.float(), scale_b=sb.float(), out_dtype=torch.float32,
                                 use_fast_accum=fast)
            row["fast" if fast else "fp32"] = float(calc_diff(y.double(), ref))
        by_k.append(row)
    worst = max(max(r["fast"], r["fp32"]) for r in by_k)
    status = OK if worst < 1e-3 else FAILED  # FP8 inputs dequantized exactly: only accumulation error is left
    return _result(status, f"worst calc_diff {worst:.2e} on {dev}", device=dev, calc_diff_by_K=by_k)


PROBES = {"timing": timing, "nccl": nccl, "p2p": p2p, "nvml": nvml, "accumulation": accumulation}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in PROBES:
        print(f"usage: python -m hpcbench.acceptance.probes {{{'|'.join(PROBES)}}}", file=sys.stderr)
        return 2
    try:
        result = PROBES[argv[0]]()
    except Exception as exc:  # noqa: BLE001 - a probe's crash is its result
        result = _result(FAILED, f"{type(exc).__name__}: {exc}"[:300])
    print(json.dumps(result, default=str), flush=True)
    return 1 if result["status"] == FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
