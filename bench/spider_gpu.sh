#!/usr/bin/env bash
# The Spider quality run on the GPU machine (device tool), in two parts (docs/results.md).
#   part 1: bash bench/spider_gpu.sh sweep STEPS_PER_TRIAL TIMEOUT_S
#   part 2: bash bench/spider_gpu.sh promote NUM_TRAIN_STEPS BEAMS [DEV_EXAMPLES]   (BEAMS 0: skip vantage-eval)
# Expects MLX's CUDA build installed under /tmp/site (../shared/device/README.md), the extra
# wheels in .whl/ and Spider copied to .spider/ (carried). The study travels in $OUT/spider.db.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VANTAGE_CACHE=/tmp/vcache
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
STORE="sqlite:///$OUT/spider.db"
[ -f spider.db ] && cp spider.db "$OUT/spider.db"
case "$1" in
  sweep)
    python3 -m studies joint --model configs/spider_gpu.yaml --ranges configs/spider_ranges.yaml \
      --trials 12 --steps-per-trial "$2" --timeout "$3" --pruner median --storage "$STORE" \
      --study-name spider-joint --out /tmp/sweeps --set training.eval_steps=200 2>&1 | tee "$OUT/sweep.log"
    cp -r /tmp/sweeps/spider-joint/report "$OUT/report" 2>/dev/null || true ;;
  promote)
    python3 -m studies promote spider-joint --storage "$STORE" --num_train_steps "$2" --dev-examples "${4:-1034}" \
      --out /tmp/promoted 2>&1 | tee "$OUT/promote.log"
    [ "$3" = 0 ] && exit 0
    ckpt=$(ls -d /tmp/promoted/*/checkpoint-best | head -1)
    python3 -m vantage_core.cli.eval --checkpoint "$ckpt" --data_dir spider:.spider \
      --split dev --num_beams "$3" --output "$OUT/dev_preds.jsonl" 2>&1 | tee "$OUT/eval.log" ;;
esac
