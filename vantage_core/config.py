"""Typed configuration: one dataclass per YAML section, loaded by `load_config`.

Precedence is defaults < YAML < overrides (``section.key=value`` strings or a dict). Each
section checks itself in `__post_init__` (as torchtitan's job config does): values are coerced
to the field's type, then range-checked; `Config.__post_init__` checks what spans sections.
Unknown keys, wrong types and bad values are one-line `ConfigError`s naming the file and the
key path (`config_from_dict` prefixes the file to the section's own message).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

import yaml

from .errors import ConfigError, VantageError
from .sources import apply_architecture, is_dense_source

NAMED_CONFIGS = ("tiny", "small", "medium", "large")


class InvalidValue(ConfigError):
    """A bad value at `key` (``section.name``); `config_from_dict` adds the file in front."""

    def __init__(self, key: str, msg: str):
        super().__init__(f"{key}: {msg}")
        self.key, self.msg = key, msg


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` (as YAML or an override gave it) as type `tp`, or `InvalidValue`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):                      # Optional[X]
        if value is None:
            return None
        return _coerce(value, next(a for a in typing.get_args(tp) if a is not type(None)), key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise InvalidValue(key, f"{value!r} is not one of {', '.join(map(str, typing.get_args(tp)))}")
        return value
    if tp is bool or tp is str:
        if isinstance(value, tp):
            return value
        raise InvalidValue(key, f"expected {'true/false' if tp is bool else 'a string'}, got {value!r}")
    what = "an integer" if tp is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidValue(key, f"expected {what}, got {value!r}")
    if tp is int and isinstance(value, int):
        return value
    try:   # PyYAML (YAML 1.1) reads 3e-4 as a string; accept scientific notation
        v = float(value)
    except ValueError:
        raise InvalidValue(key, f"expected {what}, got {value!r}") from None
    if tp is int:
        if not v.is_integer():
            raise InvalidValue(key, f"expected an integer, got {value!r}")
        return int(v)
    if not math.isfinite(v):
        raise InvalidValue(key, f"expected a finite number, got {value!r}")
    return v


@functools.cache
def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


class _Section:
    """Coerces every field to its annotated type, then runs the section's `check`."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        for name, tp in _field_types(type(self)).items():
            setattr(self, name, _coerce(getattr(self, name), tp, f"{self.section}.{name}"))
        self.check()

    def check(self) -> None:
        pass

    def _bad(self, key: str, msg: str) -> None:
        raise InvalidValue(f"{self.section}.{key}", msg)

    def _require(self, test, rule: str, *keys: str) -> None:
        for key in keys:
            v = getattr(self, key)
            if not test(v):
                self._bad(key, f"must be {rule}, got {v}")


@dataclass
class ModelConfig(_Section):
    section: ClassVar[str] = "model"
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
    # (vantage_core/sources.py).
    init_from: Optional[str] = None
    # Upcycling options (dense sources only): router init std, multiplicative noise on each
    # expert copy, and the share of each expert's FFN neurons re-initialised (Drop-Upcycling).
    upcycle_router_init_std: float = 0.02
    upcycle_expert_noise: float = 0.0
    upcycle_drop_fraction: float = 0.0

    def check(self) -> None:
        self._require(lambda v: v > 0, "> 0", "hidden_size", "num_layers", "num_experts",
                      "num_experts_per_token", "num_attention_heads", "num_key_value_heads",
                      "intermediate_size", "vocab_size", "max_position_embeddings")
        if self.num_experts_per_token > self.num_experts:
            self._bad("num_experts_per_token",
                      f"{self.num_experts_per_token} exceeds model.num_experts={self.num_experts}")
        if self.hidden_size % self.num_attention_heads:
            self._bad("hidden_size", f"{self.hidden_size} is not divisible by "
                                     f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            self._bad("num_key_value_heads", f"num_attention_heads={self.num_attention_heads} is not a "
                                             f"multiple of {self.num_key_value_heads}")
        if (self.hidden_size // self.num_attention_heads) % 2:
            self._bad("hidden_size", "head dimension must be even for RoPE")
        self._require(lambda v: v >= 0, "> 0 (or 0 for no capacity limit)", "expert_capacity")
        self._require(lambda v: v >= 0, ">= 0", "router_aux_loss_coef", "router_z_loss_coef")
        if self.upcycle_router_init_std < 0 or self.upcycle_expert_noise < 0:
            self._bad("upcycle_router_init_std", "upcycle_router_init_std and upcycle_expert_noise must be >= 0")
        self._require(lambda v: 0 <= v < 1, "in [0, 1)", "expert_dropout", "hidden_dropout", "upcycle_drop_fraction")


@dataclass
class DataConfig(_Section):
    section: ClassVar[str] = "data"
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

    def check(self) -> None:
        self._require(lambda v: 0 < v < 1, "in (0, 1)", "validation_fraction")
        self._require(lambda v: 0 <= v <= 1, "in [0, 1]", "augmentation_prob", "schema_perturbation_prob",
                      "schema_rename_table_fraction", "schema_rename_column_fraction")
        if self.schema_rename_table_fraction == 0 and self.schema_rename_column_fraction == 0:
            self._bad("schema_rename_table_fraction", "schema_rename_table_fraction and "
                      "schema_rename_column_fraction are both 0: nothing would be renamed")
        self._require(lambda v: v >= 1, ">= 1", "schema_perturbation_copies", "schema_rename_variants")
        self._require(lambda v: v >= 0, ">= 0", "spider_weight", "bird_sql_weight", "wiki_sql_weight",
                      "gretel_synthetic_weight", "synthetic_weight")
        self._require(lambda v: v > 0, "> 0", "max_eval_examples", "num_workers")
        self._require(lambda v: v >= 2, ">= 2 (train and validation use different databases)",
                      "synthetic_num_databases")


@dataclass
class TrainingConfig(_Section):
    section: ClassVar[str] = "training"
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    # Lean memory (docs/training.md "Lean memory"; train/optim.py): Adafactor's factored second
    # moments instead of AdamW's m and v; the optimizer state stored in bf16 (math in float32);
    # bf16 parameters without a float32 master copy, updated by stochastic rounding.
    optimizer: Literal["adamw", "adafactor"] = "adamw"
    optimizer_state_dtype: Literal["float32", "bfloat16"] = "float32"
    master_weights: Literal["float32", "bfloat16"] = "float32"
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

    def check(self) -> None:
        self._require(lambda v: v > 0, "> 0", "batch_size", "gradient_accumulation_steps", "num_train_steps",
                      "max_seq_length", "save_steps", "eval_steps", "logging_steps", "pad_to_multiple_of",
                      "learning_rate")
        self._require(lambda v: v >= 0, ">= 0 (0: one pass)", "loss_chunk_rows")
        self._require(lambda v: v >= 0, ">= 0", "warmup_steps")
        self._require(lambda v: 0 <= v <= 1, "in [0, 1]", "min_lr_ratio")
        self._require(lambda v: v >= 0, ">= 0", "weight_decay")
        self._require(lambda v: v >= 0, ">= 0 (0 disables clipping)", "max_grad_norm")
        self._require(lambda v: 0 <= v < 1, "in [0, 1)", "adam_beta1", "adam_beta2")
        self._require(lambda v: v > 0, "> 0", "adam_epsilon")
        self._require(lambda v: v >= 0, ">= 0", "save_total_limit")
        if self.master_weights == "bfloat16" and self.mixed_precision != "bf16":
            self._bad("master_weights", f"bfloat16 needs training.mixed_precision: bf16, got "
                                        f"{self.mixed_precision} (the forward runs in the weights' dtype)")


@dataclass
class EvalConfig(_Section):
    section: ClassVar[str] = "eval"
    max_new_tokens: int = 128
    num_beams: int = 1
    batch_size: int = 32
    compare_values: bool = False
    compare_distinct: bool = False
    timeout_s: float = 2.0
    max_rows: int = 100000

    def check(self) -> None:
        if self.max_new_tokens <= 0 or self.num_beams <= 0 or self.batch_size <= 0:
            raise InvalidValue("eval", "max_new_tokens, num_beams and batch_size must be > 0")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        self.check_across(self.model, self.training)

    @staticmethod
    def check_across(model: ModelConfig, training: TrainingConfig) -> None:
        """What spans sections."""
        if training.max_seq_length > model.max_position_embeddings:
            raise InvalidValue("training.max_seq_length", f"{training.max_seq_length} exceeds "
                               f"model.max_position_embeddings={model.max_position_embeddings}")

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
        if is_dense_source(model["init_from"]):   # a dense source fixes the architecture keys
            try:
                data = {**data, "model": apply_architecture(model, source)}
            except ConfigError:
                raise
            except VantageError as e:
                raise ConfigError(f"{source}: model.init_from: {e}") from None
    try:
        given = {}
        for name, cls in SECTIONS.items():   # unknown keys and types first, in the file's order
            values = data.get(name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: '{name}' must be a mapping, got {type(values).__name__}")
            types_ = _field_types(cls)
            for key, value in values.items():
                if key not in types_:
                    raise ConfigError(f"{source}: unknown key '{name}.{key}'")
                given.setdefault(name, {})[key] = _coerce(value, types_[key], f"{name}.{key}")
        # then each section's checks, in this order
        model, training = ModelConfig(**given.get("model", {})), TrainingConfig(**given.get("training", {}))
        Config.check_across(model, training)
        return Config(model=model, training=training, data=DataConfig(**given.get("data", {})),
                      eval=EvalConfig(**given.get("eval", {})))
    except InvalidValue as e:
        raise ConfigError(f"{source}: {e.key}: {e.msg}") from None


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
