"""The Spider layout loader and the readers every dataset loader shares.

- `DatasetSplits`: examples by split, their schemas and database files, and what was skipped
  as ``(where, reason)`` (where = ``file#index``);
- `read_json_records`: a JSON list; a truncated file keeps the complete records before the
  cut and records the rest as one problem. `read_jsonl_records`: one JSON object per line;
- `load_spider_like`: Spider / BIRD style example files + a tables.json-style schema file;
- `load_spider`: the Spider layout (``train_spider.json``, ``train_others.json`` | ``train.json``,
  ``dev.json``, ``tables.json``, ``database/<db>/<db>.sqlite``), which the synthetic generator
  writes too. ``strict`` (the trainer's sources): a missing layout or a corrupt file is a
  `DataError`; otherwise (``vantage-data preprocess``) every corrupt input is skipped and recorded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import DataError
from .example import Example
from .schema import Schema

log = logging.getLogger(__name__)

Problem = tuple[str, str]
TRAIN_FILES = ("train_spider.json", "train_others.json", "train.json")


@dataclass
class DatasetSplits:
    """Examples by split plus every schema they reference. Database files are looked up in
    `db_paths` (BIRD, WikiSQL, Gretel, processed folders), else at ``database/<db>/<db>.sqlite``."""
    name: str
    root: Path
    train: list[Example] = field(default_factory=list)
    dev: list[Example] = field(default_factory=list)
    schemas: dict[str, Schema] = field(default_factory=dict)
    skipped: list[Problem] = field(default_factory=list)
    db_paths: dict[str, Path] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def db_path(self, db_id: str) -> Path | None:
        p = self.db_paths.get(db_id) or self.root / "database" / db_id / f"{db_id}.sqlite"
        return p if Path(p).is_file() else None


def find_layout(root: str | Path, what: str, find: Callable[[Path], Any], expected: str) -> tuple[Path, Any]:
    """`root` and what `find` finds there (a loader's files); a `DataError` naming the dataset
    when the folder is missing, or `expected` when `find` finds nothing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {what} folder not found")
    found = find(root)
    if not found:
        raise DataError(f"{root}: {expected}")
    return root, found


def read_json_records(path: Path) -> tuple[list[Any], list[Problem]]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return [], [(str(path), "file not found")]
    except (OSError, UnicodeDecodeError) as e:
        return [], [(str(path), f"unreadable ({e.__class__.__name__})")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        recs = _salvage_list(text)
        return recs, [(f"{path}#{len(recs)}", f"corrupt JSON after {len(recs)} records "
                       f"(line {e.lineno}: {e.msg})")]
    if not isinstance(data, list):
        return [], [(str(path), f"expected a JSON list, got {type(data).__name__}")]
    return data, []


def _salvage_list(text: str) -> list[Any]:
    """The complete elements of a JSON list that was cut short."""
    dec = json.JSONDecoder()
    i = text.find("[")
    if i < 0:
        return []
    i += 1
    out = []
    n = len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            break
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            break
        out.append(obj)
    return out


def read_jsonl_records(path: Path) -> Iterable[tuple[int, Any | None, Problem | None]]:
    """Yield (line_index, record, None) or (line_index, None, problem)."""
    path = Path(path)
    try:
        f = path.open(encoding="utf-8-sig")
    except OSError as e:
        yield 0, None, (str(path), f"unreadable ({e.__class__.__name__})")
        return
    with f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line), None
            except json.JSONDecodeError as e:
                yield i, None, (f"{path}#{i}", f"corrupt JSON line ({e.msg})")


def record_problem(rec: Any, fields: Iterable[str]) -> str | None:
    """Why a record cannot be read as an example (not an object, missing fields), or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    missing = [k for k in fields if k not in rec]
    return f"missing field {', '.join(missing)}" if missing else None


def load_schema_file(path: Path, splits: DatasetSplits, *, strict: bool = False) -> None:
    """Add every schema of a tables.json-style file (the first of a repeated db_id wins); bad
    input is recorded, or with `strict` raised as a `DataError`."""
    entries, problems = read_json_records(path)
    if strict and problems:
        raise DataError("{}: {}".format(*problems[0]))
    splits.skipped.extend(problems)
    for i, e in enumerate(entries):
        try:
            s = Schema.from_spider_entry(e)
        except (KeyError, IndexError, TypeError) as err:
            if strict:
                raise DataError(f"{path}: entry {i}: malformed schema ({err!r})") from None
            splits.skipped.append((f"{path}#{i}", f"malformed schema ({err!r})"))
            continue
        splits.schemas.setdefault(s.db_id, s)


def load_spider_tables(path: str | Path) -> dict[str, Schema]:
    """The schemas of a tables.json-style file by db_id; any problem is a `DataError`."""
    splits = DatasetSplits("tables", Path(path).parent)
    load_schema_file(Path(path), splits, strict=True)
    return splits.schemas


def load_spider_like(splits: DatasetSplits, files: list[tuple[Path, str]], *, sql_field: str,
                     source: str, db_path: Callable[[str], Path | None],
                     extra_fields: tuple[str, ...] = (), strict: bool = False) -> None:
    """Append the examples of `files` ((path, split) pairs) to `splits`.

    Each record needs ``question``, `sql_field` and ``db_id``; a db_id without a schema (not in
    the tables file and no database file) is a missing database and is skipped. `strict`: a
    file that is not a readable JSON list is a `DataError`.
    """
    db_paths: dict[str, Path | None] = {}
    for path, split in files:
        recs, problems = read_json_records(path)
        if strict and problems:
            raise DataError(f"{path}: corrupt JSON ({problems[0][1]})")
        splits.skipped.extend(problems)
        stem = Path(path).stem
        for i, ex in enumerate(recs):
            where = f"{path}#{i}"
            if why := record_problem(ex, ("question", sql_field, "db_id")):
                splits.skipped.append((where, why))
                continue
            db = str(ex["db_id"])
            dbp = db_paths[db] if db in db_paths else db_paths.setdefault(db, db_path(db))
            if db not in splits.schemas:
                if dbp is None:
                    splits.skipped.append((where, f"missing database {db!r}"))
                    continue
                try:
                    splits.schemas[db] = Schema.from_sqlite(dbp, db)
                except Exception as err:  # DataError on a corrupt file
                    splits.skipped.append((where, f"unreadable database {db!r} ({err})"))
                    continue
            q = " ".join(str(ex["question"] or "").split())
            sql = str(ex[sql_field] or "").strip()
            if not q or not sql:
                splits.skipped.append((where, "empty question or SQL"))
                continue
            rec = Example(
                id=f"{source}/{stem}/{i}", source=source, db_id=db, question=q, query=sql,
                split=split, evidence=" ".join(str(ex.get("evidence", "") or "").split()),
                db_path=str(dbp) if dbp else None,
                extra={k: ex[k] for k in extra_fields if k in ex},
            )
            (splits.train if split == "train" else splits.dev).append(rec)


def load_spider(root: str | Path, *, source: str = "spider", strict: bool = True) -> DatasetSplits:
    """The Spider layout; see the module docstring for `strict`."""
    root = Path(root)
    out = DatasetSplits(source, root)
    if strict:
        if not root.is_dir():
            raise DataError(f"{root}: data folder not found")
        if not (root / "tables.json").is_file():
            raise DataError(f"{root}: no tables.json (expected the Spider layout: "
                            "train_spider.json, dev.json, tables.json, database/)")
    load_schema_file(root / "tables.json", out, strict=strict)
    names = [f for f in TRAIN_FILES if (root / f).is_file()]
    if "train_spider.json" in names and "train.json" in names:
        names.remove("train.json")
    files = [(root / f, "train") for f in names] + [(root / "dev.json", "dev")] * (root / "dev.json").is_file()
    if strict and not files:
        raise DataError(f"{root}: no train_spider.json/train.json or dev.json")
    load_spider_like(out, files, sql_field="query", source=source, db_path=out.db_path, strict=strict)
    if strict and out.skipped:
        log.warning("%s: skipped %d examples (first: %s: %s)", root, len(out.skipped), *out.skipped[0])
    return out


def parse_source(source: str) -> tuple[str, Path | None]:
    """What a data source string (``data.source``, ``--data``, ``--data_dir``) names, the one
    place it is read: ("synthetic", None), ("spider", PATH) for ``spider:PATH``, ("processed",
    PATH) for a `vantage-data preprocess` folder, ("folder", PATH) for a Spider-layout folder,
    else ("unknown", PATH)."""
    if source == "synthetic":
        return "synthetic", None
    if source.startswith("spider:"):
        return "spider", Path(source.split(":", 1)[1]).expanduser()
    p = Path(source).expanduser()
    if (p / "summary.json").is_file() and (p / "train.jsonl").is_file():
        return "processed", p
    return ("folder" if p.is_dir() and (p / "tables.json").is_file() else "unknown"), p
