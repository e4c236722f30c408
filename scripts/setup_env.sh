#!/usr/bin/env bash
# Create .venv (Python 3.11) and install megatron_optiml with its pinned stack. Idempotent.
# torch is installed first and pinned to 2.13.0: on these CPU machines that version is a CPU
# build on local disk; any other version would download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.optiml-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, megatron.core; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  touch "$stamp"
fi
