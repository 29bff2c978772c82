"""The what-if model against published training steps: prints (anchor, published, predicted, error).

    python scripts/whatif_validate.py              # the validation table
    python scripts/whatif_validate.py --calibrate  # each cluster's efficiency fitted on its one anchor

Inputs are the published hardware figures and layouts only (conf/whatif/); no GPU is used. One
efficiency per cluster is calibrated (on the anchor marked "calibration") and held fixed for the
others. Exit status 1 when an anchor is outside its tolerance (DeepSeek 15 %, MEG21 15 %, NeMo 20 %);
DeepSeek's phases are reported beside the predictions, not gated.
"""

from __future__ import annotations

import argparse
import sys

from hpcbench.benchmarks.whatif import specs
from hpcbench.benchmarks.whatif.anchors import CALIBRATION, TOLERANCE, anchors, calibrate, validation_table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibrate", action="store_true", help="fit each cluster's efficiency on its anchor")
    args = parser.parse_args(argv)
    if args.calibrate:
        by_name = {a.name: a for a in anchors()}
        for cluster, name in CALIBRATION.items():
            current = specs.load("cluster", cluster).compute_efficiency
            print(f"{cluster}: compute_efficiency {calibrate(by_name[name]):.4f} (now {current:.4f}) fitted on {name}")
        return 0
    rows = validation_table()
    width = max(len(r["anchor"]) for r in rows)
    print(f"| {'anchor':<{width}} | published | predicted |   error | within |")
    print(f"|{'-' * (width + 2)}|----------:|----------:|--------:|:------:|")
    bad = 0
    for r in rows:
        tol = TOLERANCE.get(r["group"])
        ok = "" if tol is None else ("yes" if abs(r["error"]) <= tol else "NO")
        bad += ok == "NO"
        mark = " (calibration)" if r["calibration"] else ""
        print(f"| {r['anchor'] + mark:<{width}} | {r['published']:9.2f} | {r['predicted']:9.2f} | "
              f"{r['error']:+7.1%} | {ok:^6} |")
    for cluster, name in CALIBRATION.items():
        c = specs.load("cluster", cluster)
        print(f"{cluster}: compute_efficiency {c.compute_efficiency:g}, calibrated on {name}")
    print("all anchors within tolerance" if not bad else f"{bad} anchor(s) outside tolerance")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
