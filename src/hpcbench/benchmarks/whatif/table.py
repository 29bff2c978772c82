"""The what-if terminal tables: the step as DeepSeek publishes it, throughput and MFU, exposed
communication, memory, and which inputs were measured."""

from __future__ import annotations

from rich.console import Group

from hpcbench.results.schema import STATUS_OK
from hpcbench.api.tables import fmt, new_table, status_cell

PHASES = (("phase_1f_s", "1F"), ("phase_bubble_s", "bubble"), ("phase_1b_s", "1B"), ("phase_1w_s", "1W"),
          ("phase_fnb_s", "F&B"), ("optimizer_phase_s", "opt"))


def _label(r: dict) -> str:
    return (f"{r['model']} on {fmt(r['gpus'])} {r['cluster']} ({r['parallel']}: TP{fmt(r['tp'])} PP{fmt(r['pp'])} "
            f"DP{fmt(r['dp'])} EP{fmt(r['ep'])} CP{fmt(r['cp'])}, {r['schedule']}, {fmt(r['microbatches'])} mb)")


def table(rows: list[dict], fallback: bool):
    step = new_table("What-if step (seconds; phases averaged over pipeline ranks)", False, "",
                     ["configuration", "status", "step", *(n for _, n in PHASES), "tokens/day", "TFLOP/s causal",
                      "full", "MFU causal", "full"], left=("configuration", "status"))
    comm = new_table("Exposed communication per step (s) and memory per GPU (GB)", False, "",
                     ["configuration", "P2P", "a2a NVLink", "a2a network", "TP", "DP reduce", "DP gather",
                      "params", "grads", "optimizer", "activations", "total", "verdict"],
                     left=("configuration", "verdict"))
    inputs = new_table("Inputs", False, "", ["configuration", "measured", "assumed", "calibration"],
                       left=("configuration", "measured", "assumed", "calibration"))
    for r in rows:
        label = _label(r)
        ok = r.get("status") == STATUS_OK
        step.add_row(label, status_cell(r, 70), fmt(r.get("step_s"), ".3f"),
                     *(fmt(r.get(k), ".2f") for k, _ in PHASES),
                     fmt(r["tokens_per_day"] / 1e9, ".1f") + "B" if ok else "",
                     fmt(r.get("tflops_per_gpu_causal"), ".0f"), fmt(r.get("tflops_per_gpu_full"), ".0f"),
                     fmt(r.get("mfu_causal"), ".1%"), fmt(r.get("mfu_full"), ".1%"))
        if not ok:
            continue
        comm.add_row(label, fmt(r.get("exposed_p2p_s"), ".3f"), fmt(r.get("exposed_a2a_nvlink_s"), ".3f"),
                     fmt(r.get("exposed_a2a_network_s"), ".3f"), fmt(r.get("exposed_tp_s"), ".3f"),
                     fmt(r.get("dp_reduce_s"), ".3f"), fmt(r.get("dp_gather_s"), ".3f"),
                     fmt(r.get("mem_params_GB"), ".1f"), fmt(r.get("mem_grads_GB"), ".1f"),
                     fmt(r.get("mem_optimizer_GB"), ".1f"), fmt(r.get("mem_activations_GB"), ".1f"),
                     fmt(r.get("mem_total_GB"), ".1f"), r.get("verdict") or "")
        inputs.add_row(label, r.get("measured") or "(none)", r.get("assumed") or "", r.get("calibrated_on") or "")
    peak = next((r.get("mfu_peak_tflops") for r in rows if r.get("mfu_peak_tflops")), None)
    if peak:
        step.caption = (f"MFU against the dense BF16 peak ({peak:g} TFLOP/s) even for FP8 GEMMs; causal counts the "
                        "lower triangle of attention, full every key; MTP excluded")
    return Group(step, comm, inputs)
