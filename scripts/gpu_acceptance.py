#!/usr/bin/env python3
"""hpcbench's GPU acceptance call, on a bare GPU image: install the wheel folder, then run the call.

    bash scripts/prepare_gpu_wheels.sh .whl                  # here, with a package index
    python3 scripts/gpu_acceptance.py --wheels .whl --out OUT [--stage default|proof|fingerprint]
    python3 scripts/gpu_acceptance.py --wheels .whl --out OUT --dry-run   # the same logic on a CPU

The wheel folder holds hpcbench itself and what a bare image lacks (Hydra, OmegaConf, antlr); they
are installed with no index into --site and imported from there, as the GPU host will. The
checkout this script sits in is never on the import path: a call that works here works there.
Without --wheels, hpcbench is imported from the environment (an installed wheel or a venv).
The call itself is `hpcbench.acceptance.main` (its steps, slots and targets are documented there).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _own_path_removed() -> None:
    """Python puts this script's folder first on sys.path; drop it and the checkout above it."""
    checkout = HERE.parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (HERE, checkout, checkout / "src")]


def _install(wheels: Path, site: Path) -> tuple[float, str]:
    found = sorted(wheels.glob("*.whl"))
    if not any(w.name.startswith("hpcbench_ml-") for w in found):
        raise SystemExit(f"gpu_acceptance: {wheels} holds no hpcbench wheel (hpcbench_ml-*.whl): "
                         "make the folder with scripts/prepare_gpu_wheels.sh")
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, found)], check=True)
    return time.monotonic() - t0, f"{len(found)} wheels from {wheels}: {', '.join(w.name.split('-')[0] for w in found)}"


def main() -> int:
    argv = sys.argv[1:]
    wheels = site = None
    if "--wheels" in argv:
        i = argv.index("--wheels")
        wheels = Path(argv[i + 1])
        del argv[i:i + 2]
    if "--site" in argv:
        i = argv.index("--site")
        site = Path(argv[i + 1])
        del argv[i:i + 2]
    _own_path_removed()
    install_s, detail = None, "hpcbench from this environment (no --wheels)"
    if wheels is not None:
        if not wheels.is_dir():
            print(f"gpu_acceptance: --wheels {wheels}: no such folder", file=sys.stderr)
            return 2
        site = (site or Path("/tmp/hpcbench-site")).resolve()
        install_s, detail = _install(wheels, site)
        sys.path.insert(0, str(site))
        # every step is a fresh Python: it finds the installed wheels the same way
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    try:
        from hpcbench.acceptance.main import main as call
    except ImportError as exc:
        print(f"gpu_acceptance: cannot import hpcbench ({exc}): give --wheels DIR "
              "(scripts/prepare_gpu_wheels.sh) or install hpcbench", file=sys.stderr)
        return 2
    return call(argv, install_s=install_s, install_detail=detail)


if __name__ == "__main__":
    sys.exit(main())
