#!/usr/bin/env bash
# The Spider quality run on the GPU machine (device tool), in two parts (docs/results.md).
#   part 1: bash bench/spider_gpu.sh sweep STEPS_PER_TRIAL TIMEOUT_S
#   part 2: bash bench/spider_gpu.sh promote NUM_TRAIN_STEPS BEAMS [DEV_EXAMPLES]   (BEAMS 0: skip vantage-eval)
#   recipes: bash bench/spider_gpu.sh recipes STEPS NAME... (data recipes below, equal steps, validation EM)
# Expects MLX's CUDA build installed under /tmp/site (../shared/device/README.md), the extra
# wheels in .whl/ and Spider copied to .spider/ (carried). The study travels in $OUT/spider.db.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VANTAGE_CACHE=/tmp/vcache
# MLX's CUDA kernel cache: restored from .ptx/ (carry it), saved to $OUT when the call ends.
source "$(dirname "$0")/gpu_cache.sh"
[ -d /tmp/mlx ] || kcache_restore
trap kcache_save EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
STORE="sqlite:///$OUT/spider.db"
STUDY=${STUDY:-spider-joint}   # RECIPE (below) picks the data recipe of a sweep
[ -f spider.db ] && cp spider.db "$OUT/spider.db"
recipe() {  # data recipe name -> --set overrides
  case "$1" in
    baseline) echo "" ;;   # configs/spider_gpu.yaml: synonym renaming of 30% of examples
    novel4) echo "--set data.schema_perturbation_prob=1.0 --set data.schema_perturbation_copies=4 --set data.schema_rename_style=novel --set data.schema_rename_table_fraction=1.0 --set data.schema_rename_column_fraction=1.0" ;;
    novel4half) echo "--set data.schema_perturbation_prob=1.0 --set data.schema_perturbation_copies=4 --set data.schema_rename_style=novel --set data.schema_rename_table_fraction=0.5 --set data.schema_rename_column_fraction=0.5" ;;
    novel8) echo "--set data.schema_perturbation_prob=1.0 --set data.schema_perturbation_copies=8 --set data.schema_rename_style=novel --set data.schema_rename_table_fraction=1.0 --set data.schema_rename_column_fraction=1.0" ;;
    *) echo "unknown recipe $1" >&2; exit 2 ;;
  esac
}
case "$1" in
  recipes)
    steps=$2; shift 2
    mkdir -p "$OUT/recipes"
    for name in "$@"; do
      over=$(recipe "$name") || exit 2   # $(...) alone would swallow recipe's exit
      # shellcheck disable=SC2046
      python3 -m vantage_core.cli.train --config configs/spider_gpu.yaml --data_dir spider:.spider \
        --output_dir "/tmp/recipes/$name" --num_train_steps "$steps" --no-progress --no-tensorboard \
        --set training.eval_steps=$((steps / 2)) --set training.warmup_steps=100 $over ${EXTRA:-} \
        2>&1 | tee "$OUT/recipes/$name.log"
      cp "/tmp/recipes/$name/metrics.jsonl" "$OUT/recipes/$name.metrics.jsonl" || true
    done ;;
  sweep)
    over=$(recipe "${RECIPE:-baseline}") || exit 2
    # shellcheck disable=SC2046
    python3 -m studies joint --model configs/spider_gpu.yaml --ranges configs/spider_ranges.yaml \
      --trials 12 --steps-per-trial "$2" --timeout "$3" --pruner median --storage "$STORE" \
      --study-name "$STUDY" --out /tmp/sweeps --set training.eval_steps=200 $over \
      2>&1 | tee "$OUT/sweep.log"
    cp -r "/tmp/sweeps/$STUDY/report" "$OUT/report" 2>/dev/null || true ;;
  promote)
    python3 -m studies promote "$STUDY" --storage "$STORE" --num_train_steps "$2" --dev-examples "${4:-1034}" \
      --out /tmp/promoted --write-config "$OUT/spider_best.yaml" 2>&1 | tee "$OUT/promote.log"
    [ "$3" = 0 ] && exit 0
    ckpt=$(ls -d /tmp/promoted/*/checkpoint-best | head -1)
    python3 -m vantage_core.cli.eval --checkpoint "$ckpt" --data_dir spider:.spider \
      --split dev --num_beams "$3" --output "$OUT/dev_preds.jsonl" 2>&1 | tee "$OUT/eval.log" ;;
esac
