"""score_examples, the Wilson interval and the `vantage-eval score` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vantage_core.cli.eval import main
from vantage_core.data.readers import load_spider_tables
from vantage_core.errors import DataError
from vantage_core.sql.execution import valid_sql
from vantage_core.eval.metrics import SUMMARY_COLUMNS, proportion_ci, score_examples

SPIDER = Path(__file__).resolve().parents[2] / "shared/data/spider"
needs_spider = pytest.mark.skipif(not (SPIDER / "dev_gold.sql").is_file(),
                                  reason="Spider data not available under ../shared/data/spider")
REAL_DEV_DBS = ("flight_2", "singer")


@pytest.fixture(scope="module")
def spider():
    if not (SPIDER / "dev_gold.sql").is_file():
        pytest.skip("Spider data not available")
    schemas = load_spider_tables(SPIDER / "tables.json")
    golds = [tuple(l.split("\t")) for l in (SPIDER / "dev_gold.sql").read_text().splitlines() if l.strip()]
    return schemas, golds


@pytest.fixture(autouse=True)
def _schema_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VANTAGE_SCHEMA_DB_DIR", str(tmp_path_factory.getbasetemp() / "schema_dbs"))


# --- Wilson interval ------------------------------------------------------------------------
@pytest.mark.parametrize("k,n,lo,hi", [
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (5, 10, 0.2366, 0.7634),
    (81, 100, 0.7222, 0.8749),
])
def test_proportion_ci_known_values(k, n, lo, hi):
    got = proportion_ci(k, n)
    assert got[0] == pytest.approx(lo, abs=1e-4) and got[1] == pytest.approx(hi, abs=1e-4)
    assert got[0] <= k / n <= got[1]


def test_proportion_ci_edges():
    assert proportion_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        proportion_ci(3, 2)
    narrow, wide = proportion_ci(500, 1000), proportion_ci(5, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


# --- dev set --------------------------------------------------------------------------------
@needs_spider
def test_dev_gold_is_valid_sql_on_schema_only_dbs(spider):
    schemas, golds = spider
    bad = [(db, q, r) for q, db in golds for ok, r in [valid_sql(q, schemas[db])] if not ok]
    assert bad == [], bad[:5]


@needs_spider
def test_score_dev_gold_against_itself(spider):
    schemas, golds = spider
    verdicts, summary = score_examples(golds, [q for q, _ in golds], schemas, SPIDER / "database")
    assert len(verdicts) == 1034
    assert all(v["exact_match"] and v["valid_sql"] for v in verdicts)
    covered = [v for v in verdicts if v["execution_match"] is not None]
    assert {v["db_id"] for v in covered} == set(REAL_DEV_DBS)
    assert len(covered) == 110 and all(v["execution_match"] for v in covered)
    assert all(v["execution_match"] is None for v in verdicts if v["db_id"] not in REAL_DEV_DBS)
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(summary.index) == ["easy", "medium", "hard", "extra", "all"]
    assert summary.loc["all", "count"] == 1034 and summary.loc["all", "execution_count"] == 110
    assert summary.loc[["easy", "medium", "hard", "extra"], "count"].tolist() == [248, 446, 174, 166]
    assert summary.loc["all", "exact_match"] == 1.0 and summary.loc["all", "valid_sql"] == 1.0
    print(summary)


@needs_spider
def test_execution_on_real_dev_dbs_with_wrong_predictions(spider):
    schemas, golds = spider
    pairs = [(q, db) for q, db in golds if db in REAL_DEV_DBS]
    # even examples: the gold itself; odd ones: another question's gold on the same database
    # (dev questions come in paraphrase pairs, so skip two ahead): mostly different answers
    preds = [q if i % 2 == 0 else pairs[(i + 2) % len(pairs)][0] for i, (q, _) in enumerate(pairs)]
    verdicts, summary = score_examples(pairs, preds, schemas, SPIDER / "database")
    ex = [v["execution_match"] for v in verdicts]
    assert None not in ex
    assert all(v["exact_match"] and v["execution_match"] for v in verdicts[::2])
    wrong = ex[1::2]
    assert 0 < sum(wrong) < len(wrong) // 2
    em = sum(v["exact_match"] for v in verdicts)
    assert summary.loc["all", "exact_match"] == pytest.approx(em / len(pairs))
    assert summary.loc["all", "execution"] == pytest.approx(sum(ex) / len(ex))
    assert summary.loc["all", "execution_count"] == len(pairs) == 110


def test_score_examples_rejects_misaligned_or_unknown(spider):
    schemas, golds = spider
    with pytest.raises(DataError):
        score_examples(golds[:3], ["SELECT 1"], schemas, None)
    with pytest.raises(DataError, match="unknown db_id"):
        score_examples([("SELECT 1", "no_such_db")], ["SELECT 1"], schemas, None)


def test_empty_and_garbage_predictions_score_zero(spider):
    schemas, golds = spider
    v, s = score_examples(golds[:3], ["", "SELECT FROM WHERE", "DROP TABLE singer"], schemas, None)
    assert [x["exact_match"] for x in v] == [False, False, False]
    assert [x["valid_sql"] for x in v] == [False, False, False]
    assert s.loc["all", "exact_match"] == 0.0 and math.isnan(s.loc["all", "execution"])


# --- CLI ------------------------------------------------------------------------------------
def _write_inputs(tmp_path, golds, preds):
    g, p = tmp_path / "gold.sql", tmp_path / "pred.sql"
    g.write_text("".join(f"{q}\t{db}\n" for q, db in golds))
    p.write_text("".join(f"{q}\n" for q in preds))
    return g, p


@needs_spider
def test_cli_score_end_to_end(spider, tmp_path, capsys):
    _, golds = spider
    sample = golds[:4] + [x for x in golds if x[1] == "singer"][:4]
    preds = [q for q, _ in sample]
    preds[1] = "SELECT count(*) FROM concert"  # wrong
    preds[5] = "SELECT nonsense FROM"  # invalid
    g, p = _write_inputs(tmp_path, sample, preds)
    out = tmp_path / "out" / "verdicts.jsonl"
    rc = main(["score", "--gold", str(g), "--pred", str(p), "--db", str(SPIDER / "database"),
               "--tables", str(SPIDER / "tables.json"), "--out", str(out)])
    assert rc == 0
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(lines) == 8
    assert [l["exact_match"] for l in lines] == [True, False, True, True, True, False, True, True]
    assert lines[5]["valid_sql"] is False and lines[5]["execution_match"] is False
    assert [l["execution_match"] is None for l in lines[:4]] == [True] * 4  # concert_singer: no file
    assert all(l["execution_match"] for i, l in enumerate(lines[4:]) if i != 1)
    printed = capsys.readouterr().out
    assert "all" in printed and "75.0%" in printed and "exec n" in printed


@needs_spider
@pytest.mark.parametrize("case", ["missing gold", "count mismatch", "bad gold line", "unknown db",
                                  "missing tables", "bad db dir", "missing argument", "generate mode"])
def test_cli_bad_input_is_one_line_exit_2(case, spider, tmp_path, capsys):
    _, golds = spider
    g, p = _write_inputs(tmp_path, golds[:3], [q for q, _ in golds[:3]])
    tables, dbdir = str(SPIDER / "tables.json"), str(SPIDER / "database")
    args = ["score", "--gold", str(g), "--pred", str(p), "--tables", tables, "--db", dbdir]
    if case == "missing gold":
        args[2] = str(tmp_path / "absent.sql")
    elif case == "count mismatch":
        p.write_text("SELECT 1\n")
    elif case == "bad gold line":
        g.write_text("SELECT 1 no tab here\n")
    elif case == "unknown db":
        g.write_text("SELECT 1\tno_such_db\n")
        p.write_text("SELECT 1\n")
    elif case == "missing tables":
        args[6] = str(tmp_path / "absent.json")
    elif case == "bad db dir":
        args[8] = str(tmp_path / "nowhere")
    elif case == "missing argument":
        args = args[:3]
    elif case == "generate mode":
        args = ["--checkpoint", str(tmp_path / "ckpt"), "--data_dir", str(SPIDER)]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    if case == "generate mode":
        assert "not a Vantage checkpoint" in err


def test_table_name_sources_tells_copied_from_recalled_names():
    from vantage_core.data.schema import Column, Schema, Table
    from vantage_core.eval.scoring import table_name_sources
    schemas = {"dev_db": Schema("dev_db", [Table("singer", [Column("name", "text", False)])]),
               "train_db": Schema("train_db", [Table("cinema", [Column("name", "text", False)])])}
    preds = ["SELECT count(*) FROM singer", "SELECT name FROM cinema JOIN stadiment ON 1", "garbage"]
    r = table_name_sources(preds, ["dev_db"] * 3, schemas, {"train_db"})
    assert r["n"] == 3
    assert (r["own"], r["train_only"], r["invented"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert table_name_sources(["nothing"], ["dev_db"], schemas, {"train_db"})["own"] == 0.0
