"""Export a Vantage checkpoint as a Hugging Face Mixtral folder.

Writes config.json (model_type "mixtral"), model.safetensors with HF Mixtral parameter
names (each expert's ``block_sparse_moe.experts.{e}.w1/w2/w3.weight`` split from our stacked
[E, out, in] ``switch_mlp.gate_proj/down_proj/up_proj``), tokenizer.json,
tokenizer_config.json, special_tokens_map.json and generation_config.json. The folder
opens with ``mlx_lm.load`` and ``transformers.MixtralForCausalLM.from_pretrained``.

Inference is exactly Mixtral's (no capacity limit, no dropout): expert_capacity,
router_aux_loss_coef, router_z_loss_coef and the dropouts are training-time only and are
kept in config.json under "vantage_training" for provenance.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlx.core as mx

from .config import Config
from .errors import CheckpointError
from .train.checkpoint import find_checkpoint, load_checkpoint_config, read_safetensors

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
    from .data.tokenizer import VANTAGE_CHAT_TEMPLATE
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
        from .data.tokenizer import SQLTokenizer
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


# --- import: Hugging Face Mixtral folder -> Vantage weights (model.init_from) ---------------

_HF_EXPERT = re.compile(r"^(model\.layers\.\d+\.block_sparse_moe)\.experts\.(\d+)\.(w1|w2|w3)\.weight$")
_VANTAGE_NAME = {v: k for k, v in _HF_NAME.items()}
# config.json key -> ModelConfig key; a mismatch in any of these changes parameter shapes.
_SHAPE_KEYS = {"hidden_size": "hidden_size", "intermediate_size": "intermediate_size",
               "num_hidden_layers": "num_layers", "num_attention_heads": "num_attention_heads",
               "num_key_value_heads": "num_key_value_heads", "num_local_experts": "num_experts",
               "vocab_size": "vocab_size"}
# These change the function, not the shapes: allowed (a new stage may pick another top-k), logged.
_FUNCTION_KEYS = {"num_experts_per_tok": "num_experts_per_token", "rope_theta": "rope_theta",
                  "rms_norm_eps": "rms_norm_eps"}


def is_hf_folder(path: str | Path) -> bool:
    """A Hugging Face model folder (config.json + *.safetensors), not a Vantage checkpoint."""
    p = Path(path)
    return (p / "config.json").is_file() and not (p / "trainer_state.json").is_file() \
        and any(p.glob("*.safetensors"))


def check_hf_config(path: str | Path, model_cfg) -> list[str]:
    """Refuse a folder whose architecture cannot hold the configured model; returns notes on
    keys that differ without changing shapes."""
    f = Path(path) / "config.json"
    try:
        c = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{f}: unreadable ({e})") from None
    if c.get("model_type") != "mixtral":
        raise CheckpointError(f"{f}: model_type is {c.get('model_type')!r}; model.init_from needs a "
                              f"Mixtral-layout model (model_type \"mixtral\") or a dense Llama (\"llama\") to upcycle")
    for hf_key, key in _SHAPE_KEYS.items():
        want = getattr(model_cfg, key)
        if hf_key in c and c[hf_key] != want:
            raise CheckpointError(f"{f}: {hf_key} is {c[hf_key]} but model.{key} is {want}; "
                                  f"set model.{key}: {c[hf_key]} to start from this model")
    hd = c.get("head_dim")
    if hd is not None and hd != model_cfg.hidden_size // model_cfg.num_attention_heads:
        raise CheckpointError(f"{f}: head_dim {hd} is not hidden_size / num_attention_heads "
                              f"({model_cfg.hidden_size // model_cfg.num_attention_heads}); not supported")
    return [f"{f.name}: {hf_key} is {c[hf_key]}, model.{key} is {getattr(model_cfg, key)} (kept)"
            for hf_key, key in _FUNCTION_KEYS.items()
            if hf_key in c and c[hf_key] != getattr(model_cfg, key)]


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
