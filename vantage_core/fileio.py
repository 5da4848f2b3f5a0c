"""Small file helpers shared by the core, studies and reports."""

from __future__ import annotations

from pathlib import Path

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
