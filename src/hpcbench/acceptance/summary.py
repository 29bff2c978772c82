"""The call's output, rewritten after every step so that a call stopped from outside still brings
back everything done so far: summary.json, summary.md, runs.parquet (every run's rows, a `run`
column telling them apart) and log.txt. Four files, none in sub-folders (the device tool brings
back at most 8)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hpcbench.acceptance.verdicts import call_passed

FILES = ("summary.json", "summary.md", "runs.parquet", "log.txt")
FINGERPRINT_KEEP = ("metric", "label", "value", "unit", "pct_peak", "anchor_value", "anchor_hardware", "pct_of_anchor",
                    "verdict", "status", "reason")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_runs(frames: dict, path: Path) -> int:
    """Every run's rows in one .parquet, with a `run` column (the step that made it) that is also
    part of every family's point identity, and every run's metadata under `runs`; rows written."""
    from hpcbench.results import columnar
    from hpcbench.results.schema import SCHEMA_VERSION

    rows, metadata = [], {}
    for name, df in frames.items():
        if df is None:
            continue
        metadata[name] = df.attrs.get("metadata", {})
        rows += [{"run": name, **r} for r in df.astype(object).where(df.notna(), None).to_dict("records")]
    if not rows:
        return 0
    params = {}
    for meta in metadata.values():
        for family, columns in (meta.get("params") or {}).items():
            params[family] = ["run", *[c for c in columns if c != "run"]]
    first = next(iter(metadata.values()))
    merged = {**first, "run_id": "gpu-acceptance", "schema_version": SCHEMA_VERSION, "params": params,
              "suite": sorted(params), "runs": metadata}
    columnar.write_table(columnar.rows_table(rows, metadata=merged), path)  # written aside, then renamed
    return len(rows)


def summary_dict(acc, targets: list[dict], extras: dict, gpu: bool, done: bool) -> dict:
    from hpcbench.acceptance import plan

    return {"gpu": gpu, "dry_run": acc.dry_run, "stage": acc.stage, "done": done,
            "passed": call_passed(acc.steps, targets, gpu) if done else None,
            "budget_s": plan.budget_s(acc.stage), "ceiling_s": acc.ceiling_s,
            "seconds": time.monotonic() - acc.started,
            "steps": [vars(s) for s in acc.steps], "targets": targets, **extras}


def write(acc, targets: list[dict], extras: dict, gpu: bool, done: bool) -> dict:
    summary = summary_dict(acc, targets, extras, gpu, done)
    _atomic_write(acc.out / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    _atomic_write(acc.out / "summary.md", markdown(summary))
    return summary


def markdown(summary: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    steps = Table(title=f"steps ({summary['stage']}; budget {summary['budget_s']:.0f} s, "
                        f"took {summary['seconds']:.0f} s)", title_justify="left")
    for col in ("step", "status", "s", "slot s", "limit s", "required", "detail"):
        steps.add_column(col)
    for s in summary["steps"]:
        steps.add_row(s["name"], s["status"], f"{s['seconds']:.0f}", f"{s['slot_s']:.0f}",
                      "" if s["limit_s"] is None else f"{s['limit_s']:.0f}", "yes" if s["required"] else "partial",
                      s["detail"])
    gpu = summary["gpu"]
    t = Table(title="targets" + ("" if gpu else " (dry run on the CPU: targets are n/a)"), title_justify="left")
    for col in ("target", "TFLOP/s", "ratio", "s", "wanted", "verdict"):
        t.add_column(col)
    for r in summary["targets"]:
        t.add_row(r["target"], "" if r["TFLOP/s"] is None else f"{r['TFLOP/s']:.0f}",
                  "" if r["ratio"] is None else f"{r['ratio']:.2f}",
                  "" if r["seconds"] is None else f"{r['seconds']:.0f}", r["wanted"], r["verdict"])
    console = Console(record=True, width=200)
    console.print(steps)
    if summary["targets"]:
        console.print(t)
    derivations = "\n".join(f"- {s['name']}: {s['derivation']}" for s in summary["steps"])
    picks = "".join(f"- {p['kernel']} {p['key']}: {p['config']} ({p['seconds']:.1f} s)\n"
                    for p in summary.get("autotune") or [])
    verdict = {None: "unfinished", True: "PASSED", False: "NOT PASSED"}[summary["passed"]]
    return (f"# hpcbench GPU acceptance: {verdict}\n\n```\n{console.export_text()}```\n\n"
            f"Slots (how each was derived):\n{derivations}\n"
            + (f"\nConfigs the autotuner picked:\n{picks}" if picks else ""))
