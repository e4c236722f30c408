#!/usr/bin/env bash
# Run on a lent GPU machine (device tool) from the repo root, with the megatron-core wheel
# carried in .whl/ (pure Python). Prints JSON lines and writes $OUT/gpu_check.json.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 benchmarks/gpu_check.py 2>&1 | grep -v "UserWarning\|warnings.warn" | tee "${OUT:-/tmp}/gpu_check.log"
