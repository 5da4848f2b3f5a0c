"""The tiny model really learns the task: after a few hundred steps its exact match on
validation databases it has never seen beats both an untrained model and the constant
baseline (the most frequent training query) by at least 10 points."""

from collections import Counter

import pytest

from vantage_core.config import load_config
from vantage_core.data.prepare import prepare_data
from vantage_core.eval.exact_match import exact_match
from vantage_core.train import metrics as M
from vantage_core.eval.evaluate import evaluate
from vantage_core.model import build_model
from vantage_core.train.trainer import train

pytestmark = pytest.mark.integration


def test_tiny_model_beats_untrained_and_constant_baselines(tmp_path):
    cfg = load_config("tiny", {"training": {"num_train_steps": 500, "eval_steps": 250}})
    data = prepare_data(cfg)
    assert not ({e.db_id for e in data.valid} & {e.db_id for e in data.train_examples})

    before = evaluate(build_model(cfg), cfg, data)
    untrained = before[M.EVAL_EXACT_MATCH]
    most_common, _ = Counter(" ".join(e.query.split()) for e in data.train_examples).most_common(1)[0]
    constant = sum(exact_match(e.query, most_common, data.schemas[e.db_id])
                   for e in data.eval_examples) / len(data.eval_examples)

    result = train(cfg, data, [], evaluate=evaluate, output_dir=tmp_path)
    assert result.status == "completed"
    trained = result.best_exact_match
    print(f"exact match: trained {trained:.3f}, untrained {untrained:.3f}, constant {constant:.3f}")
    assert trained >= untrained + 0.10
    assert trained >= constant + 0.10
    assert (tmp_path / "checkpoint-best" / "model.safetensors").is_file()
    # the trained model names its own database's tables (the copy signal rises with training)
    own = result.eval_history[-1][M.EVAL_OWN_SCHEMA_TABLES]
    print(f"own-schema table names: trained {own:.2f}, untrained {before[M.EVAL_OWN_SCHEMA_TABLES]:.2f}")
    assert own >= 0.5 and own > before[M.EVAL_OWN_SCHEMA_TABLES]
