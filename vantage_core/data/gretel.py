"""Gretel synthetic text-to-SQL loader (``gretelai/synthetic_text_to_sql``).

Records: ``id, domain, domain_description, sql_complexity, sql_complexity_description,
sql_task_type, sql_task_type_description, sql_prompt, sql_context, sql, sql_explanation``.
Accepted files in the folder: ``*.jsonl`` / ``*.json`` (what `vantage-data download` writes)
or the hub's ``*.parquet``; a file name containing ``test`` is the dev split.

Every record carries its own database as CREATE/INSERT statements (``sql_context``): they are
run in an in-memory SQLite database, the schema is read from it and the gold SQL must run
there, otherwise the record is skipped with the reason. The context is kept in
``extra["sql_context"]``; `materialize_db` writes it to a SQLite file when one is needed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..fileio import atomic_path, atomic_write
from .example import Example
from .readers import DatasetSplits, find_layout, read_json_records, read_jsonl_records, record_problem
from .schema import Schema

FIELDS = ("id", "domain", "sql_complexity", "sql_task_type", "sql_prompt", "sql_context", "sql")
EXTRA = ("domain", "domain_description", "sql_complexity", "sql_task_type", "sql_context", "sql_explanation")


def build_context(context: str) -> sqlite3.Connection:
    """An in-memory database with the record's CREATE/INSERT statements applied."""
    con = sqlite3.connect(":memory:")
    con.executescript(context)
    return con


def check_record(rec: dict, db_id: str) -> tuple[Schema | None, str | None]:
    """(schema, None) when the context builds and the gold runs on it, else (None, reason)."""
    try:
        con = build_context(str(rec["sql_context"]))
    except (sqlite3.Error, ValueError) as e:
        return None, f"sql_context does not run in SQLite ({' '.join(str(e).split())[:80]})"
    try:
        schema = Schema.from_connection(con, db_id)
        if not schema.tables:
            return None, "sql_context creates no table"
        try:
            cur = con.execute(str(rec["sql"]))
            cur.fetchmany(1000)
        except (sqlite3.Error, ValueError) as e:  # ProgrammingError: several statements
            return None, f"sql does not run on its context ({' '.join(str(e).split())[:80]})"
        return schema, None
    finally:
        con.close()


def materialize_db(example: Example, out_dir: str | Path) -> Path:
    """Write the example's context database to ``out_dir/<db_id>.sqlite`` (atomically)."""
    out = Path(out_dir) / f"{example.db_id}.sqlite"
    if out.is_file():
        return out
    with atomic_path(out) as tmp:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(example.extra["sql_context"])
            con.commit()
        finally:
            con.close()
    return out


def _iter_file(path: Path, skipped: list) -> Iterator[tuple[int, Any]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # only for the hub's parquet files
            table = pq.read_table(path)
        except Exception as e:  # ArrowInvalid on a damaged file, ImportError
            skipped.append((str(path), f"unreadable parquet ({e.__class__.__name__})"))
            return
        yield from enumerate(table.to_pylist())
    elif path.suffix == ".jsonl":
        for i, rec, prob in read_jsonl_records(path):
            if prob:
                skipped.append(prob)
            else:
                yield i, rec
    else:
        recs, probs = read_json_records(path)
        skipped.extend(probs)
        yield from enumerate(recs)


def gretel_files(root: Path) -> list[Path]:
    root = Path(root)
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in (".jsonl", ".json", ".parquet")
             and not p.name.startswith(".") and p.name not in ("dataset_info.json", "summary.json")]
    return files


def load_gretel(root: str | Path, *, source: str = "gretel", limit: int | None = None) -> DatasetSplits:
    root, files = find_layout(root, "Gretel", gretel_files, "no *.jsonl, *.json or *.parquet files (expected "
                              "gretelai/synthetic_text_to_sql records)")
    out = DatasetSplits(source, root)
    n = 0
    for path in files:
        split = "dev" if "test" in path.name.lower() else "train"
        for i, rec in _iter_file(path, out.skipped):
            where = f"{path}#{i}"
            if why := record_problem(rec, ("sql_prompt", "sql_context", "sql")):
                out.skipped.append((where, why))
                continue
            rid = str(rec.get("id", f"{path.stem}-{i}"))
            db_id = "gretel_" + "".join(c if c.isalnum() else "_" for c in rid)
            if db_id in out.schemas:
                db_id = f"{db_id}_{path.stem}_{i}"
            schema, reason = check_record(rec, db_id)
            if schema is None:
                out.skipped.append((where, reason or "unusable record"))
                continue
            out.schemas[db_id] = schema
            ex = Example(id=f"{source}/{rid}", source=source, db_id=db_id,
                         question=" ".join(str(rec["sql_prompt"]).split()), query=str(rec["sql"]).strip(),
                         split=split, extra={k: rec[k] for k in EXTRA if k in rec})
            (out.train if split == "train" else out.dev).append(ex)
            n += 1
            if limit is not None and n >= limit:
                return out
    return out


def write_jsonl(records: Iterable[dict], path: Path) -> int:
    """Write records atomically as JSON lines; returns the count."""
    lines = [json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(lines), what="records")
    return len(lines)
