"""On Linux CPU, route MLX's sgemm to the system OpenBLAS (about 30x the bundled reference
BLAS; see docs/performance.md). Must run before `mlx.core` is first imported."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
)
_active: str | None = None


def load_openblas() -> str:
    """Load OpenBLAS into the global symbol scope if present; return which BLAS is active."""
    global _active
    if _active is not None:
        return _active
    if platform.system() != "Linux" or os.environ.get("VANTAGE_NO_OPENBLAS"):
        _active = "platform default"
        return _active
    if "mlx.core" in sys.modules:
        # Too late to interpose symbols; whatever MLX bound to stays.
        _active = "bundled (mlx imported before vantage)"
        return _active
    for path in CANDIDATES:
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=os.RTLD_GLOBAL | os.RTLD_NOW)
                _active = f"openblas ({path})"
                return _active
            except OSError:
                continue
    _active = "bundled reference BLAS (install libopenblas0-pthread for ~3x faster CPU steps)"
    return _active


def active_blas() -> str:
    return _active or load_openblas()
