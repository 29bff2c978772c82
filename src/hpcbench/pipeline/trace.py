"""Timelines out: a measured run as a Timeline, Chrome-trace/Perfetto JSON, and a PNG Gantt chart.

The trace has one process per rank with two tracks: compute (the actions) and communication (each
transfer on its sender's track, from the send to the moment the receiver had it); a flow arrow
joins each send to the action that consumed it. Times are real durations in microseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from hpcbench.pipeline.ir import Schedule, input_key, output_key
from hpcbench.pipeline.simulator import Span, Timeline, Transfer, peak_activations

COLORS = {"F": "#4C72B0", "B": "#55A868", "I": "#8FD19E", "W": "#DD8452", "FB": "#8172B3"}
_COMPUTE_TID, _COMM_TID = 0, 1


def measured_timeline(schedule: Schedule, records_by_rank: dict[int, list]) -> Timeline:
    """A Timeline from the executor's ActionRecords (seconds from each rank's step start; ranks
    line up at a barrier before the step, so the clocks are comparable to that precision).

    A transfer runs from the end of the action that produced it to the start of the action that
    consumed it: the time the data was in flight or waiting to be used."""
    by_label = {r: {str(a): a for a in schedule.actions[r]} for r in schedule.actions}
    spans = [Span(r, by_label[r][rec.label], rec.start, rec.end) for r, recs in records_by_rank.items()
             for rec in recs]
    produced, consumed = {}, {}
    for span in spans:
        for a in span.action.parts():
            out, inp = output_key(schedule, a), input_key(schedule, a)
            if out is not None:
                produced[out] = (span.rank, a, span.end)
            if inp is not None:
                consumed[inp] = (span.rank, span.start)
    transfers = []
    for key, (src, action, sent) in produced.items():
        dst, used = consumed.get(key, (None, None))
        if dst is not None and dst != src:
            transfers.append(Transfer(src, dst, action, sent, max(sent, used), key))
    makespan = max((s.end for s in spans), default=0.0)
    busy = {r: sum(s.end - s.start for s in spans if s.rank == r) for r in records_by_rank}
    return Timeline(schedule, spans, transfers, makespan, busy, peak_activations(spans))


def chrome_trace(timeline: Timeline, title: str, unit_s: float = 1.0) -> dict:
    """`unit_s`: seconds per time unit of the timeline (1 for measured ones, 1e-3 for costs in ms)."""
    us = 1e6 * unit_s
    events = []
    for rank in sorted(timeline.busy):
        events += [
            {"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": f"{title} rank {rank}"}},
            {"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0, "args": {"sort_index": rank}},
            {"ph": "M", "name": "thread_name", "pid": rank, "tid": _COMPUTE_TID, "args": {"name": "compute"}},
            {"ph": "M", "name": "thread_name", "pid": rank, "tid": _COMM_TID, "args": {"name": "communication"}},
        ]
    for span in timeline.spans:
        a = span.action
        events.append({"ph": "X", "name": str(a), "cat": a.kind, "pid": span.rank, "tid": _COMPUTE_TID,
                       "ts": span.start * us, "dur": (span.end - span.start) * us,
                       "args": {"kind": a.kind, "stage": a.stage, "microbatch": a.mb}})
    for i, t in enumerate(timeline.transfers):
        name = f"send {t.what} to rank {t.dst_rank}"
        events.append({"ph": "X", "name": name, "cat": "p2p", "pid": t.src_rank, "tid": _COMM_TID,
                       "ts": t.start * us, "dur": (t.end - t.start) * us})
        events.append({"ph": "s", "name": "p2p", "cat": "p2p", "id": i, "pid": t.src_rank, "tid": _COMM_TID,
                       "ts": t.start * us})
        events.append({"ph": "f", "bp": "e", "name": "p2p", "cat": "p2p", "id": i, "pid": t.dst_rank,
                       "tid": _COMPUTE_TID, "ts": t.end * us})
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"title": title}}


def write_trace(timeline: Timeline, title: str, path: Path, unit_s: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chrome_trace(timeline, title, unit_s)))
    return path


def write_gantt(timelines: dict[str, Timeline], path: Path, unit: str = "ms", scale: float = 1e3) -> Path:
    """One panel per schedule, ranks as rows, on a shared time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = len(timelines)
    ranks = max(len(t.busy) for t in timelines.values())
    fig, axes = plt.subplots(n, 1, figsize=(12, 0.9 + n * (0.45 * ranks + 0.8)), sharex=True, squeeze=False)
    for ax, (title, tl) in zip(axes[:, 0], timelines.items()):
        for span in tl.spans:
            ax.barh(span.rank, (span.end - span.start) * scale, left=span.start * scale, height=0.8,
                    color=COLORS[span.action.kind], edgecolor="white", linewidth=0.3)
        ax.set_yticks(range(len(tl.busy)), [f"rank {r}" for r in range(len(tl.busy))])
        ax.invert_yaxis()
        ax.set_title(f"{title}: step {tl.makespan * scale:.3g} {unit}, bubble {tl.mean_bubble_ratio:.1%}",
                     fontsize=9, loc="left")
    axes[-1, 0].set_xlabel(f"time ({unit})")
    fig.legend(handles=[Patch(color=c, label=k) for k, c in COLORS.items()], loc="upper right", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


