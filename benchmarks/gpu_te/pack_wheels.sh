#!/usr/bin/env bash
# Here (a machine with PyPI): fetch Transformer Engine for the offline GPU machine and cut the
# core wheel (~190 MB) into chunks that fit the device tool's 64 MiB-per-call working tree.
#   .te0/  the TE meta wheel, the torch-extension sdist, pydantic and friends, sha256 sums
#   .te1/ ... .te4/  one chunk each of transformer_engine_cu13-<v>.whl
# The GPU image has CUDA 13 (nvcc), PyTorch 2.11+cu130, cuDNN, ninja and pybind11; it has no
# network, so the extension is compiled there (benchmarks/gpu_te/build.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
V=${TE_VERSION:-2.12.0}
PY=${PYTHON:-.venv/bin/python}
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
rm -rf .te0 .te1 .te2 .te3 .te4 && mkdir -p .te0 /tmp/te_pack
for d in .te0 .te1 .te2 .te3 .te4; do grep -qx "/$d/" .git/info/exclude || echo "/$d/" >> .git/info/exclude; done
$PY -m pip download -q --no-deps "${PLAT[@]}" -d .te0 "transformer_engine==$V" \
  pydantic pydantic_core annotated_types typing_inspection typing_extensions nvdlfw_inspect
$PY -m pip download -q --no-deps -d .te0 "transformer_engine_torch==$V"
$PY -m pip download -q --no-deps "${PLAT[@]}" -d /tmp/te_pack "transformer_engine_cu13==$V"
WHL=$(ls /tmp/te_pack/transformer_engine_cu13-"$V"-*.whl)
basename "$WHL" > .te0/core_wheel_name
(cd /tmp/te_pack && sha256sum "$(basename "$WHL")") > .te0/core_wheel.sha256
rm -f /tmp/te_pack/part.*
split -b 48000000 -d -a 1 "$WHL" /tmp/te_pack/part.
i=1
for part in /tmp/te_pack/part.*; do mkdir -p ".te$i" && mv "$part" ".te$i/"; i=$((i + 1)); done
du -sh .te*
