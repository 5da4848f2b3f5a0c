"""Loaders (BIRD, WikiSQL, Gretel), SQL normalization, preprocess on small fixtures: corrupt
input skipped and counted, cache, split, workers, and the processed folder in prepare_data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_data_fixtures import (WIKI_QUESTIONS, gretel_record, write_bird, write_gretel, write_spider,
                                write_wikisql)
from vantage_core.config import load_config
from vantage_core.data.bird import load_bird
from vantage_core.data.gretel import load_gretel, materialize_db
from vantage_core.data.preprocess import preprocess
from vantage_core.data.prepare import prepare_data
from vantage_core.sql.parse import SQLParseError, normalize_sql
from vantage_core.data.wikisql import AGG_OPS, COND_OPS, load_wikisql, wikisql_to_sql
from vantage_core.sql.execution import run_sql


def small_cfg(**data):
    over = {"data": {"validation_fraction": 0.25, "tokenizer_vocab_size": 300, **data},
            "model": {"vocab_size": 512}, "training": {"max_seq_length": 256}}
    return load_config(None, over)


# ------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------
def test_bird_loader(tmp_path):
    sp = load_bird(write_bird(tmp_path / "bird"))
    assert (len(sp.train), len(sp.dev), sp.skipped) == (4, 2, [])
    e = sp.train[0]
    assert (e.source, e.db_id, e.split) == ("bird", "shop_a", "train")
    assert e.evidence == "Paris refers to city = 'Paris'"
    assert sp.dev[0].extra == {"question_id": 0, "difficulty": "simple"}
    # composite/list primary keys as BIRD writes them are read
    assert [c.name for c in sp.schemas["shop_a"].tables[1].columns if c.primary_key] == ["staff_id"]
    assert sp.extras["descriptions"]["shop_a"][("shop", "city")].startswith("the city where")
    for ex in sp.train + sp.dev:
        r = run_sql(sp.db_path(ex.db_id), ex.query)
        assert r.ok and r.rows


def test_wikisql_loader_sql_text_executes(tmp_path):
    assert AGG_OPS == ["", "MAX", "MIN", "COUNT", "SUM", "AVG"] and COND_OPS == ["=", ">", "<", "OP"]
    sp = load_wikisql(write_wikisql(tmp_path / "wikisql"), db_dir=tmp_path / "dbs")
    assert (len(sp.train), len(sp.dev), sp.skipped) == (4, 4, [])
    got = {e.question: (e.query, run_sql(e.db_path, e.query).rows) for e in sp.train}
    q, rows = got["Tell me what the notes are for South Australia"]
    assert q == 'SELECT "Notes" FROM table_1_1000181_1 WHERE "Current slogan" = \'SOUTH AUSTRALIA\''
    assert rows == [("No slogan on current series",)]
    assert got["How many players wore a number above 10?"] == (
        'SELECT COUNT("Player") FROM table_1_10015132_11 WHERE "No." > 10', [(2,)])
    # lower-cased condition values still match (text columns are COLLATE NOCASE)
    assert got["What position does number 21 play?"][1] == [("Guard-Forward",)]
    assert sp.schemas["1-10015132-11"].tables[0].columns[1].type == "number"


@pytest.mark.parametrize("sql,err", [
    ({"sel": 9, "agg": 0, "conds": []}, "sel column"),
    ({"sel": 0, "agg": 0, "conds": [[0, 3, "x"]]}, "operator"),
    ({"sel": 0, "agg": 7, "conds": []}, "agg"),
])
def test_wikisql_malformed_structured_sql(sql, err):
    from test_data_fixtures import WIKI_TABLES
    with pytest.raises(ValueError, match=err):
        wikisql_to_sql(sql, WIKI_TABLES[1])


def test_gretel_loader_runs_context(tmp_path):
    bad = [gretel_record(50, sql="SELEC broken"), gretel_record(51, sql_context="CREATE TABEL nope (x INT);"),
           {"id": 52, "sql_prompt": "q", "sql_contxt": "CREATE TABLE t (a INT);", "sql": "SELECT a FROM t"}]
    sp = load_gretel(write_gretel(tmp_path / "gretel", extra=bad))
    assert (len(sp.train), len(sp.dev)) == (4, 2)
    reasons = [r for _, r in sp.skipped]
    assert any("sql does not run" in r for r in reasons)
    assert any("sql_context does not run" in r for r in reasons)
    assert any("missing field sql_context" in r for r in reasons)
    e = sp.train[0]
    assert e.extra["domain"] == "forestry" and e.extra["sql_complexity"] == "single join"
    assert {t.name for t in sp.schemas[e.db_id].tables} == {"salesperson", "timber_sales"}
    db = materialize_db(e, tmp_path / "dbs")
    assert run_sql(db, e.query).rows == [("Jane Smith", 180.0), ("John Doe", 270.0)]


# ------------------------------------------------------------------------------------------
# SQL normalization
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,norm", [
    ("select count(*) from head where age  >  56", "SELECT COUNT(*) FROM head WHERE age > 56"),
    ("SELECT name ,  age FROM head ORDER BY age desc", "SELECT name, age FROM head ORDER BY age DESC"),
    ("select T1.a from x as T1 join y as T2 on T1.id=T2.id;", "SELECT T1.a FROM x AS T1 JOIN y AS T2 ON T1.id = T2.id"),
    ('select "my col" from t', 'SELECT "my col" FROM t'),
])
def test_normalize_sql(raw, norm):
    assert normalize_sql(raw) == norm
    assert normalize_sql(norm) == norm  # idempotent


def test_normalize_sql_rejects_garbage():
    with pytest.raises(SQLParseError):
        normalize_sql("SELECT FROM WHERE (")


# ------------------------------------------------------------------------------------------
# corrupt input: skipped and counted, with file and example id
# ------------------------------------------------------------------------------------------
def _corrupt_truncated(root: Path):
    f = root / "spider/train_spider.json"
    text = f.read_text()
    f.write_text(text[: int(len(text) * 0.6)])  # cut mid-record


def _corrupt_missing_db(root: Path):
    f = root / "spider/train_spider.json"
    recs = json.loads(f.read_text())
    recs[2]["db_id"] = "no_such_db"
    f.write_text(json.dumps(recs))


def _corrupt_bad_sql(root: Path):
    f = root / "spider/train_spider.json"
    recs = json.loads(f.read_text())
    recs[3]["query"] = "SELECT name FROM FROM shop WHERE ("
    f.write_text(json.dumps(recs))


def _corrupt_field_name(root: Path):
    f = root / "spider/train_spider.json"
    recs = json.loads(f.read_text())
    recs[4]["SQL"] = recs[4].pop("query")  # a BIRD field name in a Spider file
    f.write_text(json.dumps(recs))


def _corrupt_wikisql_line(root: Path):
    write_wikisql(root / "wikisql", extra_lines=['{"phase": 1, "table_id": "1-1000181-1", "quest',
                                                 json.dumps({**WIKI_QUESTIONS[0], "table_id": "9-9"})])


def _corrupt_bird_db(root: Path):
    write_bird(root / "bird")
    f = root / "bird/train/train.json"
    recs = json.loads(f.read_text())
    recs.append({"db_id": "ghost", "question": "?", "evidence": "", "SQL": "SELECT 1"})
    f.write_text(json.dumps(recs))


@pytest.mark.parametrize("corrupt,reason,file,count", [
    (_corrupt_truncated, "corrupt JSON after", "spider/train_spider", 1),
    (_corrupt_missing_db, "missing database 'no_such_db'", "spider/train_spider", 1),
    (_corrupt_bad_sql, "sql does not parse", "spider/train_spider", 1),
    (_corrupt_field_name, "missing field query", "spider/train_spider", 1),
    (_corrupt_wikisql_line, "corrupt JSON line", "wikisql/train", 1),
    (_corrupt_wikisql_line, "missing database (table '9-9')", "wikisql/train", 1),
    (_corrupt_bird_db, "missing database 'ghost'", "bird/train", 1),
])
def test_corrupt_input_skipped_and_counted(tmp_path, corrupt, reason, file, count, monkeypatch):
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "vcache"))
    root = tmp_path / "data"
    write_spider(root / "spider")
    corrupt(root)
    res = preprocess(small_cfg(), root, tmp_path / "out", num_workers=1)
    rows = [json.loads(line) for line in (tmp_path / "out/skipped.jsonl").read_text().splitlines()]
    hits = [r for r in rows if reason in r["reason"]]
    assert len(hits) == count, rows
    assert hits[0]["example"] != "" and (file.split("/")[1] in hits[0]["file"] or hits[0]["file"] == file)
    acc = {a["file"]: a for a in res.summary["accounting"]}
    assert acc[file]["skipped"] >= count
    assert res.summary["counts"]["train"] > 0  # the run went on


# ------------------------------------------------------------------------------------------
# preprocess: cache, split, workers, prepare_data
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi") / "data"
    write_spider(root / "spider", n_train_dbs=6)
    write_bird(root / "bird")
    write_wikisql(root / "wikisql")
    write_gretel(root / "gretel", n_train=12)
    return root


def test_preprocess_all_sources_and_cache(multi, tmp_path, monkeypatch):
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "vcache"))
    cfg = small_cfg(include_sample_values=True)
    out = tmp_path / "proc"
    r1 = preprocess(cfg, multi, out, num_workers=2)
    assert not r1.cached
    per = r1.summary["per_source"]
    assert set(per) == {"spider", "bird", "wikisql", "gretel"}
    assert all(per[s]["train"] > 0 for s in per)
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    r = rows[0]
    assert {"question", "query", "query_normalized", "prompt", "input_ids", "sql_start", "db_id"} <= set(r)
    assert r["input_ids"][0] == json.loads((out / "tokenizer.json").read_text())["added_tokens"][1]["id"]
    # split by database: no database on both sides, dev untouched
    val = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert val and not ({x["db_id"] for x in rows} & {x["db_id"] for x in val})
    dev = [json.loads(x) for x in (out / "dev.jsonl").read_text().splitlines()]
    assert {x["split"] for x in dev} == {"dev"} and len([x for x in dev if x["source"] == "spider"]) == 6
    # unchanged -> cached; same result with 1 worker ...
    r2 = preprocess(cfg, multi, out, num_workers=1)
    assert r2.cached and r2.elapsed_s < 1.0 and r2.summary["cache_key"] == r1.summary["cache_key"]
    # ... a changed setting or a changed input file rebuilds
    r3 = preprocess(small_cfg(include_sample_values=False), multi, out, num_workers=1)
    assert not r3.cached and r3.summary["cache_key"] != r1.summary["cache_key"]
    r3b = preprocess(small_cfg(include_sample_values=False), multi, out, num_workers=1)
    assert r3b.cached
    f = multi / "gretel" / "train.jsonl"
    f.write_text(f.read_text() + json.dumps(gretel_record(999, sql="SELECT COUNT(*) FROM salesperson")) + "\n")
    r4 = preprocess(small_cfg(include_sample_values=False), multi, out, num_workers=1)
    assert not r4.cached and r4.summary["counts"]["train"] + r4.summary["counts"]["validation"] \
        == r3.summary["counts"]["train"] + r3.summary["counts"]["validation"] + 1


def test_workers_give_identical_output(tmp_path, monkeypatch):
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "vcache"))
    root = tmp_path / "data"
    write_spider(root / "spider", n_train_dbs=8)
    a = preprocess(small_cfg(), root, tmp_path / "a", num_workers=1)
    b = preprocess(small_cfg(), root, tmp_path / "b", num_workers=2)
    assert a.summary["num_workers"] == 1 and b.summary["num_workers"] == 2
    for f in ("train.jsonl", "validation.jsonl", "dev.jsonl", "tokenizer.json"):
        assert (tmp_path / "a" / f).read_text() == (tmp_path / "b" / f).read_text()


def test_processed_folder_feeds_prepare_data(tmp_path, monkeypatch):
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "vcache"))
    root = write_spider(tmp_path / "data" / "spider", n_train_dbs=6)
    cfg = small_cfg()
    preprocess(cfg, root.parent, tmp_path / "proc", num_workers=1)
    data = prepare_data(cfg.replace(data={"source": str(tmp_path / "proc")}))
    summary = json.loads((tmp_path / "proc/summary.json").read_text())
    assert len(data.train) == summary["counts"]["train"] and len(data.valid) == summary["counts"]["validation"]
    assert data.tokenizer.fingerprint() == summary["tokenizer"]["fingerprint"]
    enc = data.train[0]
    assert data.tokenizer.decode(enc.ids[enc.sql_start:]).strip() == data.train_examples[0].extra["query_normalized"]
    dev = prepare_data(cfg.replace(data={"source": str(tmp_path / "proc")}), final_split="dev")
    assert len(dev.valid) == 6 and all(e.split == "dev" for e in dev.valid)
    # the existing sources still work unchanged
    assert prepare_data(cfg, source=f"spider:{root}").source == f"spider:{root}"


def test_cli_preprocess_summary(tmp_path, monkeypatch, capsys):
    from vantage_core.cli.data import main
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "vcache"))
    root = write_spider(tmp_path / "data" / "spider")
    rc = main(["preprocess", "--data_dir", str(root.parent), "--output_dir", str(tmp_path / "p"),
               "--num_workers", "1", "--set", "training.max_seq_length=256", "--set", "data.tokenizer_vocab_size=300",
               "--set", "model.vocab_size=512"])
    out = capsys.readouterr().out
    assert rc == 0 and "per file:" in out and "spider/train_spider" in out
    assert main(["preprocess", "--data_dir", str(tmp_path / "nope")]) == 2


def test_gretel_loader_reads_the_hub_parquet_files(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    d = tmp_path / "gretel"
    d.mkdir()
    recs = [gretel_record(i, sql="SELECT COUNT(*) FROM salesperson") for i in range(3)]
    pq.write_table(pa.Table.from_pylist(recs), d / "synthetic_text_to_sql_train.snappy.parquet")
    pq.write_table(pa.Table.from_pylist(recs[:1]), d / "synthetic_text_to_sql_test.snappy.parquet")
    sp = load_gretel(d)
    assert (len(sp.train), len(sp.dev), sp.skipped) == (3, 1, [])
    assert sp.train[0].id == "gretel/5097" and sp.train[0].question.startswith("What is the total volume")
