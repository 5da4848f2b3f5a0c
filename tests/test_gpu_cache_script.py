"""bench/gpu_cache.sh: the kernel cache saved at the end of one call is what the next call
restores, under a key naming the MLX version and the GPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sh(script: str, env: dict) -> str:
    out = subprocess.run(["bash", "-c", f"source bench/gpu_cache.sh; {script}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_save_then_restore_round_trips_the_kernels(tmp_path):
    import os
    env = dict(os.environ, KCACHE_ROOT=str(tmp_path / "call1"), KCACHE_DIR=str(tmp_path / "carried"),
               OUT=str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    kernels = tmp_path / "call1" / "mlx" / "0.32.4" / "ptx"
    kernels.mkdir(parents=True)
    (kernels / "kernel_a.ptx").write_text("ptx a")
    key = _sh("kcache_key", env).strip()
    assert key.startswith("mlx") and "-" in key
    assert "saved" in _sh("kcache_save", env)
    saved = tmp_path / "out" / f"ptxcache-{key}.tgz"
    assert saved.is_file()
    # the next call: a fresh machine (empty root) with the saved file carried in KCACHE_DIR
    (tmp_path / "carried").mkdir()
    saved.rename(tmp_path / "carried" / saved.name)
    env2 = dict(env, KCACHE_ROOT=str(tmp_path / "call2"))
    assert "restored" in _sh("kcache_restore", env2)
    assert (tmp_path / "call2" / "mlx" / "0.32.4" / "ptx" / "kernel_a.ptx").read_text() == "ptx a"


def test_restore_without_a_carried_cache_says_so(tmp_path):
    import os
    env = dict(os.environ, KCACHE_ROOT=str(tmp_path / "r"), KCACHE_DIR=str(tmp_path / "none"))
    assert "none carried" in _sh("kcache_restore", env)
    assert not (tmp_path / "r" / "mlx").exists()
