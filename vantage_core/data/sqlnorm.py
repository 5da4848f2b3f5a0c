"""SQL normalization with sqlglot: upper-case keywords and function names, single spaces,
identifiers quoted only where SQLite needs it (the original text is always kept next to it).

    normalize_sql("select count(*) from head where age  >  56")
    -> "SELECT COUNT(*) FROM head WHERE age > 56"

Double-quoted strings (Spider writes ``name = "Bob"``) stay double-quoted: SQLite reads an
unknown double-quoted identifier as a string, and rewriting them would need the schema.
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp

DIALECT = "sqlite"


class SQLParseError(ValueError):
    """The SQL text does not parse (or is not exactly one statement)."""


@functools.lru_cache(maxsize=32768)
def _parse_cached(sql: str) -> exp.Expression:
    try:
        trees = [t for t in sqlglot.parse(sql, read=DIALECT) if t is not None]
    except Exception as e:  # ParseError, TokenError, odd internal errors on garbage
        raise SQLParseError(" ".join(str(e).split())[:200] or type(e).__name__) from None
    if len(trees) != 1:
        raise SQLParseError(f"expected one statement, got {len(trees)}")
    return trees[0]


def parse_sql(sql: str) -> exp.Expression:
    """A fresh (mutable) AST of one statement; `SQLParseError` when it does not parse."""
    if not isinstance(sql, str) or not sql.strip():
        raise SQLParseError("empty SQL")
    return _parse_cached(sql.strip().rstrip(";").strip()).copy()


def to_sql(tree: exp.Expression) -> str:
    return tree.sql(dialect=DIALECT, normalize_functions="upper")


def normalize_sql(sql: str) -> str:
    """Canonical text of `sql`; raises `SQLParseError` when it does not parse."""
    if not isinstance(sql, str) or not sql.strip():
        raise SQLParseError("empty SQL")
    return to_sql(_parse_cached(sql.strip().rstrip(";").strip()))  # generating never mutates


def try_normalize(sql: str) -> tuple[str | None, str | None]:
    """(normalized, None) or (None, reason)."""
    try:
        return normalize_sql(sql), None
    except SQLParseError as e:
        return None, f"sql does not parse: {e}"
