import os
import sys
import tempfile
from pathlib import Path

import pytest

# Before any test module imports mlx (pytest imports them all at collection): MLX binds its
# BLAS when first loaded, and the system OpenBLAS is ~30x the bundled reference BLAS.
from vantage_core.blas import load_openblas

load_openblas()

ROOT = Path(__file__).resolve().parents[1]
SPIDER = ROOT.parent / "shared" / "data" / "spider"

# One cache (synthetic data, tokenizers, schema DBs) per test session, never the user's.
os.environ.setdefault("VANTAGE_CACHE", tempfile.mkdtemp(prefix="vantage-test-cache-"))


def tiny_overrides(**sections):
    """The fast-test config: 2 layers, 4 experts, hidden 64 (tiny_model.yaml) + changes."""
    return {k: v for k, v in sections.items()}


@pytest.fixture
def spider_path():
    if not (SPIDER / "tables.json").is_file():
        pytest.skip("../shared/data/spider not available")
    return SPIDER


def run_cli_subprocess(args, cwd, env=None, timeout=600):
    import subprocess
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)
