#!/usr/bin/env bash
# MLX's CUDA kernel cache carried between GPU calls (../shared/device/README.md).
#   source bench/gpu_cache.sh; kcache_restore; ...; kcache_save
# MLX writes every compiled kernel under /tmp/mlx/<mlx version>/ptx; a fresh machine has none
# and spends minutes compiling before the first step. The cache is keyed by MLX version and
# GPU (name + compute capability): kcache_restore unpacks .ptx/ptxcache-<key>.tgz (or, when no
# keyed file is there, the unkeyed .ptx/ptxcache.tgz) and kcache_save packs /tmp/mlx into
# $OUT/ptxcache-<key>.tgz; copy that into .ptx/ and name .ptx in the next call's carry.
KCACHE_ROOT=${KCACHE_ROOT:-/tmp}   # MLX writes its kernels under $KCACHE_ROOT/mlx
KCACHE_DIR=${KCACHE_DIR:-.ptx}    # the carried folder
kcache_key() {
  local v g
  v=$(python3 -c 'import mlx.core as mx; print(mx.__version__)' 2>/dev/null || echo unknown)
  g=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9.\n' '_' | tr -s '_')
  echo "mlx${v}-${g:-nogpu}"
}
kcache_restore() {
  local key f
  key=$(kcache_key)
  f=$KCACHE_DIR/ptxcache-$key.tgz
  [ -f "$f" ] || f=$KCACHE_DIR/ptxcache.tgz
  if [ -f "$f" ]; then
    mkdir -p "$KCACHE_ROOT" && tar -xzf "$f" -C "$KCACHE_ROOT" && echo "# kernel cache: restored $f ($(du -sh "$KCACHE_ROOT/mlx" 2>/dev/null | cut -f1))"
  else
    echo "# kernel cache: none carried for $key (first call compiles every kernel)"
  fi
}
kcache_save() {
  local key
  key=$(kcache_key)
  if [ -n "${OUT:-}" ] && [ -d "$KCACHE_ROOT/mlx" ]; then
    tar -czf "$OUT/ptxcache-$key.tgz" -C "$KCACHE_ROOT" mlx && echo "# kernel cache: saved \$OUT/ptxcache-$key.tgz ($(du -h "$OUT/ptxcache-$key.tgz" | cut -f1))"
  fi
}
