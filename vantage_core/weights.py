"""Weights on disk, every format, read and written in one place.

* Vantage checkpoints: a folder with model.safetensors (Mixtral parameter names),
  optimizer.safetensors, trainer_state.json, config.yaml and tokenizer.json. Folders are written
  under a temporary name and renamed into place, so a crash mid-save never leaves a
  half-written checkpoint under a final name (`sources.find_checkpoint` finds the previous copy).
* Hugging Face Mixtral folders, written by `export_checkpoint` (`vantage-export`) and read by
  `load_hf_weights` (`model.init_from`). An export holds config.json (model_type "mixtral"),
  model.safetensors with HF Mixtral parameter names (each expert's
  ``block_sparse_moe.experts.{e}.w1/w2/w3.weight`` split from our stacked [E, out, in]
  ``switch_mlp.gate_proj/down_proj/up_proj``), tokenizer.json, tokenizer_config.json,
  special_tokens_map.json and generation_config.json; it opens with ``mlx_lm.load`` and
  ``transformers.MixtralForCausalLM.from_pretrained``. Inference is exactly Mixtral's (no
  capacity limit, no dropout): expert_capacity, router_aux_loss_coef, router_z_loss_coef and the
  dropouts are training-time only and are kept in config.json under "vantage_training".
* Dense Llama sources (GGUF files, Hugging Face Llama folders, aliases; told apart by
  vantage_core/sources.py), read into Hugging Face Llama names and conventions: GGUF keeps
  Llama's Q/K rows permuted for llama.cpp's interleaved RoPE, and they are un-permuted here, so
  every checkpoint and export of Vantage shares one RoPE convention (rotate-half,
  `traditional=False`); and sparse upcycling of them into the MoE (`upcycle`).

`load_weights(model, path)` takes any of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from .blas import load_openblas

load_openblas()  # before mlx is first imported (Linux CPU: ~30x faster matmuls)

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten, tree_unflatten  # noqa: E402

from .config import Config, config_from_dict  # noqa: E402
from .data.tokenizer import VANTAGE_CHAT_TEMPLATE, SQLTokenizer  # noqa: E402
from .errors import CheckpointError  # noqa: E402
from .sources import find_checkpoint, gguf_metadata, is_dense_source, is_hf_folder, resolve  # noqa: E402

# --- Vantage checkpoints ----------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def save_checkpoint(path: str | Path, *, model, config: Config, tokenizer=None, optimizer=None,
                    state: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        weights = dict(tree_flatten(model.parameters()))
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        if optimizer is not None:
            opt = {k: v for k, v in tree_flatten(optimizer.state) if isinstance(v, mx.array)}
            mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt)
        (tmp / "trainer_state.json").write_text(json.dumps(state or {}, indent=1))
        (tmp / "config.yaml").write_text(config.to_yaml())
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
    except (OSError, RuntimeError) as e:  # disk full, quota, I/O error (MLX raises RuntimeError)
        shutil.rmtree(tmp, ignore_errors=True)
        detail = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
        raise CheckpointError(f"{path}: cannot write checkpoint ({detail}; is the disk full?)") from None
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    try:
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    except OSError as e:  # the previous copy stays under its final or .old name (find_checkpoint)
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{path}: cannot move the checkpoint into place ({e.strerror or e})") from None
    _fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old)
    return path


def load_checkpoint_config(path: str | Path) -> Config:
    path = find_checkpoint(path)
    try:
        return config_from_dict(yaml.safe_load((path / "config.yaml").read_text()), str(path / "config.yaml"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no config.yaml") from None


def read_safetensors(path: str | Path) -> dict[str, mx.array]:
    try:
        return mx.load(str(path))
    except Exception as e:  # MLX raises RuntimeError/ValueError with multi-line text
        raise CheckpointError(f"{path}: unreadable ({' '.join(str(e).split())})") from None


def load_weights(model, path: str | Path, *, strict: bool = True, seed: int = 0) -> None:
    """Weights from a Vantage checkpoint folder, a Hugging Face Mixtral folder (e.g.
    `vantage-export`'s output, sharded or not, any float dtype) or a dense Llama source (GGUF,
    HF Llama folder, alias), upcycled into the model's experts (`seed` draws the router)."""
    have = dict(tree_flatten(model.parameters()))
    if is_dense_source(path):
        weights = upcycle(load_dense(path), model.cfg, seed=seed)
        path = resolve(path)
    elif is_hf_folder(path):
        path = Path(path)
        weights = load_hf_weights(path)
        if "lm_head.weight" in have and "lm_head.weight" not in weights and "model.embed_tokens.weight" in weights:
            weights["lm_head.weight"] = weights["model.embed_tokens.weight"]   # tied in the source
        weights = {k: v for k, v in weights.items() if k in have}            # e.g. lm_head when we tie
    else:
        path = find_checkpoint(path)
        weights = read_safetensors(path / "model.safetensors")
    for k, v in weights.items():
        if k in have and have[k].shape != v.shape:
            raise CheckpointError(f"{path}: parameter {k} has shape {tuple(v.shape)}, the model "
                                  f"expects {tuple(have[k].shape)} (checkpoint from another model shape)")
    missing = set(have) - set(weights)
    if strict and missing:
        raise CheckpointError(f"{path}: missing parameters, e.g. {sorted(missing)[0]} (checkpoint from another model shape)")
    model.load_weights(list(weights.items()), strict=False)


def load_optimizer(optimizer, path: str | Path) -> None:
    f = find_checkpoint(path) / "optimizer.safetensors"
    if not f.is_file():
        raise CheckpointError(f"{f}: missing (cannot resume optimizer state)")
    optimizer.state = tree_unflatten(list(mx.load(str(f)).items()))


def load_state(path: str | Path) -> dict[str, Any]:
    return json.loads((find_checkpoint(path) / "trainer_state.json").read_text())


# --- Hugging Face Mixtral folders -------------------------------------------------------------

_EXPERT = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe)\.experts\.switch_mlp\.(gate|up|down)_proj\.weight$")
_HF_NAME = {"gate": "w1", "down": "w2", "up": "w3"}


def hf_config(cfg: Config, tokenizer_ids: dict[str, int] | None = None) -> dict:
    m = cfg.model
    ids = tokenizer_ids or {}
    return {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size,
        "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_key_value_heads,
        "head_dim": m.hidden_size // m.num_attention_heads,
        "num_local_experts": m.num_experts,
        "num_experts_per_tok": m.num_experts_per_token,
        "vocab_size": m.vocab_size,
        "max_position_embeddings": m.max_position_embeddings,
        "rope_theta": m.rope_theta,
        "rms_norm_eps": m.rms_norm_eps,
        "hidden_act": "silu",
        "tie_word_embeddings": False,     # lm_head is always written (untied if trained tied)
        "sliding_window": None,
        "attention_dropout": 0.0,
        "output_router_logits": False,
        "router_aux_loss_coef": m.router_aux_loss_coef,
        "router_jitter_noise": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
        "bos_token_id": None,
        "eos_token_id": ids.get("eos"),
        "pad_token_id": ids.get("pad"),
        "vantage_training": {
            "expert_capacity": m.expert_capacity,
            "router_z_loss_coef": m.router_z_loss_coef,
            "expert_dropout": m.expert_dropout,
            "hidden_dropout": m.hidden_dropout,
        },
    }


def hf_weights(weights: dict[str, mx.array], cfg: Config) -> dict[str, mx.array]:
    """Vantage (mlx-lm Mixtral) parameter names -> HF Mixtral names, experts split."""
    out: dict[str, mx.array] = {}
    for k, v in weights.items():
        mt = _EXPERT.match(k)
        if mt:
            prefix, which = mt.groups()
            for e in range(v.shape[0]):
                out[f"{prefix}.experts.{e}.{_HF_NAME[which]}.weight"] = v[e]
        else:
            out[k] = v
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return {k: v.astype(mx.float32) for k, v in out.items()}


def tokenizer_config(tok, model_max_length: int | None = None) -> dict:
    """The export's tokenizer_config.json: a pretrained source's chat tokenizer keeps its own chat
    template; a from-scratch tokenizer gets Vantage's prompt format as its chat template
    (`VANTAGE_CHAT_TEMPLATE`: ``<|schema|> ... <|question|> ... <|sql|>``), so mlx_lm.generate and
    transformers' apply_chat_template prompt it as it was trained (docs/training.md, "Prompting an
    exported model")."""
    c = tok.hf_config(model_max_length)
    if not tok.is_chat:
        c["chat_template"] = VANTAGE_CHAT_TEMPLATE
    return c


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    ck = find_checkpoint(checkpoint)
    cfg = load_checkpoint_config(ck)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out}: exists and is not empty (use --overwrite)")
    weights = read_safetensors(ck / "model.safetensors")
    tmp = out.parent / f".{out.name}.export-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ids = {}
    tok_file = ck / "tokenizer.json"
    if tok_file.is_file():
        tok = SQLTokenizer.load(tok_file)
        ids = {"eos": tok.end_id, "pad": tok.pad_id}
        shutil.copy(tok_file, tmp / "tokenizer.json")
        # HF-style tokenizer files; a pretrained source's chat tokenizer carries its chat template
        # and eos (e.g. <|im_end|>), so `apply_chat_template` prompts the export as it was trained.
        (tmp / "tokenizer_config.json").write_text(json.dumps(
            tokenizer_config(tok, cfg.model.max_position_embeddings), indent=1))
        (tmp / "special_tokens_map.json").write_text(json.dumps(
            {"eos_token": tok.eos_token, "pad_token": tok.pad_token}, indent=1))
        (tmp / "generation_config.json").write_text(json.dumps({
            "eos_token_id": tok.end_id, "pad_token_id": tok.pad_id, "do_sample": False}, indent=1))
    (tmp / "config.json").write_text(json.dumps(hf_config(cfg, ids), indent=1))
    mx.save_safetensors(str(tmp / "model.safetensors"), hf_weights(weights, cfg), metadata={"format": "pt"})
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


_HF_EXPERT = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe)\.experts\.(\d+)\.(w1|w2|w3)\.weight$")
_VANTAGE_NAME = {v: k for k, v in _HF_NAME.items()}

def load_hf_weights(path: str | Path) -> dict[str, mx.array]:
    """The weights of a Hugging Face Mixtral folder (the shards its index names, else every
    *.safetensors), renamed to Vantage's parameter names: each layer's per-expert w1/w2/w3 are stacked into the
    [E, out, in] switch_mlp gate/down/up tensors. Weights come back as float32 (the
    master-weight dtype), whatever dtype the files hold."""
    p = Path(path)
    index = p / "model.safetensors.index.json"
    if index.is_file():   # only the shards it names (a folder may also hold consolidated.safetensors)
        try:
            files = sorted({p / f for f in json.loads(index.read_text())["weight_map"].values()})
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{index}: unreadable ({e})") from None
    else:
        files = sorted(p.glob("*.safetensors"))
    raw: dict[str, mx.array] = {}
    for f in files:
        raw.update(read_safetensors(f))
    out: dict[str, mx.array] = {}
    experts: dict[tuple[str, str], dict[int, mx.array]] = {}
    for k, v in raw.items():
        m = _HF_EXPERT.match(k)
        if m:
            prefix, e, which = m.groups()
            experts.setdefault((prefix, which), {})[int(e)] = v
        elif k.endswith("rotary_emb.inv_freq"):
            continue   # recomputed from rope_theta
        else:
            out[k] = v
    for (prefix, which), per in experts.items():
        idx = sorted(per)
        if idx != list(range(len(idx))):
            raise CheckpointError(f"{p}: {prefix} has experts {idx}; expected 0..{len(idx) - 1} (a shard missing?)")
        out[f"{prefix}.experts.switch_mlp.{_VANTAGE_NAME[which]}_proj.weight"] = mx.stack([per[e] for e in idx])
    return {k: v.astype(mx.float32) for k, v in out.items()}


# --- dense Llama sources (GGUF, Hugging Face Llama folders) and upcycling ---------------------

# GGUF tensor name (per block) -> HF Llama name
_GGUF_BLOCK = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


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
    info = gguf_metadata(path)["arch"]
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


def load_dense(spec: str | Path) -> dict[str, mx.array]:
    """float32 weights under Hugging Face Llama names (Q/K in rotate-half order)."""
    p = resolve(spec)
    if p.is_dir():   # the same reader as Mixtral folders (sharded through their index)
        return {k: v for k, v in load_hf_weights(p).items() if not k.endswith("rotary_emb.inv_freq")}
    return _load_gguf_weights(p)


# Sparse upcycling (Komatsuzaki et al., ICLR 2023): each MoE layer's E experts start as copies of
# the dense FFN and the router is new. Since the router renormalises its top-k weights, the
# upcycled model computes the dense function at step 0 (nothing dropped, diversity options off).
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
