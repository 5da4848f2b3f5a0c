"""Dataset mixing: each data.*_weight key moves the realized share of its source."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from test_data_fixtures import write_gretel, write_spider
from vantage_core.data.mix import (WEIGHT_KEYS, MixtureSampler, mix_examples, proportions_table,
                                   weights_from_config)

TOL = 0.015  # absolute tolerance on a realized share with 20,000 draws (> 4 standard deviations)
SIZES = {"spider": 300, "bird": 200, "wikisql": 5000, "gretel": 1000, "synthetic": 50}


def _cfg(**w):
    base = {k: 0.0 for k in WEIGHT_KEYS.values()}
    base.update(w)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("source,key", sorted(WEIGHT_KEYS.items()))
@pytest.mark.parametrize("weight", [0.1, 0.6])
def test_each_weight_key_sets_its_share(source, key, weight):
    others = [s for s in SIZES if s != source]
    cfg = _cfg(**{key: weight, **{WEIGHT_KEYS[s]: (1 - weight) / len(others) for s in others}})
    w = weights_from_config(cfg, list(SIZES))
    n = 20_000
    draws = MixtureSampler(SIZES, w, seed=3).sample(n)
    share = sum(1 for s, _ in draws if s == source) / n
    assert abs(share - weight) < TOL
    table = proportions_table(SIZES, [s for s, _ in draws], w)
    row = table[table.source == source].iloc[0]
    assert row.target == pytest.approx(weight) and abs(row.realized - weight) < TOL
    assert abs(table.realized.sum() - 1) < 1e-3  # shares are rounded to 4 places


def test_zero_weight_source_is_left_out_and_absent_sources_ignored():
    w = weights_from_config(_cfg(spider_weight=0.4, bird_sql_weight=0.3, wiki_sql_weight=0.2,
                                 gretel_synthetic_weight=0.1), ["spider", "gretel", "synthetic"])
    assert w == {"spider": 0.4, "gretel": 0.1, "synthetic": 0.0}
    draws = MixtureSampler({"spider": 10, "gretel": 10, "synthetic": 10}, w, seed=0).sample(5000)
    shares = {s: sum(1 for d, _ in draws if d == s) / 5000 for s in w}
    assert shares["synthetic"] == 0 and abs(shares["spider"] - 0.8) < 0.03  # renormalized 0.4 / 0.5


def test_all_zero_weights_mean_natural_proportions_each_example_once():
    by = {"a": list(range(30)), "b": list(range(100, 170))}
    assert weights_from_config(_cfg(), ["spider", "bird"]) == {}
    mixed = mix_examples(by, {}, seed=1)
    assert sorted(mixed) == sorted(by["a"] + by["b"])


def test_small_source_with_large_weight_is_repeated_without_replacement_within_a_pass():
    mixed = mix_examples({"small": list(range(10)), "big": list(range(1000, 2000))},
                         {"small": 0.5, "big": 0.5}, n=400, seed=0)
    small = [x for x in mixed if x < 1000]
    assert abs(len(small) / 400 - 0.5) < 0.08
    first = small[:10]
    assert sorted(first) == list(range(10))  # a full pass before any repeat


def test_weights_reorder_the_training_set_of_a_processed_folder(tmp_path, monkeypatch):
    from vantage_core.config import load_config
    from vantage_core.data.prepare import prepare_data
    from vantage_core.data.preprocess import preprocess
    monkeypatch.setenv("VANTAGE_CACHE", str(tmp_path / "vcache"))
    root = tmp_path / "data"
    write_spider(root / "spider", n_train_dbs=8)
    write_gretel(root / "gretel", n_train=60)
    over = {"data": {"tokenizer_vocab_size": 300}, "model": {"vocab_size": 512}, "training": {"max_seq_length": 256}}
    cfg = load_config(None, over)
    res = preprocess(cfg, root, tmp_path / "proc", num_workers=1)
    assert {m["source"] for m in res.summary["mix"]} == {"spider", "gretel"}
    src = str(tmp_path / "proc")
    natural = prepare_data(cfg.replace(data={"source": src}))
    nat_share = sum(e.source == "gretel" for e in natural.train_examples) / len(natural.train_examples)
    mixed = prepare_data(cfg.replace(data={"source": src, "spider_weight": 0.9, "gretel_synthetic_weight": 0.1}))
    share = sum(e.source == "gretel" for e in mixed.train_examples) / len(mixed.train_examples)
    assert nat_share > 0.4 and abs(share - 0.1) < 0.1
    assert len(mixed.train) == len(natural.train)
