"""Decoding: batched greedy and batched beam search with a KV cache agree with the simple
one-prompt-at-a-time paths, and `vantage-eval --checkpoint` generates and scores."""

import json

import pytest

from vantage_core.config import load_config
from vantage_core.data.prepare import prepare_data
from vantage_core.eval.generate import generate_beam, generate_beam_batched, generate_greedy
from vantage_core.eval.evaluate import evaluate
from vantage_core.train.trainer import train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    cfg = load_config("tiny", {"training": {"num_train_steps": 60, "eval_steps": 60, "warmup_steps": 4},
                               "data": {"max_eval_examples": 12}, "eval": {"max_new_tokens": 40}})
    data = prepare_data(cfg)
    r = train(cfg, data, [], evaluate=evaluate, output_dir=out)
    from vantage_core.eval.evaluate import load_checkpoint_model
    model, cfg2, tok = load_checkpoint_model(out / "checkpoint-latest")
    return out, model, tok, data


def test_batched_greedy_equals_one_at_a_time(trained):
    _, model, tok, data = trained
    prompts = data.eval_prompts[:10]
    batched = generate_greedy(model, prompts, pad_id=tok.pad_id, end_id=tok.end_id, max_new_tokens=40, batch_size=10)
    single = generate_greedy(model, prompts, pad_id=tok.pad_id, end_id=tok.end_id, max_new_tokens=40, batch_size=1)
    assert batched == single
    assert any(len(o) > 3 for o in batched)   # a trained model writes something


@pytest.mark.parametrize("beams", [1, 3])
def test_batched_beam_matches_one_prompt_beam(trained, beams):
    _, model, tok, data = trained
    prompts = data.eval_prompts[:6]
    batched = generate_beam_batched(model, prompts, pad_id=tok.pad_id, end_id=tok.end_id, num_beams=beams,
                                    max_new_tokens=40, batch_size=3)
    for p, cands in zip(prompts, batched):
        ref = generate_beam(model, p, end_id=tok.end_id, num_beams=beams, max_new_tokens=40)
        assert cands[0][0] == ref[0][0]
        assert cands[0][1] == pytest.approx(ref[0][1], abs=1e-3)
        assert [s for _, s in cands] == sorted([s for _, s in cands], reverse=True)


def test_vantage_eval_checkpoint_cli(trained, tmp_path, capsys):
    from vantage_core.cli.eval import main
    out, *_ = trained
    preds = tmp_path / "preds.jsonl"
    rc = main(["--checkpoint", str(out / "checkpoint-latest"), "--data_dir", "synthetic", "--split", "validation",
               "--limit", "8", "--num_beams", "2", "--output", str(preds)])
    assert rc == 0
    rows = [json.loads(l) for l in preds.read_text().splitlines()]
    assert len(rows) == 8
    for r in rows:
        assert {"question", "gold", "prediction", "exact_match", "valid_sql", "hardness", "candidates"} <= set(r)
        assert 1 <= len(r["candidates"]) <= 2
    printed = capsys.readouterr().out
    assert "no valid beam candidate" in printed and "examples/s" in printed


def test_vantage_eval_mismatched_tokenizer_is_one_line_error(trained, tmp_path, capsys):
    import shutil
    from vantage_core.cli.eval import main
    out, *_ = trained
    bad = tmp_path / "ckpt"
    shutil.copytree(out / "checkpoint-latest", bad)
    (bad / "tokenizer.json").write_text("{not json")
    assert main(["--checkpoint", str(bad), "--data_dir", "synthetic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer" in err[0]
