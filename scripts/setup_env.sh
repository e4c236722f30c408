#!/usr/bin/env bash
# Create a virtual environment and install megatron_optiml with one of its two supported stacks.
# Idempotent. Usage: scripts/setup_env.sh [py311|py312]   (default py311)
#
#   py311 -> .venv     Python 3.11 + torch 2.13.0 (the CPU build on local disk) + megatron-core
#                      0.16.1: laptops, CPU machines, the CPU demo.
#   py312 -> .venv312  Python 3.12 + torch 2.13.0 from the registry (a CUDA build, ~1.4 GB, which
#                      also runs on CPU) + megatron-core 0.19.x: what GPU clusters run.
#
# setup.py picks megatron-core by Python version; torch is installed first and pinned so pip never
# pulls another multi-GB build.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:-py311}
case "$stack" in
  py311) PY=${PYTHON:-python3.11}; VENV=.venv; LINE=0.16 ;;
  py312) PY=${PYTHON:-python3.12}; VENV=.venv312; LINE=0.19 ;;
  *) echo "setup_env.sh: unknown stack '$stack' (py311 or py312)" >&2; exit 2 ;;
esac
# An interpreter that runs (a pyenv shim for a version that is not active exists but fails).
find_python() {
  local want=$1 c
  for c in "$PY" "$HOME"/.pyenv/versions/"$want".*/bin/python"$want" \
           /usr/local/bin/python"$want" /usr/bin/python"$want"; do
    if "$c" -c 'import sys' >/dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}
want=${PY#python}
PY=$(find_python "$want") || {
  if [ "$stack" = py311 ] && python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    PY=python3
  else
    echo "setup_env.sh: no working python$want (needed for the $stack stack)" >&2; exit 3
  fi
}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp=$VENV/.optiml-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  quiet() { grep -v "^WARNING: Location" || true; }
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
  "$VENV/bin/python" -m pip install -q "torch==2.13.0" 2>&1 | quiet
  "$VENV/bin/python" -m pip install -q -e ".[dev]" 2>&1 | quiet
  "$VENV/bin/python" - "$LINE" <<'PY'
import sys
import megatron.core
import torch

line = sys.argv[1]
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert megatron.core.__version__.startswith(line + "."), (megatron.core.__version__, line)
PY
  touch "$stamp"
fi
