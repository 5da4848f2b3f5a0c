"""The data cache: its folder (`cache_root`, ``$VANTAGE_CACHE``: generated synthetic data, trained
tokenizers, WikiSQL databases) and the keys of preprocessed data, a digest of the input files
and of every setting that changes the output, so an unchanged re-run is a no-op and any change
rebuilds.

Small files (JSON, JSONL, SQL text) are hashed by content; large ones (SQLite databases,
parquet) by path, size and modification time, which is enough to notice a replaced file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

CONTENT_HASH_LIMIT = 32 * 1024 * 1024  # bytes; larger files are keyed by size + mtime


def cache_root() -> Path:
    return Path(os.environ.get("VANTAGE_CACHE", Path.home() / ".cache" / "vantage"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_fingerprint(path: Path, root: Path | None = None) -> str:
    st = path.stat()
    rel = str(path.relative_to(root)) if root is not None else str(path)
    if st.st_size <= CONTENT_HASH_LIMIT and path.suffix.lower() not in (".sqlite", ".db", ".parquet"):
        return f"{rel}:{sha256_file(path)}"
    return f"{rel}:{st.st_size}:{st.st_mtime_ns}"


def iter_input_files(root: Path, *, skip_dirs: Iterable[str] = ()) -> list[Path]:
    skip = set(skip_dirs)
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith(".") or f.endswith((".part", ".tmp")):
                continue
            out.append(Path(dirpath) / f)
    return out


def cache_key(inputs: Iterable[Path], params: dict[str, Any], *, root: Path | None = None,
              version: str = "1") -> str:
    """sha256 over the input files' fingerprints, `params` (JSON, sorted keys) and `version`."""
    h = hashlib.sha256()
    h.update(f"v{version}\0".encode())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    for p in sorted(Path(x) for x in inputs):
        h.update(b"\0")
        h.update(file_fingerprint(p, root).encode())
    return h.hexdigest()[:24]


def read_stamp(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("cache_key")
    except (OSError, ValueError, AttributeError):
        return None
