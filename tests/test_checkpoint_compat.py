"""A checkpoint written before the redesign (tests/fixtures/pre_redesign, by make_fixtures.py
at commit f080000) still loads, evaluates, exports and resumes with the same next losses."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from vantage_core.data.prepare import Encoded
from vantage_core.data.tokenizer import SQLTokenizer
from vantage_core.eval.evaluate import load_checkpoint_model
from vantage_core.model import build_model
from vantage_core.train.trainer import train
from vantage_core.weights import export_checkpoint, load_checkpoint_config, load_state, load_weights

FIX = Path(__file__).parent / "fixtures" / "pre_redesign"
EXPECTED = json.loads((FIX / "expected.json").read_text())
TRAIN_KEYS = ("train/loss", "train/aux_loss", "train/z_loss", "train/learning_rate", "train/grad_norm")


@pytest.fixture
def ck(tmp_path):
    dst = tmp_path / "checkpoint-4"
    shutil.copytree(FIX / "checkpoint-4", dst)   # never write next to the committed fixture
    return dst


def _data(ck):
    seqs = [Encoded(s["ids"], s["sql_start"]) for s in json.loads((FIX / "train_data.json").read_text())]
    return SimpleNamespace(source="fixture", tokenizer=SQLTokenizer.load(ck / "tokenizer.json"), train=seqs,
                           eval_examples=[])


def test_old_checkpoint_config_and_state_load(ck):
    cfg = load_checkpoint_config(ck)
    assert cfg.model.hidden_size == 16 and cfg.model.vocab_size == 320 and cfg.training.num_train_steps == 8
    assert cfg.model.hidden_dropout == pytest.approx(0.1)
    st = load_state(ck)
    assert st["step"] == 4 and st["batcher"] == {"epoch": 0, "pos": 16}


def test_old_checkpoint_resumes_with_the_same_next_losses(ck, tmp_path):
    cfg = load_checkpoint_config(ck)
    r = train(cfg, _data(ck), [], output_dir=tmp_path / "run", resume_from=ck, check_memory=False)
    assert r.status == "completed" and r.steps == 8
    want = EXPECTED["resumed_train_history"]
    assert [h["step"] for h in r.train_history] == [h["step"] for h in want] == [5, 6, 7, 8]
    for got, exp in zip(r.train_history, want):
        for k in TRAIN_KEYS:
            assert got[k] == pytest.approx(exp[k], rel=1e-5, abs=1e-7), (got["step"], k)
    # ...which is also what the uninterrupted run gave at those steps.
    full = {h["step"]: h for h in EXPECTED["full_train_history"]}
    for got in r.train_history:
        assert got["train/loss"] == pytest.approx(full[got["step"]]["train/loss"], rel=1e-5)


def _logits(model):
    logits, _ = model(mx.array([EXPECTED["logits_input"]]))
    return np.array(logits[0, -1, :16]), float(logits.sum().item())


def test_old_checkpoint_loads_for_evaluation_with_the_same_logits(ck):
    model, cfg, tok = load_checkpoint_model(ck)
    assert tok.fingerprint() == EXPECTED["tokenizer_fingerprint"]
    last, total = _logits(model)
    np.testing.assert_allclose(last, EXPECTED["logits_last_position_first_16"], rtol=1e-5, atol=1e-6)
    assert total == pytest.approx(EXPECTED["logits_sum"], rel=1e-5)


def test_old_checkpoint_exports_and_the_export_loads_back(ck, tmp_path):
    out = export_checkpoint(ck, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["model_type"] == "mixtral"
    cfg = load_checkpoint_config(ck)
    model = build_model(cfg)
    load_weights(model, out)
    model.eval()
    last, total = _logits(model)
    np.testing.assert_allclose(last, EXPECTED["logits_last_position_first_16"], rtol=1e-5, atol=1e-6)
