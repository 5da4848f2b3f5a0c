"""Spider layout loader: train_spider.json, train_others.json, dev.json, tables.json,
database/<db>/<db>.sqlite. The synthetic generator writes the same layout."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .example import Example
from .schema import Schema, load_spider_tables

log = logging.getLogger(__name__)

TRAIN_FILES = ("train_spider.json", "train_others.json", "train.json")


@dataclass
class DatasetSplits:
    """Examples by split plus every schema they reference."""
    name: str
    root: Path
    train: list[Example] = field(default_factory=list)
    dev: list[Example] = field(default_factory=list)
    schemas: dict[str, Schema] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)

    def db_path(self, db_id: str) -> Path | None:
        p = self.root / "database" / db_id / f"{db_id}.sqlite"
        return p if p.is_file() else None


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: corrupt JSON ({e})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of examples")
    return data


def load_spider(root: str | Path, *, source: str = "spider") -> DatasetSplits:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    tables = root / "tables.json"
    if not tables.is_file():
        raise DataError(f"{root}: no tables.json (expected the Spider layout: "
                        "train_spider.json, dev.json, tables.json, database/)")
    out = DatasetSplits(source, root, schemas=load_spider_tables(tables))
    files = [f for f in TRAIN_FILES if (root / f).is_file()]
    if "train_spider.json" in files and "train.json" in files:
        files.remove("train.json")
    if not files and not (root / "dev.json").is_file():
        raise DataError(f"{root}: no train_spider.json/train.json or dev.json")
    for fname, split in [(f, "train") for f in files] + [("dev.json", "dev")]:
        path = root / fname
        if not path.is_file():
            continue
        for i, ex in enumerate(_read_json_list(path)):
            where = f"{path}#{i}"
            if not isinstance(ex, dict) or not all(k in ex for k in ("question", "query", "db_id")):
                out.skipped.append((where, "missing question/query/db_id"))
                continue
            if ex["db_id"] not in out.schemas:
                out.skipped.append((where, f"unknown db_id {ex['db_id']!r}"))
                continue
            dbp = out.db_path(ex["db_id"])
            rec = Example(
                id=f"{source}/{Path(fname).stem}/{i}", source=source, db_id=ex["db_id"],
                question=" ".join(str(ex["question"]).split()), query=str(ex["query"]).strip(),
                split=split, evidence=str(ex.get("evidence", "") or ""),
                db_path=str(dbp) if dbp else None,
            )
            (out.train if split == "train" else out.dev).append(rec)
    if out.skipped:
        log.warning("%s: skipped %d examples (first: %s: %s)", root, len(out.skipped), *out.skipped[0])
    return out
