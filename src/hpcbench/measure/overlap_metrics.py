"""How much communication an overlapped run hides, from measured times (VISION.md §3, Overlap).

T_comp and T_comm are measured alone, T_seq back to back (never assumed to be T_comp + T_comm),
T_ovl overlapped; T_comp_ovl and T_comm_ovl are each stream's own duration inside the overlapped run.
"""

from __future__ import annotations


def overlap_metrics(t_comp: float, t_comm: float, t_seq: float, t_ovl: float,
                    t_comp_ovl: float | None = None, t_comm_ovl: float | None = None) -> dict:
    saved = t_comp + t_comm - t_ovl
    ideal = max(t_comp, t_comm)
    return {
        "hidden_fraction": saved / t_comm,  # share of T_comm that disappeared
        "hidden_fraction_bounded": saved / min(t_comp, t_comm),  # at most 1 when comm > comp too
        "exposed_comm_s": t_ovl - t_comp,
        "speedup_vs_seq": t_seq / t_ovl,
        # share of the attainable gain (T_seq down to max(T_comp, T_comm)) actually obtained
        "fraction_of_ideal": (t_seq - t_ovl) / (t_seq - ideal) if t_seq > ideal else None,
        "compute_slowdown": t_comp_ovl / t_comp - 1 if t_comp_ovl is not None else None,
        "comm_slowdown": t_comm_ovl / t_comm - 1 if t_comm_ovl is not None else None,
    }
