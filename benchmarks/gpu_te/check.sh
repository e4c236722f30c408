#!/usr/bin/env bash
# Final GPU call (carry .whl .te0 .te4 after stage.sh 1..3): wait for the extension build, put
# the core wheel together, install TE + megatron-core into /tmp/site, then run
#  1. benchmarks/gpu_check.py: TE spec vs local spec losses (opt-debug, HF-converted weights),
#     OPT-1.3B step throughput local BF16 / TE BF16 / TE FP8 (delayed, tensorwise);
#  2. the trainer end to end with precision=fp8 on the TE spec (opt-debug, kill after step 15,
#     resume from step 10: the two loss curves over the overlap).
set -uo pipefail
cp .te4/part.* /tmp/te_chunks/ 2>/dev/null
for i in $(seq 1 60); do grep -q BUILD_DONE /tmp/te_build.log && break; sleep 5; done
tail -n 4 /tmp/te_build.log
mkdir -p /tmp/te_core && cat /tmp/te_chunks/part.* > "/tmp/te_core/$(cat .te0/core_wheel_name)"
(cd /tmp/te_core && sha256sum -c /tmp/te_src/core_wheel.sha256) || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .te0/*.whl /tmp/te_core/*.whl /tmp/te_wheel/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python3 -c "import transformer_engine.pytorch as te, transformer_engine; print('TE', transformer_engine.__version__)" 2>&1 | tail -n 5
# ONLY="benchmarks/gpu_thd_check.py": run just that script once TE is installed.
if [ -n "${ONLY:-}" ]; then timeout 200 python3 $ONLY 2>&1 | grep -v "UserWarning\|warnings.warn"; exit; fi
GPU_CHECK_CONFIGS=${GPU_CHECK_CONFIGS:-local:bf16,transformer_engine:bf16,transformer_engine:fp8-delayed,transformer_engine:fp8-tensorwise} \
  timeout 270 python3 benchmarks/gpu_check.py 2>&1 | grep -v "UserWarning\|warnings.warn" | tee "${OUT:-/tmp}/gpu_te_check.log"
[ "${SKIP_TRAIN:-0}" = 1 ] && exit 0
TRAIN_OVERRIDES="trainer.precision=fp8 model.transformer_impl=transformer_engine" \
  timeout 150 bash benchmarks/gpu_train_check.sh --no-install 2>&1 | tee "${OUT:-/tmp}/gpu_te_train.log"
