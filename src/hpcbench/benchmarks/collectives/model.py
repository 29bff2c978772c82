"""The alpha-beta model of a collectives sweep: one fit per collective, and its projections to
other world sizes (labelled as projections, never as measurements)."""

from __future__ import annotations

from hpcbench.benchmarks._collective_ops import COLLECTIVES
from hpcbench.models.costmodel import CannotFit, fit
from hpcbench.results.schema import STATUS_OK, STATUS_SKIPPED


def model_rows(rows: list[dict], collectives: list[str], project_world_sizes: list[int]):
    """One fit per collective of `collectives` (on its placement with the most measured sizes), then
    its projections to `project_world_sizes`."""
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["status"] == STATUS_OK:
            by_key.setdefault((r["collective"], r["placement"]), []).append(r)
    for name in collectives:
        candidates = [v for (c, _), v in by_key.items() if c == name]
        if not candidates:
            continue
        measured = max(candidates, key=len)
        coll = COLLECTIVES[name]
        n = measured[0]["world_size"]
        base = {"record": "alpha_beta_fit", "collective": name, "placement": measured[0]["placement"],
                "type": measured[0]["type"], "world_size": n, "backend": measured[0]["backend"]}
        try:
            model = fit(name, n, [r["size_bytes"] for r in measured], [r["time_us"] / 1e6 for r in measured],
                        coll.busbw_factor, coll.ring_steps)
        except CannotFit as exc:
            yield {**base, "status": STATUS_SKIPPED, "reason": f"no alpha-beta fit: {exc}"}
            continue
        yield {**base, "status": STATUS_OK, "alpha_us": model.alpha_s * 1e6,
               "bus_bandwidth_GBps": model.bus_bandwidth_Bps / 1e9, "fit_points": model.points,
               "max_rel_residual": model.max_rel_residual}
        for world in project_world_sizes:
            for r in measured:
                t = model.predict(world, r["size_bytes"], coll.busbw_factor, coll.ring_steps)
                algbw = r["size_bytes"] / t / 1e9 if t > 0 else None
                yield {**base, "record": "projection", "projected": True, "fitted_world_size": n,
                       "world_size": world, "size_bytes": r["size_bytes"], "status": STATUS_OK,
                       "time_us": t * 1e6, "algbw_GBps": algbw,
                       "busbw_GBps": algbw * coll.busbw_factor(world) if algbw else None}
