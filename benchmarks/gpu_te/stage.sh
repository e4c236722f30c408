#!/usr/bin/env bash
# On the GPU machine, call k = 1..4 (device tool, carry .te0 and .tek): park chunk k in
# /tmp/te_chunks; call 1 also starts the torch-extension build in the background (it needs
# only torch, CUDA headers and TE's headers, not the core library), so it compiles while the
# remaining chunks arrive.
set -uo pipefail
k=$1
mkdir -p /tmp/te_chunks && cp ".te$k"/part.* /tmp/te_chunks/ && ls -la /tmp/te_chunks
if [ "$k" = 1 ]; then
  rm -rf /tmp/te_src && mkdir -p /tmp/te_src && cp .te0/* benchmarks/gpu_te/build.sh /tmp/te_src/
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  which nvcc g++ ninja; python3 -c "import torch, sys; print(sys.version, torch.__version__, torch.version.cuda)"
  setsid nohup bash /tmp/te_src/build.sh > /tmp/te_build.log 2>&1 < /dev/null &
  sleep 20
fi
echo "--- build log (tail)"; tail -n 15 /tmp/te_build.log
