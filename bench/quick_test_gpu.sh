#!/usr/bin/env bash
# The guide's "Quick Test Run", as printed, on the GPU machine (device tool; docs/training.md).
# Expects MLX's CUDA build under /tmp/site (../shared/device/README.md), the extra wheels in
# .whl/ and ./processed_data (vantage-data import spider ... && vantage-data preprocess
# --config configs/small_model.yaml ...), all carried. Logs and metrics come back in $OUT.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 VANTAGE_CACHE=/tmp/vcache
# MLX's CUDA kernel cache: restored from .ptx/ (carry it), saved to $OUT when the call ends.
source "$(dirname "$0")/gpu_cache.sh"
[ -d /tmp/mlx ] || kcache_restore
trap kcache_save EXIT
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
python3 -c "import mlx.core as mx; print('device_info', mx.device_info())" | tee "$OUT/quick_test.log"
python3 -m vantage_core.cli.train --config configs/small_model.yaml --dry-run 2>&1 | tee -a "$OUT/quick_test.log"
timeout "${1:-560}" python3 scripts/train.py \
    --config configs/small_model.yaml \
    --data_dir ./processed_data \
    --output_dir /tmp/debug \
    --debug \
    --num_train_steps 1000 2>&1 | tee -a "$OUT/quick_test.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$OUT/quick_test.log"
cp /tmp/debug/metrics.jsonl /tmp/debug/config.yaml /tmp/debug/run_status.json "$OUT/" 2>/dev/null
ls -la /tmp/debug | tee -a "$OUT/quick_test.log"
