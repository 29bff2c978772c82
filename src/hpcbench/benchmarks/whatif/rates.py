"""The primitive rates a step is costed with: measured by hpcbench's own runs where given
(`whatif.costs_from`), else the cluster's published figures x a stated efficiency.

  primitive        measured from (a run of the same GPU)             fallback (assumed)
  gemm_fp8/bf16    gemm rows: fastest kernel per (M, N, K), TFLOP/s   peak[dtype] x compute_efficiency
                   interpolated in log(FLOPs) between shapes, clamped
  attention        (not measured by any family)                      BF16 peak x compute_efficiency
                                                                     x ATTENTION_RELATIVE
  hbm              (not measured)                                    hbm_GBps x HBM_EFFICIENCY
  tp_collective    collectives alpha-beta fits, one host             ring over NVLink (nvlink_GBps, latency)
  dp_collective    fits from a run spanning hosts (else one host,    ring over the network (net_GBps) when the
                   used when the group fits in a node)               group spans nodes, else over NVLink
  moe_nvlink       moe_alltoall rows (logical GB/s), one host        nvlink_GBps
  moe_network      moe_alltoall rows from several hosts              net_GBps
  overlap_slowdown overlap / moe_alltoall rows: median compute      sms / (sms - a2a_sms): the SMs the
                   slowdown under overlap                            all-to-all reserves
  pipeline         pipeline rows: per-action gap, p2p latency        0 gap; the link's latency
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpcbench.benchmarks.whatif.specs import ClusterSpec
from hpcbench.api.errors import UserError

HBM_EFFICIENCY = 0.8  # memory-bound kernels (norms, activations, optimizer) reach ~80 % of HBM bandwidth
# attention kernels reach this share of the efficiency dense GEMMs reach: fused attention's forward +
# backward runs at ~35-60 % of Hopper's BF16 peak (FlashAttention-2/-3 papers) where GEMMs reach 65-75 %
ATTENTION_RELATIVE = 0.6
PRIMITIVES = ("gemm_fp8", "gemm_bf16", "attention", "hbm", "tp_collective", "dp_collective", "moe_nvlink",
              "moe_network", "overlap_slowdown", "pipeline")


def _ring(n: int, nbytes: float, alpha_s: float, bw_Bps: float, factor: float, steps: int) -> float:
    return steps * alpha_s + factor * nbytes / bw_Bps if n > 1 else 0.0


_FACTOR = {"all_reduce": lambda n: 2 * (n - 1) / n, "reduce_scatter": lambda n: (n - 1) / n,
           "all_gather": lambda n: (n - 1) / n}
_STEPS = {"all_reduce": lambda n: 2 * (n - 1), "reduce_scatter": lambda n: n - 1, "all_gather": lambda n: n - 1}


@dataclass
class Fit:
    alpha_s: float
    bus_Bps: float


@dataclass
class Rates:
    cluster: ClusterSpec
    gemm_tables: dict = field(default_factory=dict)  # dtype -> (log flops sorted, tflops)
    fits_intra: dict = field(default_factory=dict)  # collective -> Fit (one host)
    fits_net: dict = field(default_factory=dict)  # collective -> Fit (several hosts)
    moe_GBps: dict = field(default_factory=dict)  # "nvlink" | "network" -> GB/s
    slowdown: float | None = None  # measured compute slowdown under overlap (factor >= 1)
    action_gap_s: float | None = None
    p2p_latency_s: float | None = None
    measured: dict = field(default_factory=dict)  # primitive -> run it came from

    # ---- compute ---------------------------------------------------------------------------
    def gemm_s(self, m: float, n: int, k: int, dtype: str) -> float:
        flops = 2.0 * m * n * k
        if flops <= 0:
            return 0.0
        table = self.gemm_tables.get(dtype)
        if table is not None:
            xs, ys = table
            tflops = float(np.interp(math.log(flops), xs, ys))
        else:
            tflops = self.cluster.peak_tflops[dtype] * self.cluster.compute_efficiency
        return flops / (tflops * 1e12)

    def attention_s(self, flops: float) -> float:
        c = self.cluster
        return flops / (c.peak_tflops["bf16"] * c.compute_efficiency * ATTENTION_RELATIVE * 1e12)

    def hbm_s(self, nbytes: float) -> float:
        return nbytes / (self.cluster.hbm_GBps * 1e9 * HBM_EFFICIENCY)

    # ---- communication -------------------------------------------------------------------
    def collective_s(self, name: str, n: int, nbytes: float, spans_nodes: bool) -> float:
        """A ring collective over `n` GPUs; nccl-tests' sizes (all_reduce: per-rank buffer,
        reduce_scatter/all_gather: the whole buffer)."""
        if n <= 1 or nbytes <= 0:
            return 0.0
        c = self.cluster
        fits = self.fits_net if spans_nodes else self.fits_intra
        fit = fits.get(name) or (fits.get("all_reduce") if name != "all_reduce" else None)
        if fit is not None:
            return _ring(n, nbytes, fit.alpha_s, fit.bus_Bps, _FACTOR[name](n), _STEPS[name](n))
        bw, lat = (c.net_GBps, c.net_latency_us) if spans_nodes else (c.nvlink_GBps, c.nvlink_latency_us)
        return _ring(n, nbytes, lat * 1e-6, bw * 1e9, _FACTOR[name](n), _STEPS[name](n))

    def moe_Bps(self, link: str) -> float:
        c = self.cluster
        return 1e9 * self.moe_GBps.get(link, c.nvlink_GBps if link == "nvlink" else c.net_GBps)

    def overlap_slowdown(self, a2a_sms: int) -> float:
        if self.slowdown is not None:
            return self.slowdown
        return self.cluster.sms / (self.cluster.sms - a2a_sms)

    def p2p_s(self, nbytes: float, spans_nodes: bool) -> tuple[float, float]:
        """(latency s, bandwidth B/s) of a pipeline hop."""
        c = self.cluster
        lat = (c.net_latency_us if spans_nodes else c.nvlink_latency_us) * 1e-6
        if self.p2p_latency_s is not None:
            lat = self.p2p_latency_s
        return lat, 1e9 * (c.net_GBps if spans_nodes else c.nvlink_GBps)

    @property
    def action_gap(self) -> float:
        return self.action_gap_s or 0.0

    def assumed(self) -> list[str]:
        return [p for p in PRIMITIVES if p not in self.measured]


# ---- reading measured runs ----------------------------------------------------------------

def _hosts(meta: dict) -> int:
    dist = meta.get("distributed") or {}
    hosts = dist.get("hosts") or []
    return len(set(hosts)) if hosts else 1


def _device_ok(meta: dict, cluster: ClusterSpec, allow_other: bool, run: Path) -> None:
    name = str(meta.get("device_name") or meta.get("gpu_name") or "")
    if cluster.gpu.lower() in name.lower() or allow_other:
        return
    raise UserError(f"whatif.costs_from: {run} was measured on {name or 'an unknown device'!r}, not a "
                    f"{cluster.gpu} ({cluster.name}); whatif.allow_other_device=true uses it anyway")


def _ok(df, benchmark: str):
    if "benchmark" not in df.columns or "status" not in df.columns:
        return df.iloc[0:0]
    return df[(df["benchmark"] == benchmark) & (df["status"] == "ok")]


def _gemm(rows, rates: Rates, label: str) -> None:
    if rows.empty or "tflops" not in rows.columns:
        return
    for dtype, part in rows.groupby("dtype"):
        if dtype not in ("bf16", "fp8"):
            continue
        best = part.groupby(["M", "N", "K"])["tflops"].max().reset_index()  # the fastest kernel per shape
        flops = 2.0 * best["M"] * best["N"] * best["K"]
        order = np.argsort(flops.to_numpy())
        xs = np.log(flops.to_numpy()[order].astype(float))
        ys = best["tflops"].to_numpy()[order].astype(float)
        rates.gemm_tables[dtype] = (xs, ys)
        rates.measured[f"gemm_{dtype}"] = label


def _collectives(rows, rates: Rates, hosts: int, label: str) -> None:
    if rows.empty or "record" not in rows.columns:
        return
    fits = rows[rows["record"] == "alpha_beta_fit"]
    target = rates.fits_net if hosts > 1 else rates.fits_intra
    for r in fits.to_dict("records"):
        if r.get("collective") in _FACTOR and r.get("bus_bandwidth_GBps"):
            target[r["collective"]] = Fit(float(r.get("alpha_us") or 0.0) * 1e-6, float(r["bus_bandwidth_GBps"]) * 1e9)
    if target:
        rates.measured["dp_collective" if hosts > 1 else "tp_collective"] = label
        if hosts == 1:  # a data-parallel group inside one node uses these too
            rates.measured.setdefault("dp_collective", label + " (one node)")


def _slowdown(rows, rates: Rates, label: str) -> None:
    if rows.empty or "compute_slowdown" not in rows.columns:
        return
    values = [float(v) for v in rows["compute_slowdown"].dropna() if math.isfinite(float(v))]
    if values:
        rates.slowdown = max(1.0, 1.0 + statistics.median(values))
        rates.measured["overlap_slowdown"] = label


def _moe(rows, rates: Rates, hosts: int, label: str) -> None:
    if rows.empty or "logical_GBps" not in rows.columns:
        return
    phases = rows[rows["phase"].isin(["dispatch", "combine"])]["logical_GBps"].dropna()
    if len(phases):
        link = "network" if hosts > 1 else "nvlink"
        rates.moe_GBps[link] = float(statistics.median(phases))
        rates.measured[f"moe_{link}"] = label


def _pipeline(run: Path, rates: Rates, label: str) -> None:
    from hpcbench.pipeline.predict import costs_from_run

    try:
        measured = costs_from_run(run, "dualpipe")
    except UserError:
        return
    rates.action_gap_s = float(measured.get("dispatch", 0.0)) * 1e-3
    rates.p2p_latency_s = float(measured.get("p2p_latency", 0.0)) * 1e-3
    rates.measured["pipeline"] = label


def load_rates(cluster: ClusterSpec, runs: list[str], allow_other: bool = False) -> Rates:
    """The cluster's rates, with what the runs in `runs` measured taking the place of the figures."""
    from hpcbench.results import load_run
    from hpcbench.results.reader import quietly

    rates = Rates(cluster)
    for text in runs:
        run = Path(text)
        if not run.exists():
            raise UserError(f"whatif.costs_from: {run} does not exist")
        try:
            df = quietly(load_run, run)
        except (OSError, ValueError) as exc:
            raise UserError(f"whatif.costs_from: {run} cannot be read ({exc})") from None
        meta = df.attrs.get("metadata", {})
        _device_ok(meta, cluster, allow_other, run)
        label, hosts = run.name, _hosts(meta)
        _gemm(_ok(df, "gemm"), rates, label)
        _collectives(_ok(df, "collectives"), rates, hosts, label)
        _slowdown(_ok(df, "overlap"), rates, label)
        moe = _ok(df, "moe_alltoall")
        _moe(moe, rates, hosts, label)
        if "overlap_slowdown" not in rates.measured:
            _slowdown(moe, rates, label)
        if not _ok(df, "pipeline").empty:
            _pipeline(run, rates, label)
    return rates
