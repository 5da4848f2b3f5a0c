"""Sandboxed execution of generated SQL.

Every execution of model output goes through `run_sql`: the database is opened read-only
(``file:...?mode=ro`` plus ``PRAGMA query_only``), an authorizer allows only reading
(SELECT, reads, recursive CTEs and a list of harmless functions; no writes, DDL, ATTACH,
PRAGMA, transactions or ``load_extension``), ATTACH is also capped at 0 databases, strings
and blobs are capped in size, a progress handler stops queries past a time limit and rows
are fetched in batches up to `max_rows`. Failures are verdicts (`ExecResult.ok` False
with an `error`), never exceptions.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from sqlglot import exp

from ..fileio import atomic_path
from .parse import SQLParseError, parse_tree


class SchemaLike(Protocol):
    """What the sandbox needs of a schema (data.schema.Schema): its name and CREATE statements."""
    db_id: str

    def create_statements(self) -> list[str]: ...

_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    sqlite3.SQLITE_RECURSIVE}
# Functions that touch the file system, load code or change the connection.
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer",
                     "sqlite_offset", "zipfile", "fsdir", "lsdir", "sqlar_compress", "sqlar_uncompress"}
_MAX_VALUE_BYTES = 10_000_000  # SQLITE_LIMIT_LENGTH: no zeroblob(1e9) / printf bombs
_PROGRESS_EVERY = 2_000  # VM instructions between deadline checks


@dataclass
class ExecResult:
    ok: bool
    rows: list[tuple] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0
    truncated: bool = False  # stopped at max_rows (then ok is False)
    timed_out: bool = False


def _authorizer(action, arg1, arg2, dbname, source):
    if action in _ALLOWED_ACTIONS:
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _decode(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def _connect(db_path: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(db_path.resolve()))}?mode=ro"
    con = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    con.text_factory = _decode
    con.execute("PRAGMA query_only = ON")
    try:
        con.enable_load_extension(False)
    except AttributeError:  # Python built without extension support
        pass
    con.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    con.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _MAX_VALUE_BYTES)
    con.set_authorizer(_authorizer)
    return con


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {msg}"[:300]


def run_sql(db_path: str | Path, sql: str, *, timeout_s: float = 2.0, max_rows: int = 100_000,
            explain_only: bool = False) -> ExecResult:
    """Run one read-only statement in the sandbox; every failure is a verdict."""
    t0 = time.monotonic()
    db_path = Path(db_path)
    if not isinstance(sql, str) or not sql.strip():
        return ExecResult(False, error="empty query")
    if not db_path.is_file():
        return ExecResult(False, error=f"database not found: {db_path}")
    try:
        con = _connect(db_path)
    except (sqlite3.Error, OSError, ValueError) as e:
        return ExecResult(False, error=_one_line(e), elapsed_s=time.monotonic() - t0)
    deadline = t0 + timeout_s
    state = {"timed_out": False}

    def progress():
        if time.monotonic() > deadline:
            state["timed_out"] = True
            return 1
        return 0

    con.set_progress_handler(progress, _PROGRESS_EVERY)
    res = ExecResult(False)
    try:
        cur = con.cursor()
        cur.execute(("EXPLAIN " if explain_only else "") + sql)
        if cur.description is None:
            # Not a query (e.g. a REINDEX with nothing to do: no authorizer callback fires).
            res.error = "not a query (the statement returns no result columns)"
            res.elapsed_s = time.monotonic() - t0
            return res
        res.columns = [d[0] for d in (cur.description or [])]
        rows: list[tuple] = []
        while True:
            batch = cur.fetchmany(min(1000, max_rows + 1))
            if not batch:
                break
            rows.extend(batch)
            if len(rows) > max_rows:
                res.truncated = True
                res.error = f"row limit exceeded (more than {max_rows} rows)"
                rows = rows[:max_rows]
                break
        res.rows = rows
        res.ok = not res.truncated
    except Exception as e:  # sqlite3.Error, OverflowError, MemoryError, ValueError ('null character')...
        res.ok = False
        res.timed_out = state["timed_out"]
        res.error = (f"time limit exceeded ({timeout_s:g}s)" if state["timed_out"] else _one_line(e))
    finally:
        try:
            con.set_progress_handler(None, 0)
            con.close()
        except sqlite3.Error:
            pass
    res.elapsed_s = time.monotonic() - t0
    return res


# --------------------------------------------------------------------------------------------
# validity: parses with sqlglot and compiles (EXPLAIN) against the schema
# --------------------------------------------------------------------------------------------
def schema_db_dir() -> Path:
    d = os.environ.get("VANTAGE_SCHEMA_DB_DIR")
    if d:
        return Path(d)
    uid = os.getuid() if hasattr(os, "getuid") else "u"
    return Path(tempfile.gettempdir()) / f"vantage-schema-dbs-{uid}"


_SCHEMA_DBS: dict[int, tuple[SchemaLike, Path]] = {}


def write_schema_db(statements: list[str], path: str | Path) -> Path:
    """Write a schema-only (empty) SQLite database from CREATE statements (atomically)."""
    with atomic_path(path) as tmp:
        con = sqlite3.connect(tmp)
        try:
            for s in statements:
                try:
                    con.execute(s)
                except sqlite3.DatabaseError:
                    pass  # duplicate/odd names in some schemas: keep going with what we can build
            con.commit()
        finally:
            con.close()
    return Path(path)


def schema_db(schema: SchemaLike) -> Path:
    """Path of a schema-only SQLite database for `schema` (built once, cached on disk)."""
    hit = _SCHEMA_DBS.get(id(schema))
    if hit is not None and hit[0] is schema and hit[1].is_file():
        return hit[1]
    statements = schema.create_statements()
    digest = hashlib.sha1("\n".join(statements).encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in schema.db_id)
    path = schema_db_dir() / f"{safe}-{digest}.sqlite"
    if not path.is_file():  # concurrent builders never see a partial file
        write_schema_db(statements, path)
    _SCHEMA_DBS[id(schema)] = (schema, path)
    return path


def _syntax_check(sql: str) -> str | None:
    try:
        tree = parse_tree(sql)
    except SQLParseError as e:
        return str(e)
    if not isinstance(tree, exp.Query):
        return f"not a query ({tree.key.upper()})"
    return None


@functools.lru_cache(maxsize=65536)
def _valid_cached(sql: str, db_file: str) -> tuple[bool, str]:
    err = _syntax_check(sql)
    if err:
        return False, err
    r = run_sql(db_file, sql, explain_only=True, timeout_s=2.0, max_rows=10**9)
    if not r.ok:
        return False, r.error or "does not compile"
    return True, "ok"


def valid_sql(sql: str, db: str | Path | SchemaLike | None, schema: SchemaLike | None = None) -> tuple[bool, str]:
    """(valid, reason): parses with sqlglot and compiles (SQLite EXPLAIN) against the schema.

    `db` is a SQLite file or a Schema; when the file is absent the schema-only database
    of `schema` (or of `db` when it is a Schema) is used instead.
    """
    if not isinstance(sql, str) or not sql.strip():
        return False, "empty query"
    if hasattr(db, "create_statements"):  # a Schema
        schema, db = db, None
    path = Path(db) if db else None
    if path is None or not path.is_file():
        if schema is None:
            return False, f"database not found: {path}"
        try:
            path = schema_db(schema)
        except (OSError, sqlite3.Error) as e:
            return False, f"cannot build schema database: {_one_line(e)}"
    return _valid_cached(sql.strip(), str(path))


# --------------------------------------------------------------------------------------------
# execution match
# --------------------------------------------------------------------------------------------
def has_order_by(sql: str) -> bool:
    """Whether the outermost query is ordered (then results are compared as lists)."""
    try:
        tree = parse_tree(sql)
    except SQLParseError:
        return " order by " in " ".join(sql.lower().split())
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    return tree is not None and tree.args.get("order") is not None


def _norm(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def results_match(gold_rows: list[tuple], pred_rows: list[tuple], ordered: bool) -> bool:
    """Rows equal as multisets (as lists when `ordered`), allowing a permutation of columns."""
    g = [tuple(_norm(v) for v in r) for r in gold_rows]
    p = [tuple(_norm(v) for v in r) for r in pred_rows]
    if len(g) != len(p):
        return False

    def same(a, b):
        return a == b if ordered else Counter(a) == Counter(b)

    if same(g, p):
        return True
    if not g:
        return True
    ncols = len(g[0])
    if ncols != len(p[0]) or ncols < 2 or ncols > 6:
        return False
    gcols = [Counter(r[i] for r in g) for i in range(ncols)]
    pcols = [Counter(r[i] for r in p) for i in range(ncols)]
    for perm in permutations(range(ncols)):
        if any(gcols[i] != pcols[perm[i]] for i in range(ncols)):
            continue
        if same(g, [tuple(r[j] for j in perm) for r in p]):
            return True
    return False


def execution_match(gold: str, pred: str, db_path: str | Path | None, *, timeout_s: float = 2.0,
                    max_rows: int = 100_000) -> bool | None:
    """True/False when the results of `pred` equal those of `gold`; None when it cannot be
    judged (no database file, or the gold itself fails)."""
    if db_path is None or not Path(db_path).is_file():
        return None
    g = run_sql(db_path, gold, timeout_s=max(timeout_s, 10.0), max_rows=max_rows)
    if not g.ok:
        return None
    if not pred or not pred.strip():
        return False
    p = run_sql(db_path, pred, timeout_s=timeout_s, max_rows=max_rows)
    if not p.ok:
        return False
    return results_match(g.rows, p.rows, has_order_by(gold))
