"""Typed configuration: one dataclass per YAML section, loaded by `load_config`.

Precedence is defaults < YAML < overrides (``section.key=value`` strings or a dict).
Unknown keys and wrong types are `ConfigError`s naming the file and the key path.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .errors import ConfigError, VantageError

NAMED_CONFIGS = ("tiny", "small", "medium", "large")


@dataclass
class ModelConfig:
    # Sizes (the guide's keys first).
    hidden_size: int = 64
    num_layers: int = 2
    num_experts: int = 4
    num_experts_per_token: int = 2
    # Capacity factor: each expert takes ceil(factor * tokens * k / experts) tokens, the
    # rest are dropped (their residual passes through). 0 disables capacity (no drops).
    expert_capacity: float = 1.25
    router_aux_loss_coef: float = 0.01
    router_z_loss_coef: float = 0.001
    expert_dropout: float = 0.0
    hidden_dropout: float = 0.0
    # What a real model needs beyond the guide's keys.
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int = 1024
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    # "capacity": dense [experts, capacity, hidden] dispatch with batched matmuls (fast
    # path); "gather": mlx-lm SwitchGLU gather_mm, never drops (reference path).
    moe_impl: Literal["capacity", "gather", "sorted"] = "capacity"
    # Start from weights: a Vantage checkpoint or export, a Hugging Face Mixtral or Llama folder,
    # a Llama GGUF file, or an installed alias (smollm2-135m). A dense source (Llama, GGUF) fixes
    # the architecture keys and is upcycled into num_experts copies of its FFN
    # (vantage_core/model/pretrained.py).
    init_from: Optional[str] = None
    # Upcycling options (dense sources only): router init std, multiplicative noise on each
    # expert copy, and the share of each expert's FFN neurons re-initialised (Drop-Upcycling).
    upcycle_router_init_std: float = 0.02
    upcycle_expert_noise: float = 0.0
    upcycle_drop_fraction: float = 0.0


@dataclass
class DataConfig:
    # "synthetic" (embedded, generated), "spider:PATH", or a processed data folder.
    source: str = "synthetic"
    synthetic_num_databases: int = 24
    synthetic_examples_per_db: int = 400
    # Share of table/column names renamed in variant databases (0: variants share names with
    # their domain; raise it to make validation demand copying names never seen in training).
    synthetic_name_variation: float = 0.0
    validation_fraction: float = 0.2
    max_eval_examples: int = 64
    tokenizer_vocab_size: int = 0  # 0: use model.vocab_size
    include_sample_values: bool = False
    # How the prompt lists a schema: "compact" (one line), "lines" (one table(col, ...) line per
    # table, the pretrained chat prompt) or "lines_keys" (with column types, keys, foreign keys).
    schema_format: Literal["compact", "lines", "lines_keys"] = "compact"
    augmentation_prob: float = 0.0
    # Schema renaming (vantage_core/data/augment.py): the chance a training example gets
    # renamed copies (tables/columns renamed in schema, SQL and question together).
    schema_perturbation_prob: float = 0.0
    # Renamed copies per selected example, each on a different variant of its database.
    schema_perturbation_copies: int = 1
    # Renamed variants made per database (at least schema_perturbation_copies are used).
    schema_rename_variants: int = 3
    # "synonyms": synonyms or the old name with a prefix/suffix (singer -> vocalist, tbl_singer);
    # "novel": unrelated words from an embedded pool (singer -> harbor, blue_ledger) that never
    # contain the old name, so a model must copy names from the prompt's schema.
    schema_rename_style: Literal["synonyms", "novel"] = "synonyms"
    # Share of table / column names renamed in each variant (1.0: every name).
    schema_rename_table_fraction: float = 0.6
    schema_rename_column_fraction: float = 0.5
    # false: an example that got renamed copies is replaced by them (its original-name version
    # is dropped), so memorizing the training schemas' own names no longer lowers the loss.
    schema_perturbation_keep_original: bool = True
    spider_weight: float = 0.0
    bird_sql_weight: float = 0.0
    wiki_sql_weight: float = 0.0
    gretel_synthetic_weight: float = 0.0
    synthetic_weight: float = 0.0
    num_workers: int = 1
    seed: int = 0


@dataclass
class TrainingConfig:
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    optimizer: Literal["adamw"] = "adamw"
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler_type: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.1
    num_train_steps: int = 100000
    mixed_precision: Literal["bf16", "fp16", "fp32"] = "fp32"
    gradient_checkpointing: bool = False
    activation_checkpointing: bool = False
    max_seq_length: int = 512
    save_steps: int = 5000
    eval_steps: int = 1000
    logging_steps: int = 10
    save_total_limit: int = 2
    seed: int = 42
    compile: bool = True
    # Batches are padded to their longest sequence rounded up to this multiple (capped at
    # max_seq_length). Each distinct padded length is one more trace of the compiled step
    # (seconds each for a GPU model), so coarser multiples trade padding for compile time.
    pad_to_multiple_of: int = 32
    # Batches of similar-length sequences (shuffled windows of 16 batches sorted by length, as
    # Hugging Face Trainer's group_by_length): less padding, same examples per epoch.
    group_by_length: bool = False
    # > 0: the loss computes LM-head logits this many loss positions at a time, recomputing
    # them in the backward pass (at most [rows, vocab] logits alive; for large vocabularies).
    loss_chunk_rows: int = 0


@dataclass
class EvalConfig:
    max_new_tokens: int = 128
    num_beams: int = 1
    batch_size: int = 32
    compare_values: bool = False
    compare_distinct: bool = False
    timeout_s: float = 2.0
    max_rows: int = 100000


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **sections: dict[str, Any]) -> "Config":
        """A copy with ``section={key: value}`` changes applied (validated)."""
        data = self.to_dict()
        for sec, kv in sections.items():
            if sec not in data:
                raise ConfigError(f"unknown config section '{sec}'")
            data[sec].update(kv)
        return config_from_dict(data, source="<replace>")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "training": TrainingConfig, "eval": EvalConfig}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
            if f.is_integer():
                return int(f)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            v = float(value)
        elif isinstance(value, str):
            # PyYAML (YAML 1.1) reads 3e-4 as a string; accept scientific notation.
            try:
                v = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        else:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(v):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return v
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")


def _build_section(cls, values: dict[str, Any], source: str, section: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{section}' must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{section}.{key}'")
        kwargs[key] = _coerce(value, hints[key], f"{source}: {section}.{key}")
    return cls(**kwargs)


def validate(cfg: Config, source: str = "<config>") -> Config:
    m, t, d, e = cfg.model, cfg.training, cfg.data, cfg.eval

    def bad(key, msg):
        raise ConfigError(f"{source}: {key}: {msg}")

    for key in ("hidden_size", "num_layers", "num_experts", "num_experts_per_token",
                "num_attention_heads", "num_key_value_heads", "intermediate_size",
                "vocab_size", "max_position_embeddings"):
        if getattr(m, key) <= 0:
            bad(f"model.{key}", f"must be > 0, got {getattr(m, key)}")
    if m.num_experts_per_token > m.num_experts:
        bad("model.num_experts_per_token",
            f"{m.num_experts_per_token} exceeds model.num_experts={m.num_experts}")
    if m.hidden_size % m.num_attention_heads:
        bad("model.hidden_size", f"{m.hidden_size} is not divisible by num_attention_heads={m.num_attention_heads}")
    if m.num_attention_heads % m.num_key_value_heads:
        bad("model.num_key_value_heads",
            f"num_attention_heads={m.num_attention_heads} is not a multiple of {m.num_key_value_heads}")
    if (m.hidden_size // m.num_attention_heads) % 2:
        bad("model.hidden_size", "head dimension must be even for RoPE")
    if m.expert_capacity < 0 or (0 < m.expert_capacity and m.expert_capacity <= 0):
        bad("model.expert_capacity", f"must be > 0 (or 0 for no capacity limit), got {m.expert_capacity}")
    for key in ("router_aux_loss_coef", "router_z_loss_coef"):
        if getattr(m, key) < 0:
            bad(f"model.{key}", f"must be >= 0, got {getattr(m, key)}")
    if m.upcycle_router_init_std < 0 or m.upcycle_expert_noise < 0:
        bad("model.upcycle_router_init_std", "upcycle_router_init_std and upcycle_expert_noise must be >= 0")
    for key in ("expert_dropout", "hidden_dropout", "upcycle_drop_fraction"):
        if not 0 <= getattr(m, key) < 1:
            bad(f"model.{key}", f"must be in [0, 1), got {getattr(m, key)}")
    for key in ("batch_size", "gradient_accumulation_steps", "num_train_steps", "max_seq_length",
                "save_steps", "eval_steps", "logging_steps", "pad_to_multiple_of"):
        if getattr(t, key) <= 0:
            bad(f"training.{key}", f"must be > 0, got {getattr(t, key)}")
    if t.learning_rate <= 0:
        bad("training.learning_rate", f"must be > 0, got {t.learning_rate}")
    if t.loss_chunk_rows < 0:
        bad("training.loss_chunk_rows", f"must be >= 0 (0: one pass), got {t.loss_chunk_rows}")
    if t.warmup_steps < 0:
        bad("training.warmup_steps", f"must be >= 0, got {t.warmup_steps}")
    if not 0 <= t.min_lr_ratio <= 1:
        bad("training.min_lr_ratio", f"must be in [0, 1], got {t.min_lr_ratio}")
    if t.weight_decay < 0:
        bad("training.weight_decay", f"must be >= 0, got {t.weight_decay}")
    if t.max_grad_norm < 0:
        bad("training.max_grad_norm", f"must be >= 0 (0 disables clipping), got {t.max_grad_norm}")
    for key in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(t, key) < 1:
            bad(f"training.{key}", f"must be in [0, 1), got {getattr(t, key)}")
    if t.adam_epsilon <= 0:
        bad("training.adam_epsilon", f"must be > 0, got {t.adam_epsilon}")
    if t.save_total_limit < 0:
        bad("training.save_total_limit", f"must be >= 0, got {t.save_total_limit}")
    if t.max_seq_length > m.max_position_embeddings:
        bad("training.max_seq_length",
            f"{t.max_seq_length} exceeds model.max_position_embeddings={m.max_position_embeddings}")
    if not 0 < d.validation_fraction < 1:
        bad("data.validation_fraction", f"must be in (0, 1), got {d.validation_fraction}")
    for key in ("augmentation_prob", "schema_perturbation_prob", "schema_rename_table_fraction",
                "schema_rename_column_fraction"):
        if not 0 <= getattr(d, key) <= 1:
            bad(f"data.{key}", f"must be in [0, 1], got {getattr(d, key)}")
    if d.schema_rename_table_fraction == 0 and d.schema_rename_column_fraction == 0:
        bad("data.schema_rename_table_fraction",
            "schema_rename_table_fraction and schema_rename_column_fraction are both 0: nothing would be renamed")
    for key in ("schema_perturbation_copies", "schema_rename_variants"):
        if getattr(d, key) < 1:
            bad(f"data.{key}", f"must be >= 1, got {getattr(d, key)}")
    for key in ("spider_weight", "bird_sql_weight", "wiki_sql_weight", "gretel_synthetic_weight",
                "synthetic_weight"):
        if getattr(d, key) < 0:
            bad(f"data.{key}", f"must be >= 0, got {getattr(d, key)}")
    if d.max_eval_examples <= 0:
        bad("data.max_eval_examples", f"must be > 0, got {d.max_eval_examples}")
    if d.num_workers <= 0:
        bad("data.num_workers", f"must be > 0, got {d.num_workers}")
    if d.synthetic_num_databases < 2:
        bad("data.synthetic_num_databases", f"must be >= 2 (train and validation use different databases), got {d.synthetic_num_databases}")
    if e.max_new_tokens <= 0 or e.num_beams <= 0 or e.batch_size <= 0:
        bad("eval", "max_new_tokens, num_beams and batch_size must be > 0")
    return cfg


def config_from_dict(data: dict[str, Any] | None, source: str = "<dict>") -> Config:
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections "
                          f"({', '.join(SECTIONS)}), got {type(data).__name__}")
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown key '{key}' (sections: {', '.join(SECTIONS)})")
    model = data.get("model") or {}
    if isinstance(model, dict) and model.get("init_from"):
        from .model import pretrained   # a dense source fixes the architecture keys
        if pretrained.is_dense_source(model["init_from"]):
            try:
                data = {**data, "model": pretrained.apply_architecture(model, source)}
            except ConfigError:
                raise
            except VantageError as e:
                raise ConfigError(f"{source}: model.init_from: {e}") from None
    parts = {name: _build_section(cls, data.get(name) or {}, source, name)
             for name, cls in SECTIONS.items()}
    return validate(Config(**parts), source)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """`tiny`/`small`/`medium`/`large` name a shipped config; anything else is a path."""
    s = str(name_or_path)
    if s in NAMED_CONFIGS:
        try:
            res = importlib.resources.files("vantage_core.configs") / f"{s}_model.yaml"
            if res.is_file():
                return Path(str(res))
        except ModuleNotFoundError:
            pass
        local = Path(__file__).resolve().parent.parent / "configs" / f"{s}_model.yaml"
        if local.is_file():
            return local
        raise ConfigError(f"shipped config '{s}' not found (is vantage installed?)")
    p = Path(s)
    if not p.is_file():
        raise ConfigError(f"{s}: config file not found (use a path or one of {', '.join(NAMED_CONFIGS)})")
    return p


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["training.learning_rate=1e-4", ...]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override '{item}': expected section.key=value")
        key, raw = item.split("=", 1)
        sec, name = key.split(".", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        out.setdefault(sec, {})[name] = value
    return out


def _merge(base: dict, over: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None = None,
                overrides: dict[str, dict[str, Any]] | list[str] | None = None) -> Config:
    """Load a config: defaults < YAML file (``tiny``/``small``/... or a path) < overrides."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = resolve_config_path(path)
        source = str(path)
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{source}: not UTF-8 text") from None
        except OSError as e:
            raise ConfigError(f"{source}: cannot read ({e.strerror})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or "invalid YAML"
            raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections "
                              f"({', '.join(SECTIONS)}), got {type(data).__name__}")
    if overrides:
        if isinstance(overrides, list):
            overrides = parse_overrides(overrides)
        for sec in overrides:
            if sec not in SECTIONS:
                raise ConfigError(f"override: unknown section '{sec}' (sections: {', '.join(SECTIONS)})")
        data = _merge(data, overrides)
        source = f"{source} (with overrides)"
    return config_from_dict(data, source)
