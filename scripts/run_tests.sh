#!/usr/bin/env bash
# The project's test command (README.md): install, lint, then the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
exec .venv/bin/python -m pytest -q --timeout=300 "$@"
