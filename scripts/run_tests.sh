#!/usr/bin/env bash
# The project's test command (README.md): install both stacks, lint, then pytest on each.
#
#   Python 3.11 + megatron-core 0.16.1 (.venv):    the whole suite (or the pytest args given);
#   Python 3.12 + megatron-core 0.19.x (.venv312): the Megatron-facing tests ($MCORE_TESTS below;
#                                                  pytest options given apply to them; test
#                                                  paths given replace them).
# Each run gets the other environment as OPTIML_PEER_PYTHON, so tests/compat saves a checkpoint
# under one Megatron-Core line and loads it under the other, in both directions.
# OPTIML_STACKS="py311" (or "py312") runs one stack only, e.g. for a quick local run.
set -euo pipefail
cd "$(dirname "$0")/.."
stacks=${OPTIML_STACKS:-"py311 py312"}
MCORE_TESTS=(tests/backend tests/compat tests/conversion tests/data tests/distributed tests/models
  tests/training tests/data_prep/test_pipeline.py tests/planning/test_planning_measured.py)

declare -A VENV=([py311]=.venv [py312]=.venv312)
for s in $stacks; do
  [[ -n ${VENV[$s]:-} ]] || { echo "run_tests.sh: unknown stack '$s'" >&2; exit 2; }
  bash scripts/setup_env.sh "$s"
done
first=${stacks%% *}
"${VENV[$first]}/bin/ruff" check .
"${VENV[$first]}/bin/ruff" format --check .

export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
status=0
for s in $stacks; do
  args=("$@")
  if [[ $s == py312 ]]; then
    # Options only (e.g. -m "not slow"): still just the Megatron-facing tests on this stack.
    paths=0
    for a in "$@"; do [[ $a == tests* ]] && paths=1; done
    [[ $paths == 0 ]] && args+=("${MCORE_TESTS[@]}")
  fi
  peer=""
  for o in $stacks; do [[ $o != "$s" ]] && peer=$PWD/${VENV[$o]}/bin/python; done
  echo "=== $s: $("${VENV[$s]}/bin/python" -c 'import sys, megatron.core as m; print("Python", sys.version.split()[0], "megatron-core", m.__version__)')"
  OPTIML_PEER_PYTHON=$peer "${VENV[$s]}/bin/python" -m pytest -q --timeout=300 --durations=30 "${args[@]}" || status=$?
done
exit $status
