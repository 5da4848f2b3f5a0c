"""SQL parsing and normalization with sqlglot (SQLite dialect), with the one parse cache and
the one `SQLParseError` that data, eval and augment share.

    normalize_sql("select count(*) from head where age  >  56")
    -> "SELECT COUNT(*) FROM head WHERE age > 56"

Normalization upper-cases keywords and function names, folds white space and quotes
identifiers only where SQLite needs it (the original text is always kept next to it).
Double-quoted strings (Spider writes ``name = "Bob"``) stay double-quoted: SQLite reads an
unknown double-quoted identifier as a string, and rewriting them would need the schema.
"""

from __future__ import annotations

import functools

import sqlglot
from sqlglot import exp

DIALECT = "sqlite"


class SQLParseError(ValueError):
    """The SQL text does not parse, is not exactly one statement, or (exact match) cannot be
    mapped onto Spider's component structure."""


@functools.lru_cache(maxsize=65536)
def parse_tree(sql: str) -> exp.Expression:
    """The cached AST of one statement, shared by every caller: read it, never mutate it
    (`parse_sql` gives a fresh copy). `SQLParseError` when it does not parse."""
    try:
        trees = [t for t in sqlglot.parse(sql, read=DIALECT) if t is not None]
    except Exception as e:  # ParseError, TokenError, odd internal errors on garbage
        raise SQLParseError("syntax: " + (" ".join(str(e).split())[:200] or type(e).__name__)) from None
    if len(trees) != 1:
        raise SQLParseError("expected exactly one statement")
    return trees[0]


def _statement(sql: str) -> str:
    if not isinstance(sql, str) or not sql.strip():
        raise SQLParseError("empty SQL")
    return sql.strip().rstrip(";").strip()


def parse_sql(sql: str) -> exp.Expression:
    """A fresh (mutable) AST of one statement; `SQLParseError` when it does not parse."""
    return parse_tree(_statement(sql)).copy()


def read_sql(sql: str) -> exp.Expression:
    """The shared (read-only) AST of one statement; `SQLParseError` when it does not parse."""
    return parse_tree(_statement(sql))


def to_sql(tree: exp.Expression) -> str:
    return tree.sql(dialect=DIALECT, normalize_functions="upper")


def normalize_sql(sql: str) -> str:
    """Canonical text of `sql`; raises `SQLParseError` when it does not parse."""
    return to_sql(read_sql(sql))  # generating never mutates


def try_normalize(sql: str) -> tuple[str | None, str | None]:
    """(normalized, None) or (None, reason)."""
    try:
        return normalize_sql(sql), None
    except SQLParseError as e:
        return None, f"sql does not parse: {e}"
