"""`vantage-data import spider ../shared/data/spider` then `preprocess` on the real Spider data:
every example accounted for, sample values from the 7 real databases, schema-only elsewhere."""

from __future__ import annotations

import json

import pytest

from test_data_fixtures import SPIDER
from vantage_core.cli.data import main
from vantage_core.config import load_config
from vantage_core.data.preprocess import preprocess
from vantage_core.sql.execution import has_order_by, results_match, run_sql

pytestmark = pytest.mark.skipif(not (SPIDER / "tables.json").is_file(), reason="shared Spider data absent")

REAL_DBS = {"aircraft", "department_store", "flight_1", "flight_2", "flight_4", "pilot_record", "singer"}


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spider")
    assert main(["import", "spider", str(SPIDER), "--output_dir", str(tmp / "data")]) == 0
    cfg = load_config(None, {"data": {"include_sample_values": True}})
    res = preprocess(cfg, tmp / "data", tmp / "proc", num_workers=2)
    return cfg, tmp, res


def _rows(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_every_example_accounted_for(processed):
    _, tmp, res = processed
    acc = {a["file"]: a for a in res.summary["accounting"]}
    assert acc["spider/train_spider"]["total"] == 7000
    assert acc["spider/train_others"]["total"] == 1659
    assert acc["spider/dev"]["total"] == 1034
    s = res.summary
    kept = s["counts"]["train"] + s["counts"]["validation"] + s["counts"]["dev"]
    assert kept + s["skipped_total"] == 7000 + 1659 + 1034
    assert s["skipped_total"] < 20  # a few gold queries that do not compile, each with its reason
    skipped = _rows(tmp / "proc/skipped.jsonl")
    assert len(skipped) == s["skipped_total"]
    assert all(r["file"] and r["example"].startswith("spider/") and r["reason"] for r in skipped)


def test_sample_values_only_from_real_databases(processed):
    _, tmp, res = processed
    dbs = res.summary["databases"]
    assert set(dbs["with_sample_values"]) == REAL_DBS
    assert dbs["used"] == 166 and dbs["schema_only"] == 166 - 7
    meta = json.loads((tmp / "proc/schemas.json").read_text())
    assert "(" in meta["singer"]["schema_text"] and meta["singer"]["sample_values"]
    assert not meta["concert_singer"]["sample_values"] and "(" not in meta["concert_singer"]["schema_text"]
    assert (tmp / "proc/database/singer/singer.sqlite").is_file()


def test_split_by_database_and_dev_untouched(processed):
    _, tmp, _ = processed
    train, val, dev = (_rows(tmp / f"proc/{s}.jsonl") for s in ("train", "validation", "dev"))
    assert not ({r["db_id"] for r in train} & {r["db_id"] for r in val})
    assert len(dev) == 1034 and [r["id"] for r in dev] == [f"spider/dev/{i}" for i in range(1034)]
    original = json.loads((SPIDER / "dev.json").read_text())
    assert [r["query"] for r in dev] == [d["query"].strip() for d in original]


def test_normalized_sql_returns_the_same_rows(processed):
    _, tmp, _ = processed
    rows = [r for s in ("train", "validation", "dev") for r in _rows(tmp / f"proc/{s}.jsonl") if r["db_path"]]
    assert len(rows) > 400
    for r in rows:
        a = run_sql(r["db_path"], r["query"])
        if not a.ok:
            continue
        b = run_sql(r["db_path"], r["query_normalized"])
        assert b.ok and results_match(a.rows, b.rows, has_order_by(r["query"])), r["id"]


def test_cached_rerun_is_instant(processed):
    cfg, tmp, res = processed
    again = preprocess(cfg, tmp / "data", tmp / "proc", num_workers=2)
    assert again.cached and again.elapsed_s < 2.0
    assert again.summary["cache_key"] == res.summary["cache_key"]


def test_vantage_train_tiny_on_processed_spider_evaluates_saves_and_resumes(processed, tmp_path):
    """The trainer issue's first acceptance line: `vantage-train --config configs/tiny_model.yaml
    --data_dir <processed spider>` trains, evaluates on the carved validation split (unseen
    databases), saves best/latest and resumes from latest."""
    from pathlib import Path

    from vantage_core.cli.train import main as train_main

    _, tmp, _ = processed
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    args = ["--config", str(root / "configs/tiny_model.yaml"), "--data_dir", str(tmp / "proc"),
            "--output_dir", str(out), "--num_train_steps", "4", "--no-progress",
            "--set=training.batch_size=4", "--set=training.eval_steps=2", "--set=training.save_steps=2",
            "--set=training.logging_steps=1", "--set=data.max_eval_examples=4", "--set=eval.max_new_tokens=12"]
    assert train_main(args) == 0
    for name in ("checkpoint-2", "checkpoint-4", "checkpoint-best", "checkpoint-latest"):
        assert (out / name / "model.safetensors").is_file(), name
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4]
    assert all(0.0 <= e["eval/exact_match"] <= 1.0 and e["eval/loss"] > 0 for e in evals)
    # The processed folder's own tokenizer is the one saved with the run (ids match the data).
    assert (out / "checkpoint-latest" / "tokenizer.json").read_text() == (tmp / "proc" / "tokenizer.json").read_text()
    assert train_main([a if a != "4" else "6" for a in args]
                      + ["--resume_from_checkpoint", str(out / "checkpoint-latest")]) == 0
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "checkpoint-latest" / "trainer_state.json").read_text())["step"] == 6
