"""The embedded synthetic text-to-SQL generator (vantage_core.data.synthetic)."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from vantage_core.data.prepare import carve_validation
from vantage_core.data.readers import load_spider
from vantage_core.data.synthetic import (DEFAULT_NUM_DATABASES, DOMAINS, META_FILE, TEMPLATES, _main,
                                         generate_synthetic)
from vantage_core.errors import DataError


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "data"
    t0 = time.perf_counter()
    root = generate_synthetic(out)  # defaults: 24 train dbs x 400, 2 dev dbs
    elapsed = time.perf_counter() - t0
    return root, elapsed


@pytest.fixture(scope="module")
def splits(gen):
    return load_spider(gen[0], source="synthetic")


@pytest.fixture(scope="module")
def raw(gen):
    root = gen[0]
    return {name: json.loads((root / f"{name}.json").read_text()) for name in ("train", "dev", "tables")}


@pytest.fixture(scope="module")
def executed(splits):
    """(example, rows) for every gold query, run on its own database."""
    cons: dict[str, sqlite3.Connection] = {}
    out = []
    for ex in splits.train + splits.dev:
        con = cons.setdefault(ex.db_id, sqlite3.connect(f"file:{ex.db_path}?mode=ro", uri=True))
        out.append((ex, con.execute(ex.query).fetchall()))
    for con in cons.values():
        con.close()
    return out


def _table_dump(db: Path) -> dict:
    con = sqlite3.connect(db)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {n: con.execute(f'SELECT * FROM "{n}" ORDER BY rowid').fetchall() for n in names}
    finally:
        con.close()


# --- layout -------------------------------------------------------------------------------
def test_layout_loads_with_spider_loader(gen, splits):
    root, _ = gen
    assert not splits.skipped
    assert DEFAULT_NUM_DATABASES == 24
    assert len(splits.train) == 24 * 400
    assert len(splits.dev) == 2 * 400
    assert len(splits.schemas) == 26
    for ex in splits.train + splits.dev:
        assert ex.db_path is not None and Path(ex.db_path).is_file()
    assert (root / "database").is_dir()
    meta = json.loads((root / META_FILE).read_text())
    assert meta["params"] == {"num_databases": 24, "examples_per_db": 400, "num_dev_databases": 2, "seed": 0,
                              "name_variation": 1.0}


def test_generation_is_fast(gen):
    assert gen[1] < 5.0


def test_train_and_dev_databases_are_disjoint(splits):
    train = {e.db_id for e in splits.train}
    dev = {e.db_id for e in splits.dev}
    assert len(train) == 24 and len(dev) == 2
    assert not train & dev
    # dev domains are unseen in training (school_1 -> school)
    dom = lambda db: db.rsplit("_", 1)[0]  # noqa: E731
    assert not {dom(d) for d in train} & {dom(d) for d in dev}
    assert all(re.fullmatch(r"[a-z]+_\d+", d) for d in train | dev)


def test_database_schemas(raw, gen):
    root, _ = gen
    entries = raw["tables"]
    assert len(entries) >= 5
    assert len({json.dumps(e["table_names_original"]) + json.dumps(e["column_names_original"])
                for e in entries}) == len(entries), "every database has a distinct schema"
    for e in entries:
        assert len(e["table_names_original"]) >= 3, e["db_id"]
        assert len(e["foreign_keys"]) >= 1, e["db_id"]
        assert {"text", "number", "time"} <= set(e["column_types"]), e["db_id"]
        assert e["column_names"][0] == [-1, "*"]
        assert len(e["column_names"]) == len(e["column_names_original"]) == len(e["column_types"])
        dump = _table_dump(root / "database" / e["db_id"] / f"{e['db_id']}.sqlite")
        assert sorted(dump) == sorted(e["table_names_original"])
        for t, rows in dump.items():
            assert 5 <= len(rows) <= 250, (e["db_id"], t, len(rows))
        con = sqlite3.connect(root / "database" / e["db_id"] / f"{e['db_id']}.sqlite")
        try:  # foreign keys are real: every reference resolves
            assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        finally:
            con.close()


def test_schema_vocabulary_is_shared(splits):
    """Held-out databases reuse column words seen in training."""
    def words(db_ids):
        return {c.name for d in db_ids for t in splits.schemas[d].tables for c in t.columns
                if not c.name.endswith("_id")}
    train = words({e.db_id for e in splits.train})
    dev = words({e.db_id for e in splits.dev})
    assert len(dev & train) / len(dev) >= 0.75


# --- gold queries -------------------------------------------------------------------------
def test_every_gold_query_executes_and_most_return_rows(executed):
    assert len(executed) == 26 * 400
    nonempty = sum(1 for _, rows in executed if rows and any(v is not None for v in rows[0]))
    assert nonempty / len(executed) >= 0.9


def test_examples_are_unique_and_clean(raw):
    for split in ("train", "dev"):
        seen = set()
        for ex in raw[split]:
            assert set(ex) >= {"question", "query", "db_id", "template"}
            key = (ex["db_id"], ex["question"])
            assert key not in seen
            seen.add(key)
            assert ex["question"] == " ".join(ex["question"].split())
            assert not re.search(r"\b[Aa] [aeiou]|\baan\b", ex["question"]), ex["question"]
            assert '"' not in ex["query"]


def test_literals_are_copied_from_the_question(raw):
    """Every literal of the gold SQL appears verbatim in the question."""
    for ex in raw["train"] + raw["dev"]:
        for s in re.findall(r"'([^']*)'", ex["query"]):
            assert s.strip("%") in ex["question"], ex
        no_strings = re.sub(r"'[^']*'", "", ex["query"])
        for n in re.findall(r"(?<![\w.(])(\d+(?:\.\d+)?)(?![\w.])", no_strings):
            if re.search(rf"(LIMIT|>=) {re.escape(n)}\b", no_strings) and n == "1":
                continue  # LIMIT 1 of argmax / "most"
            assert n in ex["question"], ex


def test_at_least_20_templates_with_varied_wording(raw):
    exs = raw["train"] + raw["dev"]
    used = {e["template"] for e in exs}
    assert len(used) >= 20
    assert used <= set(TEMPLATES)
    # 2+ phrasings per template: the first three words vary within a template
    starts: dict[str, set] = {}
    for e in exs:
        starts.setdefault(e["template"], set()).add(" ".join(e["question"].split()[:3]))
    assert sum(len(v) >= 2 for v in starts.values()) >= 0.9 * len(starts)


SQL_FEATURES = {
    "eq": r"WHERE \S+ = '",
    "gt": r"WHERE \S+ > \d",
    "lt": r"WHERE \S+ < \d",
    "like": r" LIKE '%[^']+%'",
    "between": r" BETWEEN \S+ AND \S+",
    "date": r"_date [<>] '\d{4}-\d\d-\d\d'",
    "count": r"count\(\*\)",
    "count_distinct": r"count\(DISTINCT ",
    "avg": r"\bavg\(",
    "sum": r"\bsum\(",
    "min": r"\bmin\(",
    "max": r"\bmax\(",
    "group_by": r" GROUP BY ",
    "having": r" HAVING count\(\*\) >= \d+",
    "order_limit": r" ORDER BY \S+ (DESC|ASC) LIMIT \d+$",
    "order": r" ORDER BY \S+ (DESC|ASC)$",
    "join2": r"^SELECT (?!.* JOIN .* JOIN ).* FROM \w+ AS T1 JOIN \w+ AS T2 ON T\d\.\w+ = T\d\.\w+",
    "join3": r" JOIN \w+ AS T2 ON .* JOIN \w+ AS T3 ON ",
    "in_subquery": r" WHERE id IN \(SELECT \w+_id FROM ",
    "not_in_subquery": r" NOT IN \(SELECT ",
    "scalar_subquery": r" [<>] \(SELECT avg\(\w+\) FROM \w+\)$",
    "union": r" UNION SELECT ",
    "intersect": r" INTERSECT SELECT ",
    "except": r" EXCEPT SELECT ",
}


@pytest.mark.parametrize("feature", sorted(SQL_FEATURES))
def test_sql_feature_is_covered(raw, feature):
    pat = re.compile(SQL_FEATURES[feature])
    hits = [e for e in raw["train"] if pat.search(e["query"])]
    assert len(hits) >= 5, f"{feature}: only {len(hits)} training queries"
    dev_hits = [e for e in raw["dev"] if pat.search(e["query"])]
    assert dev_hits, f"{feature}: none in dev"


def test_sql_style_is_spider_like(raw):
    kw = re.compile(r"\b(select|from|where|join|group by|order by|having|limit|union|intersect|except)\b")
    for e in raw["train"] + raw["dev"]:
        no_strings = re.sub(r"'[^']*'", "''", e["query"])
        assert not kw.search(no_strings), e["query"]  # keywords are uppercase
        assert e["query"].startswith("SELECT ")


def test_sqlglot_parses_gold(raw):
    sqlglot = pytest.importorskip("sqlglot")
    for e in raw["train"][:600]:
        sqlglot.parse_one(e["query"], read="sqlite")


# --- determinism, idempotency -------------------------------------------------------------
def test_same_seed_is_byte_identical(gen, tmp_path):
    root, _ = gen
    other = generate_synthetic(tmp_path / "again")
    for f in ("train.json", "dev.json", "tables.json"):
        assert (root / f).read_bytes() == (other / f).read_bytes(), f
    for db in sorted(p.name for p in (root / "database").iterdir()):
        assert _table_dump(root / "database" / db / f"{db}.sqlite") == \
            _table_dump(other / "database" / db / f"{db}.sqlite"), db


def test_different_seed_gives_different_data(gen, tmp_path):
    root, _ = gen
    other = generate_synthetic(tmp_path / "seed1", seed=1)
    assert (root / "train.json").read_bytes() != (other / "train.json").read_bytes()
    common = sorted({p.name for p in (root / "database").iterdir()} & {p.name for p in (other / "database").iterdir()})
    for db in common:
        assert _table_dump(root / "database" / db / f"{db}.sqlite") != \
            _table_dump(other / "database" / db / f"{db}.sqlite"), db


def test_rerun_is_idempotent_and_does_not_rewrite(tmp_path):
    out = tmp_path / "d"
    generate_synthetic(out, num_databases=3, examples_per_db=30, num_dev_databases=1)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    t0 = time.perf_counter()
    assert generate_synthetic(out, num_databases=3, examples_per_db=30, num_dev_databases=1) == out
    assert time.perf_counter() - t0 < 1.0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp dirs left behind"


def test_other_params_regenerate_in_place(tmp_path):
    out = tmp_path / "d"
    generate_synthetic(out, num_databases=3, examples_per_db=30, num_dev_databases=1)
    generate_synthetic(out, num_databases=4, examples_per_db=20, num_dev_databases=1)
    s = load_spider(out)
    assert len(s.train) == 80 and len(s.dev) == 20 and len(s.schemas) == 5
    assert len(list((out / "database").iterdir())) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_incomplete_generation_is_redone(tmp_path):
    out = tmp_path / "d"
    generate_synthetic(out, num_databases=2, examples_per_db=10, num_dev_databases=1)
    (out / "train.json").unlink()
    generate_synthetic(out, num_databases=2, examples_per_db=10, num_dev_databases=1)
    assert len(load_spider(out).train) == 20


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError):
        generate_synthetic(out, num_databases=2, examples_per_db=5)
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("bad", [dict(num_databases=0), dict(examples_per_db=0), dict(num_dev_databases=-1),
                                 dict(name_variation=1.5), dict(name_variation=-0.1)])
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(DataError):
        generate_synthetic(tmp_path / "x", **bad)


# --- scale --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 12])
def test_many_or_few_databases(tmp_path, n):
    out = generate_synthetic(tmp_path / "d", num_databases=n, examples_per_db=40, num_dev_databases=2)
    s = load_spider(out)
    train = {e.db_id for e in s.train}
    dev = {e.db_id for e in s.dev}
    assert len(train) == n and len(dev) == 2 and not train & dev
    assert len(s.train) == 40 * n
    for ex in s.train + s.dev:
        con = sqlite3.connect(ex.db_path)
        try:
            con.execute(ex.query).fetchall()
        finally:
            con.close()
    if n > len(DOMAINS) - 2:  # beyond the domain pool: variants with distinct schemas
        schemas = {json.dumps(s.schemas[d].to_dict()["tables"]) for d in train}
        assert len(schemas) == n


def test_cli_prints_counts(tmp_path, capsys):
    assert _main([str(tmp_path / "cli"), "--num-databases", "2", "--examples-per-db", "15",
                  "--num-dev-databases", "1"]) == 0
    out = capsys.readouterr().out
    assert "train 30 examples on 2 databases" in out
    assert "dev 15 examples on 1 databases" in out
    assert os.path.isfile(tmp_path / "cli" / "tables.json")


# --- naming diversity ---------------------------------------------------------------------
BASE_TABLES = {t.name for tdefs in DOMAINS.values() for t in tdefs}


def _words_in(name: str, text: str) -> bool:
    """Every word of a schema name occurs in the text (a plural may change the last letter)."""
    low = text.lower()
    return all(w[:-1] in low for w in name.split("_"))


def _tables_of(query: str) -> set[str]:
    return set(re.findall(r"\b(?:FROM|JOIN) (\w+)", query))


def test_many_distinct_table_name_sets(raw):
    train_dbs = {e["db_id"] for e in raw["train"]}
    sets = {tuple(sorted(e["table_names_original"])) for e in raw["tables"] if e["db_id"] in train_dbs}
    assert len(train_dbs) == 24
    assert len(sets) >= 20
    # later variants of a domain are renamed: names outside the base designs are common
    names = [n for e in raw["tables"] if e["db_id"] in train_dbs for n in e["table_names_original"]]
    assert sum(n not in BASE_TABLES for n in names) / len(names) >= 0.4


def test_held_out_table_names_are_new_but_explained_by_questions(splits):
    """The trainer's validation split (by database): many of its table names never occur in the
    remaining training databases, yet the questions spell them out, so they can be copied."""
    train, valid = carve_validation(list(splits.train), 0.2, 0)
    val_dbs, train_dbs = {e.db_id for e in valid}, {e.db_id for e in train}
    assert val_dbs and not val_dbs & train_dbs
    seen = {t.name for d in train_dbs for t in splits.schemas[d].tables}
    val_names = [t.name for d in sorted(val_dbs) for t in splits.schemas[d].tables]
    unseen = [n for n in val_names if n not in seen]
    assert len(unseen) / len(val_names) >= 0.3, (unseen, val_names)
    # leave-one-out over all training databases too
    by_db = {d: {t.name for t in splits.schemas[d].tables} for d in train_dbs | val_dbs}
    loo = [n for d, ns in by_db.items() for n in ns if not any(n in o for d2, o in by_db.items() if d2 != d)]
    assert len(loo) / sum(map(len, by_db.values())) >= 0.3
    for e in valid:
        for t in _tables_of(e.query):
            assert _words_in(t, e.question), (t, e.question)


def test_questions_mention_renamed_tables_and_columns(raw):
    tables = {e["db_id"]: e for e in raw["tables"]}
    for ex in raw["train"] + raw["dev"]:
        for t in _tables_of(ex["query"]):
            assert t in tables[ex["db_id"]]["table_names_original"], ex
            assert _words_in(t, ex["question"]), ex
        if ex["template"] in ("filter_eq", "filter_gt", "count_where", "group_count", "agg"):
            cols = {c for _, c in tables[ex["db_id"]]["column_names_original"]}
            for c in set(re.findall(r"\b[a-z_]+\b", re.sub(r"'[^']*'", "", ex["query"]))) & cols:
                if c != "id" and not c.endswith("_id"):
                    assert c.replace("_", " ") in ex["question"], (c, ex)


def test_foreign_keys_follow_renamed_parents(raw):
    for e in raw["tables"]:
        cols = e["column_names_original"]
        for child, parent in e["foreign_keys"]:
            ptable = e["table_names_original"][cols[parent][0]]
            assert cols[parent][1] == "id"
            assert cols[child][1] == f"{ptable}_id", (e["db_id"], cols[child], ptable)


def test_name_variation_zero_keeps_base_names(tmp_path):
    out = generate_synthetic(tmp_path / "d", num_databases=15, examples_per_db=10, name_variation=0.0)
    tabs = json.loads((out / "tables.json").read_text())
    assert {n for e in tabs for n in e["table_names_original"]} <= BASE_TABLES
    renamed = generate_synthetic(tmp_path / "r", num_databases=15, examples_per_db=10)
    tabs = json.loads((renamed / "tables.json").read_text())
    assert {n for e in tabs for n in e["table_names_original"]} - BASE_TABLES


def test_forty_databases_are_fast_distinct_and_valid(tmp_path):
    t0 = time.perf_counter()
    out = generate_synthetic(tmp_path / "d", num_databases=40, examples_per_db=400)
    assert time.perf_counter() - t0 < 10.0
    tabs = json.loads((out / "tables.json").read_text())
    assert len(tabs) == 42 and len({e["db_id"] for e in tabs}) == 42
    assert len({json.dumps([e["table_names_original"], e["column_names_original"]]) for e in tabs}) == 42
    assert len({tuple(sorted(e["table_names_original"])) for e in tabs}) >= 36
    s = load_spider(out)
    assert len(s.train) == 40 * 400 and not s.skipped
    cons: dict[str, sqlite3.Connection] = {}
    try:
        for ex in s.train[::7] + s.dev[::7]:
            con = cons.setdefault(ex.db_id, sqlite3.connect(f"file:{ex.db_path}?mode=ro", uri=True))
            con.execute(ex.query).fetchall()
    finally:
        for con in cons.values():
            con.close()
