"""Security: servers bind to 127.0.0.1 by default; the SQL sandbox holds on every dataset's real
databases (the Spider files, the synthetic databases, WikiSQL- and Gretel-built ones); database
passwords in storage URLs never reach logs, reports, stored studies, the dashboard's echo or the
command lines of trial processes (visible to every user in `ps`)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sweep_process_helpers import FAKE, cli, env_with, popen

pytestmark = pytest.mark.integration

SPIDER = Path(__file__).resolve().parents[2] / "shared/data/spider"
SECRET = "S3cretPW"


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Servers: 127.0.0.1 by default
# ---------------------------------------------------------------------------------------------
def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on `port`."""
    out = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(f).read_text().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            parts = ln.split()
            addr, p = parts[1].rsplit(":", 1)
            if int(p, 16) == port and parts[3] == "0A":   # LISTEN
                out.add(addr)
    return out


def test_dashboard_binds_loopback_by_default(tmp_path):
    import inspect

    from studies.cli import _dashboard_parser
    from studies.dashboard import make_dashboard_server, serve
    assert _dashboard_parser().parse_args([]).host == "127.0.0.1"
    for fn in (make_dashboard_server, serve):
        assert inspect.signature(fn).parameters["host"].default == "127.0.0.1"
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "1", *FAKE)
    assert r.returncode == 0, r.stderr[-2000:]
    p = popen(tmp_path, "dashboard", "--port", "0")
    try:
        line = ""
        t0 = time.time()
        while "dashboard: http" not in line and time.time() - t0 < 60:
            line = p.stdout.readline()
            assert line or p.poll() is None, p.stderr.read()[-2000:]
        m = re.search(r"http://([\d.]+):(\d+)/", line)
        assert m and m.group(1) == "127.0.0.1", line
        addrs = _listening(int(m.group(2)))
        assert addrs == {"0100007F"}, addrs           # 127.0.0.1 only, not 0.0.0.0 / ::
    finally:
        p.send_signal(signal.SIGINT)
        p.communicate(timeout=30)


# ---------------------------------------------------------------------------------------------
# The SQL sandbox on every dataset's real databases
# ---------------------------------------------------------------------------------------------
def _spider_dbs() -> list[Path]:
    return sorted((SPIDER / "database").glob("*/*.sqlite")) if SPIDER.is_dir() else []


@pytest.fixture(scope="module")
def built_dbs(tmp_path_factory) -> dict[str, Path]:
    """Synthetic databases (generator), a WikiSQL-built and a Gretel-built one (loaders)."""
    from test_data_fixtures import write_gretel, write_wikisql

    from vantage_core.data.gretel import load_gretel, materialize_db
    from vantage_core.data.synthetic import generate_synthetic
    from vantage_core.data.wikisql import load_wikisql
    tmp = tmp_path_factory.mktemp("dbs")
    out = {}
    syn = generate_synthetic(tmp / "synthetic", num_databases=4, examples_per_db=4, num_dev_databases=1, seed=0)
    for p in sorted((syn / "database").glob("*/*.sqlite")):
        out[f"synthetic/{p.stem}"] = p
    wiki = load_wikisql(write_wikisql(tmp / "wikisql"), db_dir=tmp / "wikidbs")
    ex = wiki.train[0]
    out["wikisql"] = Path(ex.db_path)
    gretel = load_gretel(write_gretel(tmp / "gretel"))
    out["gretel"] = materialize_db(gretel.train[0], tmp / "gretel-dbs")
    return out


DB_IDS = [f"spider/{p.stem}" for p in _spider_dbs()] + \
    [f"synthetic/{i}" for i in range(5)] + ["wikisql", "gretel"]


def _db_for(db_id: str, built: dict[str, Path]) -> Path:
    if db_id.startswith("spider/"):
        return next(p for p in _spider_dbs() if p.stem == db_id.split("/", 1)[1])
    if db_id.startswith("synthetic/"):
        syn = sorted(k for k in built if k.startswith("synthetic/"))
        i = int(db_id.split("/")[1])
        if i >= len(syn):
            pytest.skip("fewer synthetic databases")
        return built[syn[i]]
    return built[db_id]


@pytest.mark.parametrize("db_id", DB_IDS)
def test_sandbox_on_real_databases(db_id, built_dbs, tmp_path):
    from vantage_core.sql.execution import run_sql

    original = _db_for(db_id, built_dbs)
    orig_hash = sha(original)
    db = tmp_path / original.name                      # a writable copy: only the sandbox protects it
    shutil.copyfile(original, db)
    db.chmod(0o644)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    con.close()
    assert tables, db_id
    t = tables[0]
    q = f'"{t}"'
    before, files = sha(db), sorted(os.listdir(tmp_path))
    count = run_sql(db, f"SELECT count(*) FROM {q}")
    assert count.ok, count.error
    attacks = [f"DROP TABLE {q}", f"DELETE FROM {q}", f"UPDATE {q} SET rowid = rowid + 1",
               f"INSERT INTO {q} DEFAULT VALUES", f"ALTER TABLE {q} ADD COLUMN evil TEXT",
               f"CREATE TABLE evil AS SELECT * FROM {q}", f"ATTACH DATABASE '{tmp_path}/evil.db' AS evil",
               "PRAGMA writable_schema = 1", "PRAGMA writable_schema", "SELECT load_extension('/tmp/evil.so')",
               f"VACUUM INTO '{tmp_path}/copy.db'", f"SELECT 1; DROP TABLE {q}", "REINDEX", "ANALYZE"]
    for sql in attacks:
        r = run_sql(db, sql, timeout_s=0.5)
        assert not r.ok and r.error and r.rows == [], (db_id, sql, r)
    # runaway queries are stopped: by time, and by rows
    r = run_sql(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
                timeout_s=0.5)
    assert not r.ok and r.timed_out and r.elapsed_s < 3, r
    r = run_sql(db, f"SELECT a.rowid FROM {q} AS a, {q} AS b, {q} AS c, {q} AS d", timeout_s=0.5, max_rows=1000)
    assert (not r.ok and (r.truncated or r.timed_out)) or (r.ok and len(r.rows) <= 1000), r
    assert sha(db) == before and sorted(os.listdir(tmp_path)) == files
    assert run_sql(db, f"SELECT count(*) FROM {q}").rows == count.rows
    # the original file: read through the sandbox, never changed
    assert run_sql(original, f"SELECT count(*) FROM {q}").rows == count.rows
    assert sha(original) == orig_hash


def test_all_seven_spider_databases_are_covered():
    if not SPIDER.is_dir():
        pytest.skip("../shared/data/spider not available")
    assert len(_spider_dbs()) == 7


# ---------------------------------------------------------------------------------------------
# Passwords in storage URLs
# ---------------------------------------------------------------------------------------------
def _grep_tree(root: Path, secret: str) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and secret.encode() in p.read_bytes():
            hits.append(str(p))
    return hits


def record_cmdlines(trial, spec):
    """Fake objective that also records the command line of the process running the trial."""
    from runners.fake_objective import quadratic
    with open(os.environ["VT_CMDLINES"], "ab") as f:
        f.write(Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ") + b"\n")
    return quadratic(trial, spec)


@pytest.mark.parametrize("cmd", ["sweep", "status", "report", "worker", "dashboard"])
def test_password_never_echoed_when_connection_fails(tmp_path, cmd):
    url = f"postgresql+psycopg://vt_user:{SECRET}@127.0.0.1:1/nodb"
    args = {"sweep": ["lr", "--model", "tiny", "--storage", url, *FAKE],
            "status": ["status", "--storage", url],
            "report": ["report", "x", "--storage", url, "--out", tmp_path / "r"],
            "worker": ["worker", "--storage", url, "--study-name", "x"],
            "dashboard": ["dashboard", "--storage", url, "--port", "0"]}[cmd]
    r = cli(tmp_path, *args, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert SECRET not in r.stdout + r.stderr, r.stderr
    assert "vt_user:***@" in r.stderr
    assert not _grep_tree(tmp_path, SECRET)


@pytest.fixture
def pg_role_db():
    psycopg = pytest.importorskip("psycopg")
    role, db = f"vt_user_{uuid.uuid4().hex[:8]}", f"vt_{uuid.uuid4().hex[:12]}"
    try:
        conn = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)
    except Exception as e:
        pytest.skip(f"PostgreSQL not reachable: {e}")
    conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
    conn.execute(f"CREATE DATABASE {db} OWNER {role}")
    try:
        yield f"postgresql+psycopg://{role}:{SECRET}@127.0.0.1:5432/{db}", db, conn
    finally:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.close()


def test_password_never_leaks_from_a_working_storage(tmp_path, pg_role_db):
    url, dbname, admin = pg_role_db
    cmdlines = tmp_path / "cmdlines.txt"
    env = {"VT_CMDLINES": str(cmdlines)}
    outputs = []
    # a sweep with one process per trial, a worker, status, report, verbose logging throughout
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "2", "--storage", url, "--runner", "subprocess",
            "--objective-fn", "test_security:record_cmdlines", "-v", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    outputs.append(r.stdout + r.stderr)
    r = cli(tmp_path, "worker", "--storage", url, "--study-name", "lr-tiny-synthetic", "--trials", "1", "-v", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    outputs.append(r.stdout + r.stderr)
    for args in (["status", "--storage", url], ["report", "lr-tiny-synthetic", "--storage", url, "--out",
                                                  tmp_path / "report"]):
        r = cli(tmp_path, *args)
        assert r.returncode == 0, r.stderr[-3000:]
        outputs.append(r.stdout + r.stderr)
    p = popen(tmp_path, "dashboard", "--storage", url, "--port", "0")
    try:
        line = ""
        while "dashboard: http" not in line:
            line = p.stdout.readline()
            assert line or p.poll() is None
            outputs.append(line)
    finally:
        p.send_signal(signal.SIGINT)
        so, se = p.communicate(timeout=30)
        outputs.append(so + se)
    for out in outputs:
        assert SECRET not in out, out[-3000:]
    assert "***@" in "".join(outputs)
    # the trial processes' command lines (world-readable in ps) and the files written
    children = [ln for ln in cmdlines.read_text().splitlines() if "runners.trial_worker" in ln]
    assert len(children) == 2
    for ln in children:                        # (the sweep's own command line is what the user typed)
        assert SECRET not in ln, ln
    assert not _grep_tree(tmp_path / "sweeps", SECRET) and not _grep_tree(tmp_path / "report", SECRET)
    # nothing stored in the study holds it
    import psycopg
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={dbname}") as c:
        for (table,) in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall():
            rows = c.execute(f'SELECT * FROM "{table}"').fetchall()
            assert SECRET not in repr(rows), table
