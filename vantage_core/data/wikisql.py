"""WikiSQL loader (the official release layout: ``data/{train,dev,test}.jsonl`` and
``data/{train,dev,test}.tables.jsonl``).

Question lines: ``{"phase", "table_id", "question", "sql": {"sel", "agg", "conds": [[col, op, val]]}}``.
Table lines: ``{"id", "header", "types", "rows", ...}``.

Each WikiSQL table becomes one database (db_id = table id) with one SQLite table
``table_<id>`` built from its rows (one SQLite file per split holds them all), so the gold is
executable. The structured ``sql`` is rendered as SQL text with quoted column names; text
columns are declared ``COLLATE NOCASE`` because WikiSQL's condition values are not always in
the cells' letter case (the official engine lower-cases both sides).
The ``test`` split is not loaded (train -> train, dev -> dev).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..fileio import atomic_path
from .cache import cache_root
from .example import Example
from .readers import DatasetSplits, find_layout, read_jsonl_records, record_problem
from .schema import Column, Schema, Table

AGG_OPS = ["", "MAX", "MIN", "COUNT", "SUM", "AVG"]
COND_OPS = ["=", ">", "<", "OP"]
SPLITS = {"train": "train", "dev": "dev"}


def table_name(table_id: str) -> str:
    return "table_" + re.sub(r"\W", "_", str(table_id))


def column_names(header: list[Any]) -> list[str]:
    """Header cells as unique, non-empty column names."""
    out: list[str] = []
    seen: set[str] = set()
    for i, h in enumerate(header):
        name = " ".join(str(h).split()) or f"col{i}"
        base, k = name, 2
        while name.lower() in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name.lower())
        out.append(name)
    return out


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _number(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    s = str(v).strip().replace(",", "")
    try:
        f = float(s)
    except ValueError:
        return None
    return int(f) if f.is_integer() and "." not in s and "e" not in s.lower() else f


def _literal(v: Any, real: bool) -> str:
    if real:
        n = _number(v)
        if n is not None:
            return repr(n)
    return "'" + str(v).replace("'", "''") + "'"


def wikisql_to_sql(sql: dict, table: dict) -> str:
    """Render WikiSQL's structured query as SQL text; ValueError when it is malformed."""
    cols = column_names(table["header"])
    types = table.get("types") or ["text"] * len(cols)
    sel, agg = int(sql["sel"]), int(sql["agg"])
    if not 0 <= sel < len(cols):
        raise ValueError(f"sel column {sel} out of range")
    if not 0 <= agg < len(AGG_OPS):
        raise ValueError(f"agg {agg} out of range")
    target = _qi(cols[sel])
    if AGG_OPS[agg]:
        target = f"{AGG_OPS[agg]}({target})"
    text = f"SELECT {target} FROM {table_name(table['id'])}"
    conds = []
    for cond in sql.get("conds") or []:
        col, op, val = cond
        col, op = int(col), int(op)
        if not 0 <= col < len(cols):
            raise ValueError(f"condition column {col} out of range")
        if not 0 <= op < len(COND_OPS) or COND_OPS[op] == "OP":
            raise ValueError(f"unsupported condition operator {op}")
        real = col < len(types) and str(types[col]).lower() == "real"
        conds.append(f"{_qi(cols[col])} {COND_OPS[op]} {_literal(val, real)}")
    if conds:
        text += " WHERE " + " AND ".join(conds)
    return text


def table_schema(table: dict) -> Schema:
    cols = column_names(table["header"])
    types = table.get("types") or ["text"] * len(cols)
    return Schema(str(table["id"]), [Table(table_name(table["id"]), [
        Column(c, "number" if i < len(types) and str(types[i]).lower() == "real" else "text")
        for i, c in enumerate(cols)])])


def build_sqlite(tables: list[dict], path: Path) -> Path:
    """One SQLite file with a table per WikiSQL table (written atomically)."""
    with atomic_path(path) as tmp:
        con = sqlite3.connect(tmp)
        try:
            for t in tables:
                cols = column_names(t["header"])
                types = t.get("types") or ["text"] * len(cols)
                real = [i < len(types) and str(types[i]).lower() == "real" for i in range(len(cols))]
                decl = ", ".join(f"{_qi(c)} {'REAL' if r else 'TEXT COLLATE NOCASE'}" for c, r in zip(cols, real))
                con.execute(f"CREATE TABLE {table_name(t['id'])} ({decl})")
                rows = []
                for row in t.get("rows") or []:
                    row = list(row)[: len(cols)] + [None] * max(0, len(cols) - len(row))
                    rows.append([(_number(v) if r and _number(v) is not None else v) for v, r in zip(row, real)])
                if rows:
                    con.executemany(f"INSERT INTO {table_name(t['id'])} VALUES ({', '.join('?' * len(cols))})", rows)
            con.commit()
        finally:
            con.close()
    return path


def find_wikisql_files(root: Path) -> dict[str, tuple[Path, Path]]:
    root = Path(root)
    out = {}
    for base in (root, root / "data"):
        for name in SPLITS:
            q, t = base / f"{name}.jsonl", base / f"{name}.tables.jsonl"
            if q.is_file() and t.is_file() and name not in out:
                out[name] = (q, t)
    return out


def _default_db_dir(tables_files: list[Path]) -> Path:
    h = hashlib.sha256()
    for f in tables_files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return cache_root() / "wikisql" / h.hexdigest()[:16]


def load_wikisql(root: str | Path, *, source: str = "wikisql", db_dir: str | Path | None = None) -> DatasetSplits:
    root, files = find_layout(root, "WikiSQL", find_wikisql_files, "no train.jsonl + train.tables.jsonl (expected "
                              "the WikiSQL layout: data/{train,dev,test}.jsonl and .tables.jsonl)")
    out = DatasetSplits(source, root)
    ddir = Path(db_dir) if db_dir else _default_db_dir([t for _, t in files.values()])
    for name, (qfile, tfile) in files.items():
        split = SPLITS[name]
        tables: dict[str, dict] = {}
        for i, rec, prob in read_jsonl_records(tfile):
            if prob:
                out.skipped.append(prob)
                continue
            if not isinstance(rec, dict) or not all(k in rec for k in ("id", "header", "rows")):
                out.skipped.append((f"{tfile}#{i}", "table lacks id/header/rows"))
                continue
            try:
                out.schemas[str(rec["id"])] = table_schema(rec)
            except (TypeError, ValueError) as e:
                out.skipped.append((f"{tfile}#{i}", f"malformed table ({e})"))
                continue
            tables[str(rec["id"])] = rec
        dbfile = ddir / f"{name}.sqlite"
        if not dbfile.is_file():
            try:
                build_sqlite(list(tables.values()), dbfile)
            except sqlite3.Error as e:
                raise DataError(f"{tfile}: cannot build the SQLite tables ({e})") from None
        for tid in tables:
            out.db_paths[tid] = dbfile
        for i, rec, prob in read_jsonl_records(qfile):
            if prob:
                out.skipped.append(prob)
                continue
            where = f"{qfile}#{i}"
            if why := record_problem(rec, ("table_id", "question", "sql")):
                out.skipped.append((where, why))
                continue
            tid = str(rec["table_id"])
            if tid not in tables:
                out.skipped.append((where, f"missing database (table {tid!r})"))
                continue
            try:
                sql = wikisql_to_sql(rec["sql"], tables[tid])
            except (KeyError, TypeError, ValueError) as e:
                out.skipped.append((where, f"malformed sql ({e!s})"))
                continue
            q = " ".join(str(rec["question"]).split())
            if not q:
                out.skipped.append((where, "empty question"))
                continue
            ex = Example(id=f"{source}/{name}/{i}", source=source, db_id=tid, question=q, query=sql,
                         split=split, db_path=str(dbfile), extra={"phase": rec.get("phase")})
            (out.train if split == "train" else out.dev).append(ex)
    return out
