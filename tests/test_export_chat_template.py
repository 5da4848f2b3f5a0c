"""An exported from-scratch model carries Vantage's prompt format as its chat template: mlx_lm
loads the export, `apply_chat_template` builds the prompt, and its ids are exactly Vantage's
own prompt encoding (`encode_example`, the ids the model was trained and evaluated on); the
export still loads back into Vantage as the plain (non-chat) tokenizer."""

import json

import pytest

from trainer_fixtures import tiny_cfg, tiny_data
from vantage_core.cli.export import main as export_main
from vantage_core.data.schema import serialize_schema
from vantage_core.data.tokenizer import (VANTAGE_CHAT_TEMPLATE, SQLTokenizer, chat_user_message, encode_example,
                                         is_vantage_template)
from vantage_core.train.trainer import train


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_chat")
    cfg = tiny_cfg(training={"num_train_steps": 3, "eval_steps": 3})
    r = train(cfg, tiny_data(), [], output_dir=root / "run")
    assert r.status == "completed"
    assert export_main([str(root / "run" / "checkpoint-latest"), str(root / "hf")]) == 0
    return root / "hf", cfg


def _vantage_prompt(tok, schema, question, evidence=""):
    ids, start = encode_example(tok, schema, question, None, 4096, evidence)
    return ids[:start]


def test_export_writes_the_vantage_chat_template(exported):
    hf, _ = exported
    c = json.loads((hf / "tokenizer_config.json").read_text())
    assert c["chat_template"] == VANTAGE_CHAT_TEMPLATE and is_vantage_template(c["chat_template"])
    assert c["eos_token"] == "<|end|>"
    # Vantage reads its own export back as the plain prompt format, not as a chat tokenizer
    tok = SQLTokenizer.load(hf / "tokenizer.json")
    assert not tok.is_chat and tok.eos_token == "<|end|>"


def test_mlx_lm_chat_template_prompt_ids_equal_vantage_encoding(exported):
    mlx_lm = pytest.importorskip("mlx_lm")
    hf, cfg = exported
    model, tok = mlx_lm.load(str(hf))
    assert tok.has_chat_template
    d = tiny_data()
    ours = d.tokenizer
    e = d.eval_examples[0]
    schema = serialize_schema(d.schemas[e.db_id], style=cfg.data.schema_format)
    want = _vantage_prompt(ours, schema, e.question)
    assert want == d.eval_prompts[0]          # the very prompt Vantage evaluates the model on

    def ids_of(messages):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tok.encode(text, add_special_tokens=False), text   # as mlx_lm.generate encodes it

    got, text = ids_of([{"role": "user", "content": chat_user_message(schema, e.question)}])
    assert text == f"<|schema|>{schema} <|question|> {e.question} <|sql|> "
    assert got == want
    # an already formatted Vantage prompt passes through; evidence and multi-line schemas work
    got, _ = ids_of([{"role": "user", "content": f"<|schema|>{schema} <|question|> {e.question}"}])
    assert got == want
    lines = "singer(singer_id, name, age)\nconcert(concert_id, singer_id)"
    got, _ = ids_of([{"role": "user", "content": chat_user_message(lines, "How many singers?", "age > 30")}])
    assert got == _vantage_prompt(ours, lines, "How many singers?", "age > 30")
    # a full conversation renders the training text (prompt, SQL, end token)
    full = tok.apply_chat_template([{"role": "user", "content": chat_user_message(schema, e.question)},
                                    {"role": "assistant", "content": "SELECT 1"}], tokenize=False)
    assert full == f"<|schema|>{schema} <|question|> {e.question} <|sql|> SELECT 1<|end|>"
    # mlx_lm.generate on the chat-template prompt: SQL text, stopped at <|end|>
    out = mlx_lm.generate(model, tok, prompt=got, max_tokens=8)
    assert isinstance(out, str) and "<|schema|>" not in out
