"""Performance target of the what-if family: a 1,000-configuration sweep of DeepSeek-V3-sized
layouts must finish in at most 2x the time the pipeline simulator alone needs for those schedules.

Both are measured in this process: (1) the simulator alone: `simulate(schedule, costs)` for each
configuration's (schedule, pp, microbatches), schedules built beforehand, costs fixed; (2) the
sweep: each configuration through the family's `run` (an in-process list of configurations, not
1,000 Hydra launches). Prints both times, the ratio and a verdict; exit status 1 if over.

    python scripts/whatif_target.py [--configs 1000]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from types import SimpleNamespace

import yaml

from hpcbench.benchmarks.whatif import FAMILY, Config, specs
from hpcbench.pipeline.schedules import build, requirement
from hpcbench.pipeline.simulator import Costs, simulate

LIMIT = 2.0


def configurations(n: int) -> list[Config]:
    """DeepSeek-V3 on 2,048 H800 with the layout and links varied: schedule, pp, micro-batch size,
    NVLink and network bandwidth, expert parallelism (only the runnable combinations, first n)."""
    base_par = yaml.safe_load((specs.spec_dir("parallel") / "deepseek_v3.yaml").read_text())
    base_cl = yaml.safe_load((specs.spec_dir("cluster") / "h800.yaml").read_text())
    out = []
    grid = itertools.product(("dualpipe", "1f1b", "zb1p", "dualpipev", "interleaved_1f1b"), (8, 16, 32), (1, 2),
                             (100, 160, 200, 300, 400, 500, 600, 900), (25, 50, 100, 200, 400), (64, 32))
    runnable: dict = {}
    for schedule, pp, mbs, nvlink, net, ep in grid:
        dp = 2048 // pp
        mb = 15360 // (dp * mbs)
        if (schedule, pp, mb) not in runnable:
            try:
                runnable[schedule, pp, mb] = requirement(schedule, pp, mb) is None and build(schedule, pp, mb) is not None
            except ValueError:  # torch's own conditions (interleaved: microbatches a multiple of its rounds)
                runnable[schedule, pp, mb] = False
        if not runnable[schedule, pp, mb]:
            continue
        out.append(Config(model="deepseek_v3", cluster={**base_cl, "nvlink_GBps": nvlink, "net_GBps": net},
                          parallel={**base_par, "pp": pp, "schedule": schedule, "micro_batch": mbs, "ep": ep},
                          costs_from=[], allow_other_device=False))
        if len(out) == n:
            break
    return out


def simulator_alone(cfgs: list[Config]) -> float:
    shapes = []
    for c in cfgs:
        p = c.parallel
        dp = 2048 // p["pp"]
        shapes.append((p["schedule"], p["pp"], 15360 // (dp * p["micro_batch"])))
    built = {s: build(*s) for s in set(shapes)}
    costs = Costs(F=1.0, B=2.0, W=0.8, FB=2.4)
    t0 = time.perf_counter()
    for s in shapes:
        simulate(built[s], costs)
    return time.perf_counter() - t0


def sweep(cfgs: list[Config]) -> tuple[float, int]:
    ctx = SimpleNamespace(set_total=lambda n: None, device=SimpleNamespace(fallback=False))
    ok = 0
    t0 = time.perf_counter()
    for c in cfgs:
        for row in FAMILY.run(c, ctx):
            ok += row["status"] == "ok"
    return time.perf_counter() - t0, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=1000)
    args = parser.parse_args(argv)
    cfgs = configurations(args.configs)
    build("1f1b", 2, 4)  # torch's schedules imported before either clock starts
    alone = simulator_alone(cfgs)
    took, ok = sweep(cfgs)
    ratio = took / alone
    print(f"{len(cfgs)} configurations ({ok} predicted): simulator alone {alone:.2f} s, what-if sweep {took:.2f} s, "
          f"ratio {ratio:.2f} (target <= {LIMIT:g}): {'PASS' if ratio <= LIMIT else 'FAIL'}")
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
