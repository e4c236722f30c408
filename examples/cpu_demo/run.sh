#!/usr/bin/env bash
# The CPU demo, end to end on the bundled OPT-IML Bench sample (2 cores, a few minutes):
#   data_prep -> base model (HF) -> HF->Megatron -> train opt-debug on 2 gloo ranks (DP=2,
#   distributed optimizer) -> Megatron->HF export -> evaluation of base vs tuned (table + plot).
# Environment knobs: OUT (default outputs/demo), STEPS (training steps), EVAL_LIMIT (instances
# per task), SHOTS, SPLITS (evaluation splits), MAX_NEW_TOKENS (generation length); any extra
# args are trainer overrides (key=value).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup_env.sh
PY=.venv/bin/python
OUT=${OUT:-outputs/demo}
STEPS=${STEPS:-200}
SHOTS=${SHOTS:-0 5}
EVAL_LIMIT=${EVAL_LIMIT:-20}
SPLITS=${SPLITS:-heldout_category heldout_task heldout_instance}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-32}
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false
rm -rf "$OUT"
mkdir -p "$OUT"
t0=$(date +%s)

stamp() { echo "   ($(( $(date +%s) - t0 )) s)"; }

echo "== 1/6 data_prep: bundled NI + PromptSource + BIG-bench -> OPT-IML Bench splits, indexed datasets, blend"
$PY -m data_prep --config examples/data_prep/bench_config.yaml --out "$OUT/bench" --no-progress

stamp
echo "== 2/6 base model (random HF OPT, opt-debug shape) and HF -> Megatron conversion"
$PY examples/cpu_demo/make_base_model.py "$OUT/base_hf"
$PY -m checkpoints_conversion hf-to-megatron "$OUT/base_hf" "$OUT/base_megatron"

stamp
echo "== 3/6 train: torchrun, 2 gloo ranks (DP=2, distributed optimizer), label-only loss on packed sequences"
$PY -m torch.distributed.run --standalone --nproc_per_node 2 train.py \
  --config examples/recipes/opt_debug_cpu.yaml \
  model.data.blend_path="$OUT/bench/blend.json" \
  model.restore_from_path="$OUT/base_megatron" \
  exp_manager.explicit_log_dir="$OUT/run" \
  trainer.max_steps="$STEPS" "$@"

stamp
echo "== 4/6 export the trained checkpoint to Hugging Face format"
$PY -m checkpoints_conversion megatron-to-hf "$OUT/run/checkpoints" "$OUT/tuned_hf"

stamp
echo "== 5/6 evaluate base vs tuned on the held-out splits (rank classification + generation)"
$PY -m megatron_optiml.cli.evaluate \
  --model "$OUT/base_hf" --name base --model "$OUT/tuned_hf" --name tuned \
  --bench "$OUT/bench" --out "$OUT/eval" --limit "$EVAL_LIMIT" --max-new-tokens "$MAX_NEW_TOKENS" \
  --shots $SHOTS --splits $SPLITS --no-progress

echo "== 6/6 done in $(( $(date +%s) - t0 )) s"
echo "   metrics:     $OUT/run/metrics.jsonl (TensorBoard: $OUT/run/tensorboard)"
echo "   checkpoint:  $OUT/run/checkpoints   HF export: $OUT/tuned_hf"
echo "   evaluation:  $OUT/eval/report.md    plot: $OUT/eval/categories.png"
