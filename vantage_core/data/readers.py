"""Tolerant readers shared by the dataset loaders: corrupt input is skipped and recorded as
``(where, reason)`` (where = ``file#index``), never raised.

- `read_json_records`: a JSON list; a truncated file keeps the complete records before the
  cut and records the rest as one problem.
- `read_jsonl_records`: one JSON object per line; bad lines are recorded and skipped.
- `load_spider_like`: Spider / BIRD style example files + a tables.json-style schema file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .example import Example
from .schema import Schema
from .spider import DatasetSplits

Problem = tuple[str, str]


@dataclass
class LayoutSplits(DatasetSplits):
    """DatasetSplits whose database files are looked up in a table (BIRD, WikiSQL, Gretel)."""
    db_paths: dict[str, Path] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def db_path(self, db_id: str) -> Path | None:
        p = self.db_paths.get(db_id)
        return p if p is not None and Path(p).is_file() else None


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


def load_schema_file(path: Path, splits: DatasetSplits) -> None:
    """Add every schema of a tables.json-style file; bad entries are recorded."""
    entries, problems = read_json_records(path)
    splits.skipped.extend(problems)
    for i, e in enumerate(entries):
        try:
            s = Schema.from_spider_entry(e)
        except (KeyError, IndexError, TypeError) as err:
            splits.skipped.append((f"{path}#{i}", f"malformed schema ({err!r})"))
            continue
        splits.schemas.setdefault(s.db_id, s)


def load_spider_like(splits: DatasetSplits, files: list[tuple[Path, str]], *, sql_field: str,
                     source: str, db_path: Callable[[str], Path | None],
                     extra_fields: tuple[str, ...] = ()) -> None:
    """Append the examples of `files` ((path, split) pairs) to `splits`.

    Each record needs ``question``, `sql_field` and ``db_id``; a db_id without a schema (not in
    the tables file and no database file) is a missing database and is skipped.
    """
    for path, split in files:
        recs, problems = read_json_records(path)
        splits.skipped.extend(problems)
        stem = Path(path).stem
        for i, ex in enumerate(recs):
            where = f"{path}#{i}"
            if not isinstance(ex, dict):
                splits.skipped.append((where, "not a JSON object"))
                continue
            missing = [k for k in ("question", sql_field, "db_id") if k not in ex]
            if missing:
                splits.skipped.append((where, f"missing field {', '.join(missing)}"))
                continue
            db = str(ex["db_id"])
            dbp = db_path(db)
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


def load_spider_tolerant(root: Path, *, source: str = "spider") -> LayoutSplits:
    """The Spider layout (train_spider.json, train_others.json | train.json, dev.json,
    tables.json, database/<db>/<db>.sqlite), with every corrupt input skipped and recorded."""
    root = Path(root)
    out = LayoutSplits(source, root)
    load_schema_file(root / "tables.json", out)

    def dbp(db: str) -> Path | None:
        p = root / "database" / db / f"{db}.sqlite"
        return p if p.is_file() else None

    for d in (root / "database").glob("*/*.sqlite") if (root / "database").is_dir() else []:
        out.db_paths[d.parent.name] = d
    names = [f for f in ("train_spider.json", "train_others.json", "train.json") if (root / f).is_file()]
    if "train_spider.json" in names and "train.json" in names:
        names.remove("train.json")
    files = [(root / f, "train") for f in names]
    if (root / "dev.json").is_file():
        files.append((root / "dev.json", "dev"))
    load_spider_like(out, files, sql_field="query", source=source, db_path=dbp)
    return out
