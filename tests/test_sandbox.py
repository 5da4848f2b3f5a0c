"""The execution sandbox: generated SQL can read, never write, and always stops."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from vantage_core.data.schema import Column, Schema, Table
from vantage_core.sql.execution import (ExecResult, execution_match, results_match, run_sql, schema_db,
                                         valid_sql)

SPIDER = Path(__file__).resolve().parents[2] / "shared/data/spider"
FLIGHT_2 = SPIDER / "database/flight_2/flight_2.sqlite"


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path) -> Path:
    """A writable copy of a real database (so that only the sandbox protects it)."""
    dst = tmp_path / "flight_2.sqlite"
    if FLIGHT_2.is_file():
        shutil.copyfile(FLIGHT_2, dst)
    else:  # same shape, synthetic rows
        con = sqlite3.connect(dst)
        con.execute("CREATE TABLE airlines (uid INTEGER PRIMARY KEY, Airline TEXT, Abbreviation TEXT, Country TEXT)")
        con.execute("CREATE TABLE airports (City TEXT, AirportCode TEXT PRIMARY KEY, AirportName TEXT, Country TEXT, CountryAbbrev TEXT)")
        con.execute("CREATE TABLE flights (Airline INTEGER, FlightNo INTEGER, SourceAirport TEXT, DestAirport TEXT)")
        con.executemany("INSERT INTO airlines VALUES (?,?,?,?)", [(i, f"A{i}", f"a{i}", "USA") for i in range(12)])
        con.executemany("INSERT INTO airports VALUES (?,?,?,?,?)", [(f"C{i}", f"P{i}", f"N{i}", "USA", "US") for i in range(100)])
        con.executemany("INSERT INTO flights VALUES (?,?,?,?)", [(i % 12, i, f"P{i % 100}", f"P{(i * 7) % 100}") for i in range(1200)])
        con.commit()
        con.close()
    dst.chmod(0o644)
    return dst


ATTACKS = {
    "drop table": "DROP TABLE flights",
    "delete": "DELETE FROM flights",
    "update": "UPDATE airlines SET Airline = 'x'",
    "insert": "INSERT INTO airlines (uid, Airline) VALUES (999, 'x')",
    "create": "CREATE TABLE evil (x)",
    "create temp": "CREATE TEMP TABLE evil (x)",
    "attach": "ATTACH DATABASE '{tmp}/evil.db' AS evil",
    "pragma writable_schema": "PRAGMA writable_schema = 1",
    "pragma journal_mode": "PRAGMA journal_mode = DELETE",
    "load_extension": "SELECT load_extension('/tmp/evil.so')",
    "vacuum into": "VACUUM INTO '{tmp}/copy.db'",
    "begin": "BEGIN IMMEDIATE",
    "two statements": "SELECT 1; DROP TABLE flights",
    "blob bomb": "SELECT zeroblob(2000000000)",
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_writes_and_escapes_are_refused(name, db, tmp_path):
    before = _sha(db)
    files_before = sorted(p.name for p in tmp_path.iterdir())
    r = run_sql(db, ATTACKS[name].format(tmp=tmp_path), timeout_s=2.0)
    assert isinstance(r, ExecResult)
    assert r.ok is False and r.error, name
    assert r.rows == []
    assert _sha(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before  # no attached/vacuumed files
    # the database still reads normally afterwards
    assert run_sql(db, "SELECT count(*) FROM flights").rows[0][0] > 0


@pytest.mark.parametrize("sql,limit_kind", [
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "time"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c", "rows"),
    ("SELECT count(*) FROM flights AS a, flights AS b, airports AS c, airports AS d", "time"),  # ~1e11 rows
    ("SELECT * FROM flights AS a, flights AS b", "rows"),  # ~1.4e6 rows
])
def test_runaway_queries_are_stopped(sql, limit_kind, db):
    before = _sha(db)
    r = run_sql(db, sql, timeout_s=1.0, max_rows=50_000)
    assert r.ok is False
    assert r.elapsed_s < 3.0, r.elapsed_s
    if limit_kind == "time":
        assert r.timed_out and "time limit" in r.error
    else:
        assert r.truncated and "row limit" in r.error and len(r.rows) == 50_000
    assert _sha(db) == before


def test_reads_work_and_failures_are_verdicts(db, tmp_path):
    r = run_sql(db, "SELECT count(*) FROM airlines")
    assert r.ok and r.rows == [(12,)] and r.columns == ["count(*)"]
    bad = run_sql(db, "SELECT nope FROM airlines")
    assert not bad.ok and "no such column" in bad.error
    missing = run_sql(tmp_path / "absent.sqlite", "SELECT 1")
    assert not missing.ok and "not found" in missing.error
    assert not run_sql(db, "").ok
    nul = run_sql(db, "SELECT '\x00'")  # Python refuses NUL in SQL text: still a verdict
    assert not nul.ok and "null character" in nul.error


def test_valid_sql_real_and_schema_only(db, tmp_path, monkeypatch):
    monkeypatch.setenv("VANTAGE_SCHEMA_DB_DIR", str(tmp_path / "schemas"))
    assert valid_sql("SELECT Airline FROM airlines WHERE Country = 'USA'", db) == (True, "ok")
    ok, reason = valid_sql("SELECT Airlin FROM airlines", db)
    assert not ok and "no such column" in reason
    ok, reason = valid_sql("SELEC Airline FROM airlines", db)
    assert not ok and reason.startswith("syntax")
    ok, reason = valid_sql("DROP TABLE airlines", db)
    assert not ok and "not a query" in reason
    schema = Schema("toy_valid", [Table("t", [Column("a", "number"), Column("b")])])
    assert valid_sql("SELECT a, count(*) FROM t GROUP BY a", schema) == (True, "ok")
    assert valid_sql('SELECT a FROM t WHERE b = "x"', tmp_path / "absent.sqlite", schema)[0]  # DQS literal
    assert not valid_sql("SELECT c FROM t", schema)[0]
    assert not valid_sql("SELECT a FROM t", tmp_path / "absent.sqlite")[0]  # no file, no schema
    built = schema_db(schema)
    assert built.parent == tmp_path / "schemas" and built.is_file()
    assert schema_db(schema) == built


def test_execution_match(db):
    g = "SELECT Airline, Country FROM airlines ORDER BY uid"
    assert execution_match(g, g, db) is True
    assert execution_match(g, "SELECT Country, Airline FROM airlines ORDER BY uid", db) is True  # column order
    assert execution_match(g, "SELECT Airline, Country FROM airlines ORDER BY uid DESC", db) is False  # ordered
    g2 = "SELECT Airline FROM airlines"
    assert execution_match(g2, "SELECT Airline FROM airlines ORDER BY Airline DESC", db) is True  # multiset
    assert execution_match(g2, "SELECT DISTINCT Country FROM airlines", db) is False
    assert execution_match(g2, "DELETE FROM airlines", db) is False
    assert execution_match(g2, "SELECT nope", db) is False
    assert execution_match("SELECT broken gold", g2, db) is None
    assert execution_match(g2, g2, None) is None


@pytest.mark.parametrize("gold,pred,ordered,expect", [
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], False, True),
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], True, False),
    ([(1, "a"), (1, "a")], [(1, "a")], False, False),  # multiset, not set
    ([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], True, True),  # permuted columns
    ([(1.0,)], [(1,)], False, True),
    ([], [], True, True),
])
def test_results_match(gold, pred, ordered, expect):
    assert results_match(gold, pred, ordered) is expect
