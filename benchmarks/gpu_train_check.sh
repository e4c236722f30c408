#!/usr/bin/env bash
# On a lent GPU machine: the trainer end to end on CUDA (BF16, NCCL, 1 GPU): data_prep on the
# bundled sample, train opt-debug, crash after step 15 (megatron_optiml.testing.crashing_train:
# an on_step_end callback exits with 17), resume from the step-10 checkpoint, finish; then
# export to HF. Prints the two loss curves over the overlap.
# --no-install: the packages are already in /tmp/site; TRAIN_OVERRIDES: extra key=value
# overrides (e.g. "trainer.precision=fp8 model.transformer_impl=transformer_engine").
set -uo pipefail
if [ "${1:-}" != --no-install ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore OMP_NUM_THREADS=4
python3 -m data_prep --config examples/data_prep/bench_config.yaml --out /tmp/bench --no-progress > /tmp/prep.log 2>&1 || { tail -20 /tmp/prep.log; exit 1; }
args=(--config examples/recipes/opt_debug_cpu.yaml model.data.blend_path=/tmp/bench/blend.json
  exp_manager.explicit_log_dir=/tmp/run trainer.devices=1 trainer.accelerator=gpu
  trainer.precision=bf16 trainer.max_steps=30 trainer.val_check_interval=10
  exp_manager.checkpoint_callback_params.every_n_train_steps=10 ${TRAIN_OVERRIDES:-})
python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m megatron_optiml.testing.crashing_train --crash-after-step 15 "${args[@]}" > /tmp/run1.log 2>&1
echo "first run exit: $? (17 = simulated crash)"
python3 -c "import json; c = json.load(open('/tmp/run/config.json')); print('precision', c['trainer']['precision'], 'transformer_impl', c['model']['transformer_impl'])"; grep -iE "Error" /tmp/run1.log | head -3; cp /tmp/run/metrics.jsonl /tmp/metrics_run1.jsonl
python3 -m torch.distributed.run --standalone --nproc_per_node 1 train.py "${args[@]}" > /tmp/run2.log 2>&1
echo "resumed run exit: $?"; grep -iE "error|Traceback" /tmp/run2.log | head -5
python3 - <<'PY'
import json
a = [json.loads(l) for l in open("/tmp/metrics_run1.jsonl")]
b = [json.loads(l) for l in open("/tmp/run/metrics.jsonl")][len(a):]
la = {r["step"]: r["loss"] for r in a if "loss" in r}
lb = {r["step"]: r["loss"] for r in b if "loss" in r}
print("overlap steps", sorted(set(la) & set(lb)))
for s in sorted(set(la) & set(lb)):
    print(s, la[s], lb[s], lb[s] - la[s])
print("val", [r for r in a + b if "validation" in r][-1])
print("last", max(lb), lb[max(lb)], "tokens/s", [r.get("tokens_per_s") for r in b if "loss" in r][-1])
PY
python3 -m checkpoints_conversion megatron-to-hf /tmp/run/checkpoints /tmp/hf > /tmp/export.log 2>&1 && echo "export ok" && ls /tmp/hf
[ -d /tmp/hf ] && python3 -c "
import torch; from transformers import OPTForCausalLM
m = OPTForCausalLM.from_pretrained('/tmp/hf').cuda(); print('HF load ok', sum(p.numel() for p in m.parameters()))"
