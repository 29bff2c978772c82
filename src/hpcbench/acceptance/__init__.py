"""The GPU acceptance call: every GPU path of hpcbench proven once, then its performance targets.

A GPU host may be lent for minutes only, so the call must work the first time on a bare image
(torch, Triton and the scientific stack, no Hydra, no package index) and fit a few minutes:

    python3 scripts/gpu_acceptance.py --wheels .whl --out OUT            # proof + targets, <= 300 s
    python3 scripts/gpu_acceptance.py --wheels .whl --out OUT --stage fingerprint
    python3 scripts/gpu_acceptance.py --wheels .whl --out OUT --dry-run  # the same logic on the CPU

The script installs the wheel folder (`scripts/prepare_gpu_wheels.sh`: hpcbench itself, Hydra,
OmegaConf, antlr) with no index, then runs `hpcbench.acceptance.main` from the installed wheel;
the checkout is never on the import path.

Modules: `plan` (the steps, their slots and how each was derived), `process` (a step in its
own process group within its time limit), `steps` (what each step runs), `probes` (the GPU
paths no family covers: timing, NCCL, NVML, FP8 accumulation; run as `python -m`), `targets`
(judged on the runs' rows against `conf/anchors.yaml` for the detected device), `verdicts`
(kernel paths, P2P, the call's own verdict), `summary` (files written after every step),
`paths_table` (README's "What has run on a GPU" table from a committed output).
"""
