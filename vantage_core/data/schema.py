"""Database schemas: read from Spider's tables.json or a SQLite file, serialize for prompts,
and materialize as a schema-only SQLite database (for validity checks without the data)."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError


@dataclass
class Column:
    name: str
    type: str = "text"
    primary_key: bool = False


@dataclass
class Table:
    name: str
    columns: list[Column] = field(default_factory=list)

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass
class ForeignKey:
    table: str
    column: str
    ref_table: str
    ref_column: str


@dataclass
class Schema:
    db_id: str
    tables: list[Table] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)

    def table(self, name: str) -> Table | None:
        low = name.lower()
        for t in self.tables:
            if t.name.lower() == low:
                return t
        return None

    def to_dict(self) -> dict:
        return {
            "db_id": self.db_id,
            "tables": [{"name": t.name, "columns": [[c.name, c.type, c.primary_key] for c in t.columns]}
                       for t in self.tables],
            "foreign_keys": [[f.table, f.column, f.ref_table, f.ref_column] for f in self.foreign_keys],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Schema":
        return cls(
            db_id=d["db_id"],
            tables=[Table(t["name"], [Column(c[0], c[1], bool(c[2])) for c in t["columns"]])
                    for t in d["tables"]],
            foreign_keys=[ForeignKey(*fk) for fk in d.get("foreign_keys", [])],
        )

    # --- sources ---------------------------------------------------------------------------
    @classmethod
    def from_spider_entry(cls, entry: dict) -> "Schema":
        """One element of Spider's tables.json (original names, not the natural-language ones)."""
        tnames = entry["table_names_original"]
        cols = entry["column_names_original"]
        types = entry["column_types"]
        pks: set[int] = set()
        for pk in entry.get("primary_keys", []):
            # BIRD and newer Spider releases may give composite keys as lists.
            pks.update(pk if isinstance(pk, list) else [pk])
        tables = [Table(n) for n in tnames]
        for i, (tidx, cname) in enumerate(cols):
            if tidx < 0:
                continue  # the "*" pseudo-column
            tables[tidx].columns.append(Column(cname, types[i] if i < len(types) else "text", i in pks))
        fks = []
        for a, b in entry.get("foreign_keys", []):
            ta, ca = cols[a]
            tb, cb = cols[b]
            fks.append(ForeignKey(tnames[ta], ca, tnames[tb], cb))
        return cls(entry["db_id"], tables, fks)

    @classmethod
    def from_connection(cls, con: sqlite3.Connection, db_id: str) -> "Schema":
        """The schema of an open SQLite connection (tables, columns, keys)."""
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        tables, fks = [], []
        for n in names:
            info = con.execute(f'PRAGMA table_info("{n}")').fetchall()
            tables.append(Table(n, [Column(r[1], (r[2] or "text").lower(), bool(r[5])) for r in info]))
            for r in con.execute(f'PRAGMA foreign_key_list("{n}")'):
                # (id, seq, table, from, to, ...); `to` may be NULL meaning the PK
                fks.append(ForeignKey(n, r[3], r[2], r[4] or ""))
        return cls(db_id, tables, fks)

    @classmethod
    def from_sqlite(cls, path: str | Path, db_id: str | None = None) -> "Schema":
        path = Path(path)
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return cls.from_connection(con, db_id or path.stem)
        except sqlite3.DatabaseError as e:
            raise DataError(f"{path}: not a readable SQLite database ({e})") from None
        finally:
            con.close()

    # --- uses ------------------------------------------------------------------------------
    def create_statements(self) -> list[str]:
        stmts = []
        for t in self.tables:
            cols = []
            pk = [c.name for c in t.columns if c.primary_key]
            for c in t.columns:
                cols.append(f'"{c.name}" {_sqlite_type(c.type)}')
            for f in self.foreign_keys:
                if f.table.lower() == t.name.lower() and f.ref_column:
                    cols.append(f'FOREIGN KEY ("{f.column}") REFERENCES "{f.ref_table}"("{f.ref_column}")')
            if pk:
                cols.append("PRIMARY KEY (" + ", ".join(f'"{p}"' for p in pk) + ")")
            stmts.append(f'CREATE TABLE "{t.name}" (' + ", ".join(cols) + ")")
        return stmts


def _sqlite_type(t: str) -> str:
    t = (t or "text").lower()
    return {"number": "NUMERIC", "time": "TEXT", "boolean": "INTEGER", "others": "TEXT"}.get(t, t.upper())


def serialize_schema(schema: Schema, *, sample_values: dict[tuple[str, str], list] | None = None,
                     max_chars: int | None = None, style: str = "compact") -> str:
    """Prompt form of a schema (`data.schema_format`):

    * ``compact``: ``table: col pk, col | fk: a.b = c.d`` on one line;
    * ``lines``: one ``table(col, col, ...)`` line per table (the pretrained chat prompt);
    * ``lines_keys``: the same with column types and keys, ``table(col int pk, ...)``, then
      one ``foreign keys: a.b = c.d, ...`` line.

    `max_chars` trims the compact form to a character budget.
    """
    if style != "compact":
        return _serialize_lines(schema, sample_values, keys=style == "lines_keys")
    lines = []
    for t in schema.tables:
        parts = []
        for c in t.columns:
            s = c.name
            if c.primary_key:
                s += " pk"
            if sample_values and (t.name, c.name) in sample_values:
                vals = sample_values[(t.name, c.name)]
                if vals:
                    s += " (" + ", ".join(str(v) for v in vals) + ")"
            parts.append(s)
        lines.append(f"{t.name}: " + ", ".join(parts))
    fk = [f"{f.table}.{f.column} = {f.ref_table}.{f.ref_column}" for f in schema.foreign_keys if f.ref_column]
    if fk:
        lines.append("fk: " + ", ".join(fk))
    text = " | ".join(lines)
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars].rsplit(",", 1)[0]
    return text


def _serialize_lines(schema: Schema, sample_values, keys: bool) -> str:
    lines = []
    for t in schema.tables:
        cols = []
        for c in t.columns:
            s = c.name
            if keys:
                s += f" {c.type}" if getattr(c, "type", None) else ""
                s += " pk" if c.primary_key else ""
            if sample_values and (t.name, c.name) in sample_values and sample_values[(t.name, c.name)]:
                s += " (" + ", ".join(str(v) for v in sample_values[(t.name, c.name)]) + ")"
            cols.append(s)
        lines.append(f"{t.name}(" + ", ".join(cols) + ")")
    fk = [f"{f.table}.{f.column} = {f.ref_table}.{f.ref_column}" for f in schema.foreign_keys if f.ref_column]
    if keys and fk:
        lines.append("foreign keys: " + ", ".join(fk))
    return "\n".join(lines)


def sample_values(db_path: str | Path, schema: Schema, k: int = 3) -> dict[tuple[str, str], list]:
    """Up to k distinct non-null values of each text column, read-only."""
    out: dict[tuple[str, str], list] = {}
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        for t in schema.tables:
            for c in t.columns:
                if c.type.lower() not in ("text", "varchar", "char"):
                    continue
                try:
                    rows = con.execute(
                        f'SELECT DISTINCT "{c.name}" FROM "{t.name}" WHERE "{c.name}" IS NOT NULL LIMIT {k}'
                    ).fetchall()
                except sqlite3.DatabaseError:
                    continue
                out[(t.name, c.name)] = [str(r[0]).strip()[:30] for r in rows]
    finally:
        con.close()
    return out


def pluralize(words: str) -> str:
    """English plural of the last word, as a question mentions a table (``harbor`` ->
    ``harbors``, ``atlas`` -> ``atlases``, ``ferry`` -> ``ferries``); a word already plural
    (``details``) stays."""
    if re.search(r"(?:ss|us|is|as|x|z|ch|sh)$", words):
        return words + "es"
    if words.endswith("s"):
        return words
    if re.search(r"[^aeiou]y$", words):
        return words[:-1] + "ies"
    return words + "s"
