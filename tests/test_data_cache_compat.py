"""Processed-data caches and prepared data written before the one-pipeline redesign (issue 20)
still load, keep their cache key and give the same token ids, tokenizer and description.

The fixture (tests/fixtures/data_cache_v1, written by its make.py with the code before the
redesign) holds a tiny Spider-layout input, the folder `vantage-data preprocess` made of it,
and what `prepare_data` gave on that input, on the folder and on the synthetic source."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from fixtures.data_cache_v1.make import CFG, record
from vantage_core.config import load_config
from vantage_core.data.prepare import prepare_data
from vantage_core.data.preprocess import OUTPUT_FILES, preprocess
from vantage_core.data.synthetic import generate_synthetic

FIX = Path(__file__).resolve().parent / "fixtures" / "data_cache_v1"
EXPECTED = json.loads((FIX / "expected.json").read_text())


@pytest.fixture()
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "vcache"))
    return load_config(None, CFG)


def test_old_processed_folder_is_a_cache_hit_with_the_same_key(cfg, tmp_path):
    out = tmp_path / "processed"
    shutil.copytree(FIX / "processed", out)
    res = preprocess(cfg, FIX / "input", out, num_workers=1)
    assert res.cached and res.summary["cache_key"] == EXPECTED["cache_key"]


def test_rebuilding_gives_the_same_files_and_key(cfg, tmp_path):
    res = preprocess(cfg, FIX / "input", tmp_path / "new", num_workers=1)
    assert not res.cached and res.summary["cache_key"] == EXPECTED["cache_key"]
    for f in OUTPUT_FILES:
        if f != "summary.json":
            assert (tmp_path / "new" / f).read_text() == (FIX / "processed" / f).read_text(), f
    old = json.loads((FIX / "processed" / "summary.json").read_text())
    for k in ("params", "counts", "per_source", "accounting", "validation_databases", "tokenizer", "mix"):
        assert res.summary[k] == old[k], k


def test_old_processed_folder_loads_for_training(cfg, tmp_path):
    shutil.copytree(FIX / "processed", tmp_path / "processed")
    data = prepare_data(cfg.replace(data={"source": str(tmp_path / "processed")}))
    assert record(data) == EXPECTED["processed"]


@pytest.mark.parametrize("source", ["spider", "synthetic"])
def test_in_process_data_is_unchanged(cfg, tmp_path, source):
    src = f"spider:{FIX / 'input' / 'spider'}" if source == "spider" else "synthetic"
    assert record(prepare_data(cfg, source=src)) == EXPECTED[source]
    # the tokenizer cache keeps its file names: caches trained before are reused
    names = {p.name for p in (tmp_path / "vcache" / "tokenizers").iterdir()}
    assert names <= set(EXPECTED["tokenizer_cache"]) and names


# Digests of the synthetic generator's output (JSON files + SQLite dumps) from the code before
# the redesign: the embedded dataset, and every study fingerprint built on it, is unchanged.
@pytest.mark.parametrize("seed,n,per_db,variation,digest", [
    (3, 30, 60, 0.5, "2a84028dc6816ea3"),
    (7, 6, 100, 0.0, "9068ca43a546d6de"),
])
def test_synthetic_output_is_unchanged(tmp_path, seed, n, per_db, variation, digest):
    root = generate_synthetic(tmp_path / "s", num_databases=n, examples_per_db=per_db, seed=seed,
                              name_variation=variation)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.suffix == ".json" and f.name != "synthetic_meta.json":
            h.update(f.read_bytes())
        elif f.suffix == ".sqlite":
            con = sqlite3.connect(f)
            h.update("\n".join(con.iterdump()).encode())
            con.close()
    assert h.hexdigest()[:16] == digest
