#!/usr/bin/env bash
# Submit a recipe to Slurm with the allocation its layout needs:
#
#   examples/slurm/submit.sh examples/recipes/optiml_30b_h100_bf16.yaml [key=value ...]
#
# reads trainer.num_nodes / trainer.devices / name from the recipe (after the overrides) and
# runs `sbatch --nodes=N --ntasks-per-node=D --gpus-per-node=D --job-name=NAME optiml.sbatch
# RECIPE [overrides]`, so the allocation and the recipe cannot disagree. The job name names the
# run folder: submitting again under the same name resumes that run.
#
#   SBATCH_ARGS="--partition=gpu --account=proj --time=48:00:00"   extra sbatch options
#   JOB_NAME=my_run                                                 instead of the recipe's name
#   OPTIML_PYTHON, OPTIML_RUNS_ROOT, OPTIML_GPU                     passed on to optiml.sbatch
#
# -e: stop at the first failure; -u: unset variables are errors; pipefail: no hidden failures.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 RECIPE.yaml [key=value ...]" >&2
    exit 2
fi
recipe=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${OPTIML_PYTHON:-python3}

# The typed loader, so overrides such as trainer.num_nodes=16 count too.
read -r nodes devices name < <(
    "$python" -c '
import sys
from megatron_optiml.config import load_run_config
c = load_run_config(sys.argv[1], sys.argv[2:], validate=False)
print(c.trainer.num_nodes, c.trainer.devices, c.name)
' "$recipe" "$@"
)
read -r -a extra <<<"${SBATCH_ARGS:-}"

# Slurm writes the job log to logs/%x_%j.out but does not create the folder.
mkdir -p logs
exec sbatch --nodes="$nodes" --ntasks-per-node="$devices" --gpus-per-node="$devices" \
    --job-name="${JOB_NAME:-$name}" "${extra[@]}" "$here/optiml.sbatch" "$recipe" "$@"
