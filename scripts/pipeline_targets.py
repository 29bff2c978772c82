"""The pipeline issue's two CPU performance targets, measured side by side with their verdicts.

  1. synthetic timed stages, 4 gloo ranks, 16 microbatches: measured bubble ratio within 3
     percentage points of the simulator's for 1F1B and DualPipeV;
  2. the simulator on a 64-rank x 1024-microbatch DualPipe schedule in <= 2 s on one core.

    .venv/bin/python scripts/pipeline_targets.py [--results-root results]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def synthetic_agreement(results_root: Path) -> bool:
    run_id = time.strftime("pipeline-targets-%Y%m%d-%H%M%S")
    cmd = [str(Path(sys.executable).with_name("hpcbench")), "benchmark=pipeline", "dist.nproc=4",
           "pipeline.schedules=[1f1b,dualpipev]", "pipeline.microbatches=16", "pipeline.synthetic.enabled=true",
           "pipeline.steps=7", "pipeline.warmup_steps=1", f"results_root={results_root}"]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "HPCBENCH_RUN_ID": run_id})
    from hpcbench.results import load_run

    df = load_run(results_root / run_id)
    ok = True
    for row in df.to_dict("records"):
        gap = (row["bubble_ratio"] - row["predicted_bubble_ratio"]) * 100
        passed = abs(gap) <= 3.0
        ok &= passed
        print(f"{row['schedule']:>10}: measured bubble {row['bubble_ratio']:.1%}, simulator {row['predicted_bubble_ratio']:.1%} "
              f"(residual {gap:+.2f} pp; configured-cost ideal {row['configured_bubble_ratio']:.1%}; "
              f"step {row['step_ms']:.1f} ms) -> {'PASS' if passed else 'FAIL'} (|residual| <= 3 pp)")
    return ok


def simulator_speed() -> bool:
    import torch

    torch.set_num_threads(1)
    from hpcbench.pipeline.schedules import build
    from hpcbench.pipeline.simulator import Costs, simulate

    t0 = time.perf_counter()
    schedule = build("dualpipe", 64, 1024)
    t1 = time.perf_counter()
    tl = simulate(schedule, Costs(F=1, B=2, W=1, FB=2.5))
    t2 = time.perf_counter()
    total = t2 - t0
    actions = sum(len(a) for a in schedule.actions.values())
    print(f"simulator: DualPipe 64 ranks x 1024 microbatches ({actions} actions): generate {t1 - t0:.2f} s + "
          f"simulate {t2 - t1:.2f} s = {total:.2f} s, bubble {tl.mean_bubble_ratio:.2%} -> "
          f"{'PASS' if total <= 2.0 else 'FAIL'} (<= 2 s)")
    return total <= 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-root", type=Path, default=Path("results"))
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the simulator target is for one core
    fast = simulator_speed()
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    agree = synthetic_agreement(args.results_root)
    return 0 if fast and agree else 1


if __name__ == "__main__":
    sys.exit(main())
