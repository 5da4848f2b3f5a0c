"""Search-space building blocks: parameter ranges, validation, and model-size defaults.

A space is a pure function `suggest(trial, base_config, ranges=None) -> Config` with stable
parameter names; ranges default to the guide's guidance and may be overridden from YAML."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from vantage_core.config import Config
from vantage_core.errors import SearchSpaceError

# The guide's LR guidance per size, widened by LR_MARGIN on each side (x/2 .. x*2) so the
# sweep can find an optimum just outside the hand-tuned band.
LR_MARGIN = 2.0
GUIDE_LR = {"tiny": (2e-3, 8e-3), "small": (3e-4, 5e-4), "medium": (1e-4, 3e-4), "large": (5e-5, 1e-4)}


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    kind: str = "float"    # float | int | categorical
    choices: tuple = ()

    def validate(self, name: str) -> "Range":
        if self.kind == "categorical":
            if not self.choices:
                raise SearchSpaceError(f"search space: '{name}' has no choices")
            return self
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SearchSpaceError(f"search space: '{name}' bounds must be finite")
        if self.low > self.high:
            raise SearchSpaceError(f"search space: '{name}' low={self.low} > high={self.high}")
        if self.log and self.low <= 0:
            raise SearchSpaceError(f"search space: '{name}' is log-scaled but low={self.low} <= 0")
        return self

    def suggest(self, trial, name: str):
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


def model_size(cfg: Config) -> str:
    d = cfg.model.hidden_size
    return "tiny" if d < 1024 else "small" if d < 3072 else "medium" if d < 5120 else "large"


def merge_ranges(defaults: dict[str, Range], overrides: dict[str, Any] | None, space: str) -> dict[str, Range]:
    """Apply YAML overrides like ``{learning_rate: {low: 1e-4, high: 1e-3, log: true}}``."""
    out = dict(defaults)
    for name, spec in (overrides or {}).items():
        if name not in defaults:
            raise SearchSpaceError(f"search space '{space}': unknown parameter '{name}' "
                                   f"(known: {', '.join(sorted(defaults))})")
        base = defaults[name]
        if isinstance(spec, (list, tuple)):
            spec = {"choices": list(spec)}
        if not isinstance(spec, dict):
            raise SearchSpaceError(f"search space '{space}': '{name}' must be a mapping (low/high/log) or a list")
        unknown = set(spec) - {"low", "high", "log", "choices"}
        if unknown:
            raise SearchSpaceError(f"search space '{space}': '{name}' has unknown field '{sorted(unknown)[0]}'")
        try:
            r = Range(float(spec.get("low", base.low)), float(spec.get("high", base.high)),
                      bool(spec.get("log", base.log)), base.kind,
                      tuple(spec.get("choices", base.choices)))
        except (TypeError, ValueError):
            raise SearchSpaceError(f"search space '{space}': '{name}' bounds must be numbers") from None
        out[name] = r
    for name, r in out.items():
        r.validate(name)
    return out


@dataclass
class SearchSpace:
    name: str
    description: str
    default_ranges: Callable[[Config], dict[str, Range]]
    apply: Callable[[Config, dict[str, Any]], Config]   # params -> config

    def ranges(self, base: Config, overrides: dict[str, Any] | None = None) -> dict[str, Range]:
        return merge_ranges(self.default_ranges(base), overrides, self.name)

    def suggest(self, trial, base: Config, ranges: dict[str, Any] | None = None) -> Config:
        rs = self.ranges(base, ranges)
        params = {name: r.suggest(trial, name) for name, r in rs.items()}
        return self.apply(base, params)

    def params_of(self, cfg: Config) -> dict[str, Any]:
        """The parameter values `cfg` already has (used to enqueue the baseline)."""
        d = cfg.to_dict()
        out = {}
        for name in self.default_ranges(cfg):
            sec, key = PARAM_KEYS[name]
            out[name] = d[sec][key]
        return out

    def searched_keys(self, base: Config) -> list[str]:
        return [".".join(PARAM_KEYS[n]) for n in self.default_ranges(base)]


# Stable parameter names -> config key they set.
PARAM_KEYS = {
    "learning_rate": ("training", "learning_rate"),
    "warmup_steps": ("training", "warmup_steps"),
    "router_aux_loss_coef": ("model", "router_aux_loss_coef"),
    "expert_capacity": ("model", "expert_capacity"),
    "router_z_loss_coef": ("model", "router_z_loss_coef"),
    "weight_decay": ("training", "weight_decay"),
    "expert_dropout": ("model", "expert_dropout"),
    "batch_size": ("training", "batch_size"),
    "num_experts_per_token": ("model", "num_experts_per_token"),
    "upcycle_router_init_std": ("model", "upcycle_router_init_std"),
    "upcycle_expert_noise": ("model", "upcycle_expert_noise"),
    "upcycle_drop_fraction": ("model", "upcycle_drop_fraction"),
}


def apply_params(base: Config, params: dict[str, Any]) -> Config:
    changes: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        sec, key = PARAM_KEYS[name]
        changes.setdefault(sec, {})[key] = value
    return base.replace(**changes)
