"""Spider exact set match and hardness: agreement with the official evaluator's verdicts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from vantage_core.data.readers import load_spider_tables
from vantage_core.data.schema import Column, ForeignKey, Schema, Table
from vantage_core.errors import DataError
from vantage_core.eval.exact_match import (SQLParseError, cache_info, exact_match, hardness,
                                           parse_components)

SPIDER = Path(__file__).resolve().parents[2] / "shared/data/spider"
needs_spider = pytest.mark.skipif(not (SPIDER / "em_calibration.jsonl").is_file(),
                                  reason="Spider data not available under ../shared/data/spider")


@pytest.fixture(scope="module")
def schemas():
    if not (SPIDER / "tables.json").is_file():
        pytest.skip("Spider tables.json not available")
    return load_spider_tables(SPIDER / "tables.json")


def _singer_schema() -> Schema:
    """A small schema (concert_singer-like) so the hand-made cases run without the data."""
    return Schema("toy", [
        Table("singer", [Column("singer_id", "number", True), Column("name"), Column("country"),
                         Column("age", "number"), Column("song_name")]),
        Table("concert", [Column("concert_id", "number", True), Column("concert_name"),
                          Column("year", "number"), Column("stadium_id", "number")]),
        Table("singer_in_concert", [Column("concert_id", "number", True), Column("singer_id", "number")]),
    ], [ForeignKey("singer_in_concert", "singer_id", "singer", "singer_id"),
        ForeignKey("singer_in_concert", "concert_id", "concert", "concert_id")])


TOY = _singer_schema()


# --- official verdicts --------------------------------------------------------------------------
@needs_spider
def test_calibration_agrees_with_official_evaluator(schemas):
    rows = [json.loads(line) for line in (SPIDER / "em_calibration.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 1605
    em_bad, hard_bad = [], []
    for r in rows:
        s = schemas[r["db_id"]]
        got = exact_match(r["gold"], r["pred"], s)
        if got != r["exact_match"]:
            em_bad.append((r["exact_match"], got, r["gold"], r["pred"]))
        h = hardness(r["gold"], s)
        if h != r["hardness"]:
            hard_bad.append((r["hardness"], h, r["gold"]))
    for d in em_bad[:20]:
        print("EM disagreement (official, ours):", d)
    for d in hard_bad[:20]:
        print("hardness disagreement (official, ours):", d)
    assert not em_bad, f"{len(em_bad)} exact-match disagreements with the official evaluator"
    assert not hard_bad, f"{len(hard_bad)} hardness disagreements with the official evaluator"
    # the calibration set really exercises both verdicts
    assert Counter(r["exact_match"] for r in rows) == Counter({True: 813, False: 792})


@needs_spider
def test_dev_gold_self_match_and_hardness_counts(schemas):
    lines = [l.split("\t") for l in (SPIDER / "dev_gold.sql").read_text().splitlines() if l.strip()]
    assert len(lines) == 1034
    failures = [(db, q) for q, db in lines if not exact_match(q, q, schemas[db])]
    assert failures == []
    counts = Counter(hardness(q, schemas[db]) for q, db in lines)
    print("dev hardness counts:", dict(counts))
    # Spider's published dev-set distribution
    assert counts == Counter({"easy": 248, "medium": 446, "hard": 174, "extra": 166})


@needs_spider
def test_parse_cache_is_used(schemas):
    q, s = "SELECT count(*) FROM singer WHERE age > 20", schemas["concert_singer"]
    parse_components(q, s)
    before = cache_info().hits
    parse_components(q, s)
    assert cache_info().hits == before + 1


# --- hand-made pairs ----------------------------------------------------------------------------
MATCH = [
    ("reordered select", "SELECT name, country, age FROM singer", "SELECT age, name, country FROM singer"),
    ("reordered AND", "SELECT name FROM singer WHERE age > 20 AND country = 'France'",
     "SELECT name FROM singer WHERE country = 'France' AND age > 20"),
    ("other aliases", "SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT s.name FROM singer s JOIN singer_in_concert AS x ON x.singer_id = s.singer_id"),
    ("qualified vs unqualified", "SELECT name FROM singer WHERE age > 30", "SELECT singer.name FROM singer WHERE singer.age > 30"),
    ("other literal", "SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country = 'Spain'"),
    ("other number", "SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer WHERE age > 45"),
    ("single vs double quotes", "SELECT name FROM singer WHERE country = 'France'",
     'SELECT name FROM singer WHERE country = "France"'),
    ("keyword case and spacing", "SELECT name FROM singer ORDER BY age DESC LIMIT 1",
     "select   NAME from SINGER order by AGE desc limit 1;"),
    ("limit number", "SELECT name FROM singer ORDER BY age LIMIT 1", "SELECT name FROM singer ORDER BY age LIMIT 3"),
    ("DISTINCT ignored", "SELECT DISTINCT country FROM singer", "SELECT country FROM singer"),
    ("count DISTINCT ignored", "SELECT count(DISTINCT country) FROM singer", "SELECT count(country) FROM singer"),
    ("select alias in ORDER BY", "SELECT country, count(*) FROM singer GROUP BY country ORDER BY count(*) DESC",
     "SELECT country, count(*) AS n FROM singer GROUP BY country ORDER BY n DESC"),
    ("<> is !=", "SELECT name FROM singer WHERE country != 'France'", "SELECT name FROM singer WHERE country <> 'France'"),
    ("join condition not compared", "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.name = T2.concert_id"),
    ("foreign-key columns identified", "SELECT T2.singer_id FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id",
     "SELECT T1.singer_id FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id"),
    ("set operation", "SELECT name FROM singer WHERE age > 40 UNION SELECT name FROM singer WHERE age < 20",
     "SELECT name FROM singer WHERE age > 41 UNION SELECT name FROM singer WHERE age < 21"),
    ("nested subquery value", "SELECT name FROM singer WHERE age > (SELECT avg(age) FROM singer)",
     "SELECT name FROM singer WHERE age > ( SELECT avg(age) FROM singer )"),
]

NO_MATCH = [
    ("other column", "SELECT name FROM singer", "SELECT country FROM singer"),
    ("other aggregate", "SELECT max(age) FROM singer", "SELECT min(age) FROM singer"),
    ("count vs max", "SELECT count(*) FROM singer", "SELECT max(*) FROM singer"),
    ("ORDER direction", "SELECT name FROM singer ORDER BY age DESC", "SELECT name FROM singer ORDER BY age ASC"),
    ("missing GROUP BY", "SELECT country, count(*) FROM singer GROUP BY country", "SELECT country, count(*) FROM singer"),
    ("extra condition", "SELECT name FROM singer WHERE age > 20",
     "SELECT name FROM singer WHERE age > 20 AND country = 'France'"),
    ("missing WHERE", "SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer"),
    ("AND vs OR", "SELECT name FROM singer WHERE age > 20 AND country = 'a'",
     "SELECT name FROM singer WHERE age > 20 OR country = 'a'"),
    ("other operator", "SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer WHERE age < 20"),
    ("NOT IN vs IN", "SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM singer_in_concert)",
     "SELECT name FROM singer WHERE singer_id IN (SELECT singer_id FROM singer_in_concert)"),
    ("extra table", "SELECT name FROM singer", "SELECT T1.name FROM singer AS T1 JOIN concert AS T2"),
    ("missing LIMIT", "SELECT name FROM singer ORDER BY age LIMIT 1", "SELECT name FROM singer ORDER BY age"),
    ("UNION vs INTERSECT", "SELECT name FROM singer WHERE age > 40 UNION SELECT name FROM singer WHERE age < 20",
     "SELECT name FROM singer WHERE age > 40 INTERSECT SELECT name FROM singer WHERE age < 20"),
    ("unknown column", "SELECT name FROM singer", "SELECT nme FROM singer"),
    ("unparsable", "SELECT name FROM singer", "SELECT name FROM singer WHERE ((("),
    ("two statements", "SELECT name FROM singer", "SELECT name FROM singer; DROP TABLE singer"),
    ("not a query", "SELECT name FROM singer", "DROP TABLE singer"),
    ("empty", "SELECT name FROM singer", ""),
]


@pytest.mark.parametrize("why,gold,pred", MATCH, ids=[m[0] for m in MATCH])
def test_pairs_that_match(why, gold, pred):
    assert exact_match(gold, pred, TOY), why
    assert exact_match(pred, gold, TOY), why + " (symmetric)"


@pytest.mark.parametrize("why,gold,pred", NO_MATCH, ids=[m[0] for m in NO_MATCH])
def test_pairs_that_do_not_match(why, gold, pred):
    assert exact_match(gold, pred, TOY) is False, why


@pytest.mark.parametrize("gold,pred,values,distinct", [
    ("SELECT name FROM singer WHERE country = 'France'", "SELECT name FROM singer WHERE country = 'Spain'", False, True),
    ("SELECT name FROM singer WHERE age > 20", "SELECT name FROM singer WHERE age > 21", False, True),
    ("SELECT name FROM singer ORDER BY age LIMIT 1", "SELECT name FROM singer ORDER BY age LIMIT 3", False, True),
    ("SELECT DISTINCT country FROM singer", "SELECT country FROM singer", True, False),
    ("SELECT count(DISTINCT country) FROM singer", "SELECT count(country) FROM singer", True, False),
])
def test_flags_turn_comparisons_on(gold, pred, values, distinct):
    assert exact_match(gold, pred, TOY)  # default: not compared
    assert exact_match(gold, pred, TOY, compare_values=True) is values
    assert exact_match(gold, pred, TOY, compare_distinct=True) is distinct


def test_flags_keep_equal_values_matching():
    g = "SELECT name FROM singer WHERE country = 'France' AND age > 20"
    p = 'SELECT name FROM singer WHERE age > 20.0 AND country = "France"'
    assert exact_match(g, p, TOY, compare_values=True, compare_distinct=True)


def test_double_quoted_token_is_column_when_it_names_one():
    lit = parse_components('SELECT name FROM singer WHERE country = "France"', TOY)["where"][0]
    col = parse_components('SELECT name FROM singer WHERE name = "country"', TOY)["where"][0]
    assert lit[3] == '"France"'
    assert col[3] == (0, "__singer.country__", False)
    assert not exact_match("SELECT name FROM singer WHERE name = 'country'",
                           'SELECT name FROM singer WHERE name = "country"', TOY, compare_values=True)


def test_components_resolve_aliases_and_unqualified_columns():
    sql = parse_components(
        "SELECT s.name, count(*) FROM singer s JOIN singer_in_concert AS c ON s.singer_id = c.singer_id "
        "WHERE age > 1 GROUP BY s.name ORDER BY count(*) DESC LIMIT 2", TOY)
    assert sql["select"][1] == [(0, (0, (0, "__singer.name__", False), None)),
                                (3, (0, (0, "__all__", False), None))]
    assert sql["from"]["table_units"] == [("table_unit", "__singer__"), ("table_unit", "__singer_in_concert__")]
    assert sql["where"] == [(False, 3, (0, (0, "__singer.age__", False), None), 1.0, None)]
    assert sql["groupBy"] == [(0, "__singer.name__", False)]
    assert sql["orderBy"] == ("desc", [(0, (3, "__all__", False), None)])
    assert sql["limit"] == 2


@pytest.mark.parametrize("sql,level", [
    ("SELECT count(*) FROM singer", "easy"),
    ("SELECT name FROM singer WHERE age > 20", "easy"),
    ("SELECT name, country FROM singer ORDER BY age DESC", "medium"),
    ("SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.singer_id = T2.singer_id "
     "GROUP BY T1.name ORDER BY count(*) DESC LIMIT 1", "extra"),
    ("SELECT name FROM singer WHERE singer_id NOT IN (SELECT singer_id FROM singer_in_concert)", "hard"),
    ("SELECT name FROM singer WHERE age > 40 UNION SELECT name FROM singer WHERE age < 20", "hard"),
])
def test_hardness_examples(sql, level):
    assert hardness(sql, TOY) == level


def test_hardness_of_unparsable_is_a_data_error():
    with pytest.raises(DataError):
        hardness("SELECT nope FROM nowhere", TOY)
    with pytest.raises(SQLParseError):
        parse_components("SELECT FROM", TOY)


@pytest.mark.parametrize("garbage", ["", ";", "SELECT", "SELECT * FROM", "))((", "SELECT 'unterminated",
                                     "SELECT a FROM singer WHERE", "WITH x AS (SELECT 1) SELECT * FROM x",
                                     "SELECT \x00 FROM singer", "SELECT " + "(" * 300 + "1" + ")" * 300])
def test_unparsable_pred_is_never_a_match_and_never_raises(garbage):
    assert exact_match("SELECT name FROM singer", garbage, TOY) is False
