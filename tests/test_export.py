"""vantage-export: the exported folder is a Hugging Face Mixtral that mlx-lm and transformers
load, with the same next-token logits as Vantage (max abs difference <= 1e-4; measured
0.0 for mlx-lm and ~1e-6 for transformers in fp32)."""

import json

import mlx.core as mx
import numpy as np
import pytest

from trainer_fixtures import tiny_cfg, tiny_data
from vantage_core.cli.export import main as export_main
from vantage_core.model import MoETransformer
from vantage_core.eval.evaluate import evaluate
from vantage_core.train.trainer import train
from vantage_core.weights import load_weights

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_cfg(training={"num_train_steps": 3, "eval_steps": 3})
    r = train(cfg, tiny_data(), [], evaluate=evaluate, output_dir=root / "run")
    assert r.status == "completed"
    assert export_main([str(root / "run" / "checkpoint-latest"), str(root / "hf")]) == 0
    model = MoETransformer(cfg.model)
    load_weights(model, root / "run" / "checkpoint-latest")
    model.eval()
    d = tiny_data()
    prompt = d.eval_prompts[0][:48]
    ours = np.array(model(mx.array([prompt]))[0])[0]           # [L, V]
    return root / "hf", cfg, prompt, ours


def test_layout_and_config(exported):
    hf, cfg, _, _ = exported
    names = {p.name for p in hf.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    c = json.loads((hf / "config.json").read_text())
    assert c["model_type"] == "mixtral" and c["architectures"] == ["MixtralForCausalLM"]
    assert c["num_local_experts"] == 4 and c["num_experts_per_tok"] == 2
    assert c["num_hidden_layers"] == 2 and c["hidden_size"] == 64
    w = mx.load(str(hf / "model.safetensors"))
    assert "model.layers.0.block_sparse_moe.experts.3.w1.weight" in w
    assert w["model.layers.1.block_sparse_moe.experts.0.w2.weight"].shape == (64, 128)   # down: [D, F]
    assert not any("switch_mlp" in k for k in w)


def test_mlx_lm_loads_and_generates_same_logits(exported):
    mlx_lm = pytest.importorskip("mlx_lm")
    hf, _, prompt, ours = exported
    model, tok = mlx_lm.load(str(hf))
    theirs = np.array(model(mx.array([prompt])))[0]
    assert np.abs(theirs - ours).max() <= TOL
    text = mlx_lm.generate(model, tok, prompt=prompt, max_tokens=4)
    assert isinstance(text, str)


def test_transformers_mixtral_same_logits(exported):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf, _, prompt, ours = exported
    model = transformers.MixtralForCausalLM.from_pretrained(str(hf), dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = model(torch.tensor([prompt])).logits[0].numpy()
    assert np.abs(theirs - ours).max() <= TOL
    assert int(theirs[-1].argmax()) == int(ours[-1].argmax())
    tok = transformers.AutoTokenizer.from_pretrained(str(hf))
    assert tok.eos_token == "<|end|>"
