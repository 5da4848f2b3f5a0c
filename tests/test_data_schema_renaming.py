"""Strong schema renaming (data.schema_rename_style: novel, schema_rename_*_fraction,
schema_perturbation_copies, schema_rename_variants): new names never contain the old ones,
schema / SQL / question move together, the renamed SQL returns the original's rows on a
renamed copy of the database, copies are distinct variants, and everything is deterministic."""

from __future__ import annotations

import random
import re
import sqlite3
from collections import defaultdict
from types import SimpleNamespace

import pytest
from sqlglot import exp

from test_data_fixtures import SPIDER
from vantage_core.config import load_config
from vantage_core.data import augment as A
from vantage_core.data.example import Example
from vantage_core.data.schema import Column, ForeignKey, Schema, Table
from vantage_core.sql.parse import parse_sql, to_sql
from vantage_core.errors import ConfigError
from vantage_core.sql.execution import run_sql

HAS_SPIDER = (SPIDER / "tables.json").is_file()
needs_spider = pytest.mark.skipif(not HAS_SPIDER, reason="shared Spider data absent")
NOVEL_ALL = A.RenameSettings(copies=4, variants=4, style="novel", p_table=1.0, p_column=1.0)
IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


@pytest.fixture(scope="module")
def spider():
    if not HAS_SPIDER:
        pytest.skip("shared Spider data absent")
    from vantage_core.data.readers import load_spider
    return load_spider(SPIDER)


# ------------------------------------------------------------------------------------------
# a tiny database of our own (runs without the shared Spider data)
# ------------------------------------------------------------------------------------------
TINY = Schema("music", [
    Table("singer", [Column("singer_id", "number", True), Column("Name"), Column("Country"),
                     Column("age", "number")]),
    Table("concert", [Column("concert_id", "number", True), Column("concert_name"), Column("Year", "number"),
                      Column("singer_id", "number")]),
    Table("HighSchooler", [Column("ID", "number", True), Column("name"), Column("grade", "number")]),
], [ForeignKey("concert", "singer_id", "singer", "singer_id")])
TINY_SQL = """
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, Name TEXT, Country TEXT, age INTEGER);
CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, concert_name TEXT, Year INTEGER,
                      singer_id INTEGER REFERENCES singer(singer_id));
CREATE TABLE HighSchooler (ID INTEGER PRIMARY KEY, name TEXT, grade INTEGER);
INSERT INTO singer VALUES (1, 'Joe', 'France', 52), (2, 'Ann', 'Spain', 31), (3, 'Tony Award', 'France', 25);
INSERT INTO concert VALUES (1, 'Spring', 2014, 1), (2, 'Summer', 2015, 1), (3, 'Autumn', 2015, 2);
INSERT INTO HighSchooler VALUES (1, 'Kyle', 9), (2, 'Jordan', 12);
"""
TINY_EXAMPLES = [
    ("How many singers do we have?", "SELECT count(*) FROM singer"),
    ("What are the names of singers from France ordered by age?",
     'SELECT Name FROM singer WHERE Country = "France" ORDER BY age'),
    ("Show the singer id and the number of concerts of each singer.",
     "SELECT T1.singer_id, count(*) FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id "
     "GROUP BY T1.singer_id"),
    ("Which concert names are in the year 2015?", "SELECT concert_name FROM concert WHERE Year = 2015"),
    ("List the names of high schoolers in grade 9.", "SELECT name FROM HighSchooler WHERE grade = 9"),
    ("Names of singers who gave no concert?",
     "SELECT Name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM concert)"),
    ('Find the age of the singer named "Tony Award".', "SELECT age FROM singer WHERE Name = 'Tony Award'"),
]


@pytest.fixture()
def tiny_db(tmp_path):
    p = tmp_path / "music.sqlite"
    con = sqlite3.connect(p)
    con.executescript(TINY_SQL)
    con.commit()
    con.close()
    return p


def _tiny_examples(db_path=None) -> list[Example]:
    return [Example(f"t/{i}", "tiny", "music", q, s, db_path=str(db_path) if db_path else None)
            for i, (q, s) in enumerate(TINY_EXAMPLES)]


def _cfg(**kw):
    base = dict(augmentation_prob=0.0, schema_perturbation_prob=1.0, schema_perturbation_copies=1,
                schema_rename_variants=3, schema_rename_style="novel", schema_rename_table_fraction=1.0,
                schema_rename_column_fraction=1.0, seed=0)
    base.update(kw)
    return SimpleNamespace(**base)


def _sql_identifiers(sql: str) -> tuple[set[str], set[str]]:
    """(table names, column names) referenced by `sql`, lower case."""
    tree = parse_sql(sql)
    tables = {t.name.lower() for t in tree.find_all(exp.Table)}
    cols = {c.name.lower() for c in tree.find_all(exp.Column) if not isinstance(c.this, exp.Star)}
    return tables, cols


def _check_novel_renaming(schema: Schema, ren: A.Renaming, *, everything: bool) -> None:
    words = set()
    for t in schema.tables:
        words |= A._name_tokens(t.name)
        for c in t.columns:
            words |= A._name_tokens(c.name)
    olds = {t.name.lower() for t in schema.tables} | {c.name.lower() for t in schema.tables for c in t.columns}
    first_spelling: dict[str, str] = {}
    for t in schema.tables:
        for c in t.columns:
            first_spelling.setdefault(c.name.lower(), c.name)
    for kind, old, new in [("table", o, n) for o, n in ren.tables.items()] + \
            [("column", o, n) for o, n in ren.columns.items()]:
        assert old not in new.lower(), (old, new)                     # never contains the original
        assert IDENT.match(new), new                                   # a plain identifier
        assert new not in A._SQL_WORDS and new not in A._RESERVED, new
        parts = new.split("_")
        key = kind == "column" and A._is_key_column(first_spelling[old])
        assert (parts[-1] == "id") == key, (old, new)                 # key columns keep "_id", only they
        body = parts[:-1] if key else parts
        assert not set(body) & words, (old, new)                       # no word of the database's names
    if everything:
        assert set(ren.tables) == {t.name.lower() for t in schema.tables}
        assert set(ren.columns) == {c.name.lower() for t in schema.tables for c in t.columns}
    # unique within the database (renamed and kept names together, case-insensitive)
    renamed = A.rename_schema(schema, ren, "x")
    names = [t.name.lower() for t in renamed.tables]
    assert len(names) == len(set(names))
    for t in renamed.tables:
        cols = [c.name.lower() for c in t.columns]
        assert len(cols) == len(set(cols))
    new_names = list(ren.tables.values()) + list(ren.columns.values())
    assert len({n.lower() for n in new_names}) == len(new_names)
    assert not {n.lower() for n in new_names} & set(olds)


# ------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_novel_names_on_a_tiny_schema(seed):
    ren = A.make_renaming(TINY, random.Random(seed), p_table=1.0, p_column=1.0, style="novel")
    _check_novel_renaming(TINY, ren, everything=True)
    assert ren.columns["singer_id"].endswith("_id") and ren.columns["concert_id"].endswith("_id")
    assert not ren.columns["id"].endswith("_id")  # "id" itself is not a key-like suffix to keep


@needs_spider
@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_novel_names_on_every_spider_database(spider, fraction):
    everything = fraction == 1.0
    for db, schema in spider.schemas.items():
        for k in range(4):
            ren = A.variant_renaming(schema, db, k, 0, A.RenameSettings(4, 4, "novel", fraction, fraction))
            _check_novel_renaming(schema, ren, everything=everything)


@pytest.mark.parametrize("words", [A._NOVEL_NOUNS, A._NOVEL_ADJECTIVES])
def test_word_pool_is_plain_identifiers(words):
    assert len(words) >= 100 and len(set(words)) == len(words)
    for w in words + [f"harbor_{t}" for t in A._NOVEL_COLUMN_TAILS]:
        assert IDENT.match(w) and w not in A._SQL_WORDS, w
        sql = f"SELECT {w}, T1.{w}, COUNT({w}) FROM {w} AS T1 WHERE {w} > 1 GROUP BY {w} ORDER BY {w}"
        tree = parse_sql(sql)
        assert [t.name for t in tree.find_all(exp.Table)] == [w]
        assert to_sql(tree) == sql  # parses as a plain, unquoted identifier


def test_synonyms_style_is_the_default_and_unchanged():
    rs = A.RenameSettings.from_config(load_config(None).data)
    assert rs == A.RenameSettings(copies=1, variants=3, style="synonyms", p_table=0.6, p_column=0.5)
    ren = A.make_renaming(TINY, random.Random(0))
    assert ren == A.make_renaming(TINY, random.Random(0), p_table=0.6, p_column=0.5, style="synonyms")
    with pytest.raises(ValueError, match="not one of"):
        A.make_renaming(TINY, random.Random(0), style="weird")


# ------------------------------------------------------------------------------------------
# SQL and schema move together; the rows stay the same
# ------------------------------------------------------------------------------------------
@needs_spider
def test_renamed_sql_uses_only_renamed_schema_names(spider):
    exs = random.Random(5).sample(spider.train, 1500)
    checked = 0
    for e in exs:
        schema = spider.schemas[e.db_id]
        for k in (0, 3):
            ren = A.variant_renaming(schema, e.db_id, k, 0, NOVEL_ALL)
            new_schema = A.rename_schema(schema, ren, f"{e.db_id}__r{k}")
            tables = {t.name for t in new_schema.tables}
            cols = {c.name for t in new_schema.tables for c in t.columns}
            assert set(ren.tables.values()) <= tables and set(ren.columns.values()) <= cols
            sql = A.rename_sql(e.query, ren, schema)
            if sql is None:
                continue
            t_used, c_used = _sql_identifiers(sql)
            assert not t_used & set(ren.tables), (e.query, sql)
            assert not c_used & set(ren.columns), (e.query, sql)
            assert t_used <= {t.lower() for t in tables} | {
                a.lower() for a in A._table_aliases(parse_sql(sql))}, (e.query, sql)
            checked += 1
    assert checked >= 2900  # (1500 examples x 2 variants; only column aliases named like a column refused)


@needs_spider
@pytest.mark.parametrize("db", ["aircraft", "department_store", "flight_1", "flight_2", "flight_4",
                                "pilot_record", "singer"])
def test_novel_renamed_sql_returns_the_same_rows_on_real_databases(spider, tmp_path, db):
    schema = spider.schemas[db]
    exs = [e for e in spider.train + spider.dev if e.db_id == db]
    assert exs
    for k in range(1 if db == "flight_4" else 2):  # flight_4 is the large one
        ren = A.variant_renaming(schema, db, k, 0, NOVEL_ALL)
        copy = A.rename_database(spider.db_path(db), tmp_path / f"{db}__r{k}.sqlite", ren, schema)
        renamed = A.rename_schema(schema, ren, f"{db}__r{k}")
        assert {t.name.lower() for t in Schema.from_sqlite(copy).tables} == {t.name.lower() for t in renamed.tables}
        for e in exs:
            sql = A.rename_sql(e.query, ren, schema)
            assert sql is not None, e.query
            assert A.same_results(e.query, e.db_path, sql, copy), (e.query, sql)
            # and the original's names are really gone from the renamed database
            assert not run_sql(copy, e.query, timeout_s=5.0).ok, e.query


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_augment_examples_executes_on_a_renamed_tiny_database(tmp_path, tiny_db, fraction):
    exs = _tiny_examples(tiny_db)
    stats = A.AugmentStats()
    cfg = _cfg(schema_perturbation_copies=2, schema_rename_table_fraction=fraction,
               schema_rename_column_fraction=fraction)
    out, schemas = A.augment_examples(exs, {"music": TINY}, cfg, random.Random(0),
                                      db_dir=tmp_path / "renamed", stats=stats)
    added = out[len(exs):]
    assert len(added) == 2 * len(exs) and stats.renamed == stats.rename_tried == len(added)
    assert not stats.rejected
    for e in added:
        orig = exs[int(e.extra["orig_id"].split("/")[1])]
        assert e.db_path and e.db_path.startswith(str(tmp_path / "renamed")) and e.db_path != orig.db_path
        assert A.same_results(orig.query, orig.db_path, e.query, e.db_path), (orig.query, e.query)
        assert {t.name for t in Schema.from_sqlite(e.db_path).tables} == {t.name for t in schemas[e.db_id].tables}


def test_wrong_renamed_sql_is_rejected(tmp_path, tiny_db, monkeypatch):
    """The verification is real: a renamed SQL that returns other rows is refused on the
    renamed database, one that names the old tables is refused by the compile check."""
    real = A.rename_sql
    monkeypatch.setattr(A, "rename_sql", lambda sql, ren, schema: real(sql, ren, schema).replace("2015", "2014"))
    stats = A.AugmentStats()
    A.augment_examples(_tiny_examples(tiny_db), {"music": TINY}, _cfg(), random.Random(0),
                       db_dir=tmp_path / "r", stats=stats)
    assert stats.rejected == {"rename: different rows": 1}  # the one query with 2015 in it
    monkeypatch.setattr(A, "rename_sql", lambda sql, ren, schema: sql)  # original names: do not compile
    stats = A.AugmentStats()
    out, _ = A.augment_examples(_tiny_examples(), {"music": TINY}, _cfg(), random.Random(0), stats=stats)
    assert len(out) == len(TINY_EXAMPLES) and stats.rejected == {"rename: does not compile": len(TINY_EXAMPLES)}


@needs_spider
def test_rejections_on_spider_are_only_broken_originals(spider):
    """novel + fraction 1.0 + 4 copies on a sample of Spider train (schema-only compile check):
    every rejected copy comes from an original query that does not compile itself."""
    from vantage_core.sql.execution import valid_sql
    exs = random.Random(11).sample(spider.train, 1200)
    stats = A.AugmentStats()
    out, _ = A.augment_examples(exs, spider.schemas, _cfg(schema_perturbation_copies=4), random.Random(0),
                                stats=stats)
    broken = sum(1 for e in exs if not valid_sql(e.query, spider.schemas[e.db_id])[0])
    assert stats.rename_tried == 4 * len(exs)
    assert sum(stats.rejected.values()) <= 4 * broken
    assert len(out) - len(exs) == stats.renamed >= 4 * (len(exs) - broken)


# ------------------------------------------------------------------------------------------
# copies and determinism
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("copies,variants", [(1, 3), (2, 3), (3, 3), (4, 3), (4, 8)])
def test_copies_are_distinct_variants(copies, variants):
    exs = _tiny_examples()
    cfg = _cfg(schema_perturbation_copies=copies, schema_rename_variants=variants)
    out, schemas = A.augment_examples(exs, {"music": TINY}, cfg, random.Random(1))
    by_orig = defaultdict(list)
    for e in out[len(exs):]:
        by_orig[e.extra["orig_id"]].append(e)
    assert len(by_orig) == len(exs)
    used = set()
    for orig_id, copies_ in by_orig.items():
        assert len(copies_) == copies
        assert len({e.db_id for e in copies_}) == copies              # different variants
        assert len({e.query for e in copies_}) == copies              # with different names
        assert len({e.id for e in copies_}) == copies
        used |= {int(e.db_id.rsplit("__r", 1)[1]) for e in copies_}
    assert used <= set(range(max(copies, variants)))
    for vid in {e.db_id for e in out[len(exs):]}:
        assert schemas[vid].db_id == vid
    tables = {tuple(t.name for t in schemas[v].tables) for v in schemas if v != "music"}
    assert len(tables) == len(schemas) - 1                            # every variant its own names


@pytest.mark.parametrize("style", ["novel", "synonyms"])
def test_deterministic_given_the_seed(style):
    def run(seed):
        out, schemas = A.augment_examples(_tiny_examples(), {"music": TINY},
                                          _cfg(schema_rename_style=style, schema_perturbation_copies=3, seed=seed),
                                          random.Random(seed))
        return [(e.id, e.db_id, e.question, e.query) for e in out], {k: v.to_dict() for k, v in schemas.items()}
    assert run(0) == run(0)
    assert run(0) != run(1)


# ------------------------------------------------------------------------------------------
# the question follows
# ------------------------------------------------------------------------------------------
REN = A.Renaming(tables={"singer": "blue_ledger", "concert": "harbor", "highschooler": "maple",
                         "country": "ferry"},
                 columns={"singer_id": "cedar_id", "name": "quill", "age": "lantern_count", "year": "tundra",
                          "concert_name": "otter", "id": "topaz", "grade": "sparrow", "country": "pebble"})
Q_SCHEMA = Schema("music", TINY.tables + [Table("country", [Column("country_id", "number", True)])])


@pytest.mark.parametrize("question,sql,expected", [
    ("How many singers do we have?", None, "How many blue ledgers do we have?"),
    ("Singers older than 30?", None, "Blue ledgers older than 30?"),                        # capitalized
    ("What is the singer id of each singer?", None, "What is the cedar id of each blue ledger?"),  # spaces
    ("Give the singer_id of Joe.", None, "Give the cedar_id of Joe."),                     # underscores
    ("Show the SINGER ID.", None, "Show the cedar id."),                                   # all caps
    ("What are the names and ages of singers?", None, "What are the quills and lantern counts of blue ledgers?"),
    ("List the high schoolers in grade 9.", None, "List the maples in sparrow 9."),         # camelCase
    ("How many countries are there?", None, "How many ferries are there?"),                # -y -> -ies
    ("Concert names in 2015, by year", None, "Otters in 2015, by tundra"),                  # longest first
    ('Singers named "Name Age"', None, 'Blue ledgers named "Name Age"'),                   # quoted span kept
    ("Age of the singer Tony Singer?", "SELECT age FROM singer WHERE name = 'Tony Singer'",
     "Lantern count of the blue ledger Tony Singer?"),                                     # SQL value kept
    ("What is the id?", None, "What is the id?"),                                          # too short: kept
])
def test_question_mentions_are_renamed(question, sql, expected):
    assert A.rename_question(question, REN, Q_SCHEMA, sql) == expected


def test_plural_table_mentioned_in_the_singular():
    schema = Schema("shop", [Table("orders", [Column("order_id", "number", True), Column("shipment_tracking_number")])])
    ren = A.Renaming(tables={"orders": "chapel"}, columns={"order_id": "osprey_id", "shipment_tracking_number": "pier"})
    assert A.rename_question("Which order's shipment tracking number is 3452? List all orders.", ren, schema) == \
        "Which chapel's pier is 3452? List all chapel."


def test_augmented_question_and_sql_agree_on_tiny():
    exs = _tiny_examples()
    out, schemas = A.augment_examples(exs, {"music": TINY}, _cfg(schema_perturbation_copies=2), random.Random(3))
    for e in out[len(exs):]:
        orig = exs[int(e.extra["orig_id"].split("/")[1])]
        schema = schemas[e.db_id]
        mentioned = {t.name for t in schema.tables} | {c.name for t in schema.tables for c in t.columns}
        # no renamed original mention left in the question (values kept: "Tony Award", "France")
        for word in ("singer", "concert", "high schooler"):
            if word in orig.question.lower():
                assert word not in e.question.lower(), (orig.question, e.question)
        assert "Tony Award" in e.question or "Tony Award" not in orig.question
        assert any(n.replace("_", " ") in e.question.lower() for n in mentioned), e.question


# ------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------
def test_config_keys_and_validation(tmp_path):
    cfg = load_config(None, ["data.schema_rename_style=novel", "data.schema_perturbation_copies=4",
                             "data.schema_rename_table_fraction=1.0", "data.schema_rename_column_fraction=1"])
    d = cfg.data
    assert (d.schema_rename_style, d.schema_perturbation_copies, d.schema_rename_variants) == ("novel", 4, 3)
    assert A.RenameSettings.from_config(d) == A.RenameSettings(4, 4, "novel", 1.0, 1.0)  # variants >= copies
    y = tmp_path / "c.yaml"
    y.write_text("data:\n  schema_rename_style: novel\n  schema_rename_variants: 6\n")
    assert load_config(y).data.schema_rename_variants == 6


@pytest.mark.parametrize("key,value,message", [
    ("schema_rename_style", "random", "not one of synonyms, novel"),
    ("schema_rename_style", 1, "not one of synonyms, novel"),
    ("schema_perturbation_copies", 0, "must be >= 1"),
    ("schema_perturbation_copies", "four", "expected an integer"),
    ("schema_perturbation_copies", 1.5, "expected an integer"),
    ("schema_rename_variants", -1, "must be >= 1"),
    ("schema_rename_table_fraction", 1.2, r"must be in \[0, 1\]"),
    ("schema_rename_column_fraction", "half", "expected a number"),
    ("schema_rename_copies", 2, "unknown key 'data.schema_rename_copies'"),
])
def test_config_rejects_bad_values(key, value, message):
    with pytest.raises(ConfigError, match=message) as ei:
        load_config(None, {"data": {key: value}})
    assert f"data.{key}" in str(ei.value)


def test_config_rejects_nothing_to_rename():
    with pytest.raises(ConfigError, match="both 0"):
        load_config(None, {"data": {"schema_rename_table_fraction": 0, "schema_rename_column_fraction": 0.0}})


@pytest.mark.parametrize("keep", [True, False])
def test_keep_original_false_replaces_originals_by_their_copies(keep, spider):
    """schema_perturbation_keep_original: false drops each original that got renamed copies,
    and keeps an original whose every copy was rejected (nothing is lost)."""
    from random import Random
    from types import SimpleNamespace
    from vantage_core.data.augment import AugmentStats, augment_examples
    exs = [e for e in spider.train if e.db_id == "department_management"][:30]
    cfg = SimpleNamespace(augmentation_prob=0.0, schema_perturbation_prob=1.0, schema_perturbation_copies=2,
                          schema_rename_variants=3, schema_rename_style="novel", schema_rename_table_fraction=1.0,
                          schema_rename_column_fraction=1.0, schema_perturbation_keep_original=keep, seed=0)
    stats = AugmentStats()
    out, _ = augment_examples(exs, spider.schemas, cfg, Random(0), stats=stats)
    originals = [e for e in out if "__r" not in e.db_id]
    renamed_from = {e.extra["orig_id"] for e in out if "__r" in e.db_id}
    assert stats.renamed == len(out) - len(originals) > 0
    if keep:
        assert len(originals) == len(exs) and stats.dropped_originals == 0
    else:
        assert stats.dropped_originals == len(renamed_from)
        assert {e.id for e in originals} == {e.id for e in exs} - renamed_from
