#!/usr/bin/env bash
# The wheel folder a bare GPU image needs for scripts/gpu_acceptance.py --wheels: hpcbench itself
# (built from this checkout) and what the image lacks (Hydra, OmegaConf, antlr), for CPython 3.12 on
# x86-64 Linux. The only step of the acceptance route that needs a package index.
#   bash scripts/prepare_gpu_wheels.sh [.whl]
set -euo pipefail
dest=$(realpath -m "${1:-.whl}")
cd "$(dirname "$0")/.."
mkdir -p "$dest"
rm -f "$dest"/hpcbench_ml-*.whl  # one hpcbench wheel: two stop the install
py=${PYTHON:-python3}
# pure-Python wheels: any platform will do, but ask for the target's so pip checks Requires-Python
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$dest" "hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) is published as a source archive only: build it
$py -m pip wheel -q --no-deps -w "$dest" "antlr4-python3-runtime==4.9.3"
# hpcbench from this checkout, conf/ and kernels/ inside it as hpcbench.conf and hpcbench.kernels
$py -m pip wheel -q --no-deps --no-build-isolation -w "$dest" . 2>/dev/null || $py -m pip wheel -q --no-deps -w "$dest" .
ls -1 "$dest"
