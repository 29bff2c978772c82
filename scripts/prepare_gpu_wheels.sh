#!/usr/bin/env bash
# Wheels a bare GPU image lacks (Hydra and what it needs), for CPython 3.12 on x86-64 Linux, into a
# folder that scripts/gpu_acceptance.py --wheels installs from with no package index.
#   bash scripts/prepare_gpu_wheels.sh [.whl]
set -euo pipefail
dest=${1:-.whl}
mkdir -p "$dest"
py=${PYTHON:-python3}
# pure-Python wheels: any platform will do, but ask for the target's so pip checks Requires-Python
$py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$dest" "hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 pins) is published as a source archive only: build it
$py -m pip wheel -q --no-deps -w "$dest" "antlr4-python3-runtime==4.9.3"
ls -1 "$dest"
