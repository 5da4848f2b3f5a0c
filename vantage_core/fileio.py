"""Small file helpers shared by the core, studies and reports."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import VantageError


def atomic_write(path: str | Path, data: str | bytes, *, what: str = "file") -> None:
    """Write through a temporary sibling and rename it into place, so a crash or a full disk
    leaves the previous file as it was; failures are one-line `VantageError`s."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:  # disk full, quota, permissions
        tmp.unlink(missing_ok=True)
        raise VantageError(f"{path}: cannot write the {what} ({e.strerror or e})") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A private temporary sibling of `path` to build a file in (a SQLite database, a file a
    library writes itself); renamed into place when the block ends, removed when it fails.
    Concurrent builders of the same file never see each other's partial files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
