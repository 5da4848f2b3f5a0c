"""model.init_from: start a run from existing weights, weights only (step 0, fresh AdamW):
another run's checkpoint (multi-stage training), Vantage's own Hugging Face export, or a
Mixtral a user has on disk (sharded safetensors, bf16 or fp32, written by transformers)."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from trainer_fixtures import losses, tiny_cfg, tiny_data
from vantage_core.cli.export import main as export_main
from vantage_core.data.prepare import init_tokenizer, prepare_data
from vantage_core.errors import CheckpointError, DataError
from vantage_core.model import MoETransformer
from vantage_core.eval.evaluate import evaluate
from vantage_core.train.trainer import train
from vantage_core.weights import load_weights

# The tiny model in Hugging Face terms (tests/trainer_fixtures.py: configs/tiny_model.yaml).
TINY_HF = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=2048,
               max_position_embeddings=512, rope_theta=10000.0, rms_norm_eps=1e-5,
               tie_word_embeddings=False, sliding_window=None, router_jitter_noise=0.0)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A short first-stage run and its Hugging Face export."""
    root = tmp_path_factory.mktemp("init_from")
    cfg = tiny_cfg(training={"num_train_steps": 4, "eval_steps": 2, "save_steps": 2})
    r = train(cfg, tiny_data(), [], evaluate=evaluate, output_dir=root / "a")
    assert r.status == "completed"
    assert export_main([str(root / "a" / "checkpoint-latest"), str(root / "hf")]) == 0
    return root


def _params(model):
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_hf_export_loads_back_to_the_checkpoint_weights(stage1):
    cfg = tiny_cfg()
    a, b = MoETransformer(cfg.model), MoETransformer(cfg.model)
    load_weights(a, stage1 / "a" / "checkpoint-latest")
    load_weights(b, stage1 / "hf")        # per-expert w1/w2/w3 stacked back into switch_mlp
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    fresh = _params(MoETransformer(cfg.model))
    assert any(np.abs(fresh[k] - pa[k]).max() > 1e-3 for k in pa)   # the load did replace weights


def test_init_from_uses_the_sources_tokenizer(stage1):
    # Other data settings would train another tokenizer; init_from must keep the weights' ids.
    other = {"synthetic_num_databases": 5, "synthetic_examples_per_db": 40}
    fresh = prepare_data(tiny_cfg(data=other))
    src = init_tokenizer(stage1 / "hf", 2048)
    assert fresh.tokenizer.fingerprint() != src.fingerprint()
    d = prepare_data(tiny_cfg(data=other, model={"init_from": str(stage1 / "hf")}))
    assert d.tokenizer.fingerprint() == src.fingerprint()
    assert d.tokenizer.fingerprint() == tiny_data().tokenizer.fingerprint()   # stage 1's own
    # ...and train() refuses data encoded with another tokenizer.
    with pytest.raises(CheckpointError, match="tokenizer.json differs"):
        train(tiny_cfg(data=other, training={"num_train_steps": 1}, model={"init_from": str(stage1 / "hf")}),
              fresh, [], evaluate=evaluate)


def test_multi_stage_run_starts_from_the_weights_only(stage1, tmp_path):
    """Stage 2 has another config (lr, schedule, steps) and starts from stage 1's weights with
    step 1 and a fresh optimizer; the Vantage checkpoint and its HF export are the same start."""
    stage2 = {"num_train_steps": 3, "learning_rate": 1e-4, "lr_scheduler_type": "constant",
              "eval_steps": 1000, "save_steps": 1000}
    runs = {}
    for name, init in (("latest", "a/checkpoint-latest"), ("hf", "hf"), ("best", "a/checkpoint-best"),
                       ("scratch", None)):
        model = {"init_from": str(stage1 / init)} if init else {}
        r = train(tiny_cfg(training=stage2, model=model), tiny_data(), [], evaluate=evaluate, output_dir=tmp_path / name)
        assert r.status == "completed", r.error
        assert [h["step"] for h in r.train_history] == [1, 2, 3]
        state = json.loads((tmp_path / name / "checkpoint-latest" / "trainer_state.json").read_text())
        assert state["step"] == 3
        runs[name] = losses(r.train_history)
    np.testing.assert_allclose(runs["hf"], runs["latest"], rtol=1e-6)   # same weights, same batches
    for name in ("latest", "best"):
        # Stage-1 weights (4 steps at lr 6e-3) beat a fresh init on the same first batch.
        assert runs[name][0] < runs["scratch"][0] - 0.3, (name, runs[name], runs["scratch"])


def _foreign_mixtral(path, dtype, shard):
    """A Mixtral written by transformers itself, as a user would have one on disk."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(transformers.MixtralConfig(**TINY_HF)).eval()
    model.to(getattr(torch, dtype)).save_pretrained(str(path), max_shard_size=shard, safe_serialization=True)
    return torch, transformers


@pytest.mark.parametrize("dtype,shard,tol", [("float32", "200KB", 1e-4), ("bfloat16", "5GB", 1e-4)])
def test_foreign_hf_mixtral_gives_transformers_logits(tmp_path, dtype, shard, tol):
    torch, transformers = _foreign_mixtral(tmp_path, dtype, shard)
    shards = list(tmp_path.glob("*.safetensors"))
    assert (len(shards) > 1) == (shard == "200KB")
    ref = transformers.MixtralForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    prompt = [3, 17, 250, 1999, 42, 7, 512, 64, 1, 800]
    with torch.no_grad():
        theirs = ref(torch.tensor([prompt])).logits[0].numpy()
    cfg = tiny_cfg()
    ours_model = MoETransformer(cfg.model)
    load_weights(ours_model, tmp_path)
    ours_model.eval()
    ours = np.array(ours_model(mx.array([prompt]))[0])[0]
    assert np.abs(ours - theirs).max() <= tol                  # measured ~1e-6 (fp32 math both sides)
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_foreign_folder_without_tokenizer_is_refused(tmp_path):
    _foreign_mixtral(tmp_path, "float32", "5GB")
    with pytest.raises(DataError, match="no tokenizer.json"):
        prepare_data(tiny_cfg(model={"init_from": str(tmp_path)}))


def test_foreign_tokenizer_gets_the_prompt_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["select name from singer where age > 3"] * 20,
                            trainer=trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    n = tok.get_vocab_size()
    from vantage_core.data.tokenizer import SQLTokenizer
    t = SQLTokenizer.load_for_model(tmp_path / "tokenizer.json", 2048)
    assert t.vocab_size == n + 6 and t.end_id >= n and t.pad_id >= n    # appended, not reassigned
    assert t.encode("select name") == tok.encode("select name").ids
    with pytest.raises(DataError, match="beyond the model's vocab_size"):
        SQLTokenizer.load_for_model(tmp_path / "tokenizer.json", n + 2)


@pytest.mark.parametrize("key,value,hf_key", [("hidden_size", 32, "hidden_size"),
                                              ("num_experts", 8, "num_local_experts"),
                                              ("num_layers", 3, "num_hidden_layers")])
def test_architecture_mismatch_is_one_clear_error(stage1, key, value, hf_key):
    cfg = tiny_cfg(training={"num_train_steps": 1}, model={key: value, "init_from": str(stage1 / "hf")})
    with pytest.raises(CheckpointError) as e:
        train(cfg, tiny_data(), [], evaluate=evaluate, check_memory=False)
    msg = str(e.value)
    assert "config.json" in msg and f"{hf_key} is " in msg and f"model.{key} is {value}" in msg
    assert "\n" not in msg


def test_non_mixtral_folder_is_refused(stage1, tmp_path):
    import shutil
    shutil.copytree(stage1 / "hf", tmp_path / "hf")
    c = json.loads((tmp_path / "hf" / "config.json").read_text())
    c["model_type"] = "gpt_neox"
    (tmp_path / "hf" / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="model_type is .gpt_neox."):
        train(tiny_cfg(training={"num_train_steps": 1}, model={"init_from": str(tmp_path / "hf")}),
              tiny_data(), [], evaluate=evaluate, check_memory=False)


def test_sharded_folder_reads_only_the_indexed_shards_and_names_a_broken_one(tmp_path):
    _foreign_mixtral(tmp_path, "float32", "200KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    (tmp_path / "consolidated.safetensors").write_bytes(b"not a safetensors file")   # Mistral-style extra
    m = MoETransformer(tiny_cfg().model)
    load_weights(m, tmp_path)                     # the index names the shards; the extra is not read
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError) as e:
        load_weights(m, tmp_path)
    assert str(e.value).startswith(str(shard)) and "unreadable" in str(e.value) and "\n" not in str(e.value)
