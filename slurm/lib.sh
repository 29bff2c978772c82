# Job-side setup shared by the templates: site settings, modules, the virtual environment.
# Sourced from a template running under SLURM; HPCBENCH_REPO is exported by slurm/submit (a job
# submitted with plain sbatch from the repository falls back to the submit directory).
set -euo pipefail
export HPCBENCH_REPO=${HPCBENCH_REPO:-$SLURM_SUBMIT_DIR}
# shellcheck source=slurm/site.env
source "$HPCBENCH_REPO/slurm/site.env"

# A template submitted with plain sbatch is checked here, at job start; slurm/submit checks the
# same variables before anything is queued.
require() {
    local name
    for name in "$@"; do
        if [[ -z ${!name:-} ]]; then
            echo "hpcbench: error: $name is not set (see the header of the template)" >&2
            exit 2
        fi
    done
}

if [[ -n $HPCBENCH_MODULES ]]; then
    # shellcheck disable=SC2086 # a list of module names
    module load $HPCBENCH_MODULES
fi
if [[ -f $HPCBENCH_VENV/bin/activate ]]; then
    # shellcheck source=/dev/null
    source "$HPCBENCH_VENV/bin/activate"
fi
mkdir -p "$HPCBENCH_RESULTS"

# ranks per node: one per GPU, or TASKS_PER_NODE CPU ranks where GPUS_PER_NODE=0
ranks_per_node() {
    if [[ ${GPUS_PER_NODE:-0} -gt 0 ]]; then echo "$GPUS_PER_NODE"; else echo "${TASKS_PER_NODE:-1}"; fi
}

# overrides as words; quotes group one with spaces ('gemm.custom=[[48, 40, 160]]')
mapfile -t HPCBENCH_ARGS < <(printf '%s' "${HPCBENCH_OVERRIDES:-}" | tr -d '\r' | xargs -r printf '%s\n')
