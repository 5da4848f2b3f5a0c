"""Creating, resuming and describing studies: samplers and pruners by name, the baseline
trial, and the fingerprint that keeps a study's trials comparable."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import optuna

from search_spaces import SearchSpace
from vantage_core.config import Config, config_from_dict
from vantage_core.errors import StorageError, VantageError

from .pruning import TieBreakHyperbandPruner, TieBreakMedianPruner, TieBreakSuccessiveHalvingPruner
from .recovery import MAX_RETRIES, _enqueue_retry, reap_dead_trials, retry_stale_trial  # noqa: F401 (re-exported)
from .settings import SETTINGS_ATTR, SweepSettings, load_settings, save_settings  # noqa: F401 (re-exported)
from .storage import redact

log = logging.getLogger("vantage.sweep")

METRIC_VERSION = "em-spider-v1"
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "nsga2")
PRUNERS = ("median", "hyperband", "sha", "none")


def code_version() -> str:
    try:
        from importlib.metadata import version
        return version("vantage")
    except Exception:
        return "0+unknown"


def make_sampler(name: str, seed: int | None, space: SearchSpace, base: Config, ranges=None,
                 *, parallel: bool = False):
    if name == "tpe":
        # constant_liar: trials running in other processes count as bad, so parallel
        # workers do not all sample the same point.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3, constant_liar=parallel)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        grid = {}
        for pname, r in space.ranges(base, ranges).items():
            if r.kind == "categorical":
                grid[pname] = list(r.choices)
            elif r.kind == "int":
                step = max(1, int((r.high - r.low) // 4))
                grid[pname] = list(range(int(r.low), int(r.high) + 1, step))
            elif r.log:
                import numpy as np
                grid[pname] = [float(v) for v in np.geomspace(r.low, r.high, 5)]
            else:
                import numpy as np
                grid[pname] = [float(v) for v in np.linspace(r.low, r.high, 5)]
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise VantageError(f"unknown sampler '{name}' (choose from {', '.join(SAMPLERS)})")


def make_pruner(name: str, *, n_startup_trials: int = 2, min_resource: int = 1, max_resource: int = 100):
    """Optuna's pruner of that name, deciding on the eval-loss tie-broken exact match the
    trials record (studies.pruning.TieBreakPruner); the trials' values stay plain EM."""
    if name == "median":
        # Few start-up trials so pruning can happen within the first sweep.
        return TieBreakMedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=0)
    if name == "hyperband":
        return TieBreakHyperbandPruner(min_resource=min_resource, max_resource=max_resource)
    if name == "sha":
        return TieBreakSuccessiveHalvingPruner(min_resource=min_resource)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise VantageError(f"unknown pruner '{name}' (choose from {', '.join(PRUNERS)})")


# Checked in this order so the message names the data first when the data changed.
FINGERPRINT_ORDER = ("data_source", "data_split", "tokenizer", "base_config", "metric", "objectives", "space",
                     "code_version")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fingerprint_diff(old: dict, new: dict, old_cfg: dict | None = None, new_cfg: dict | None = None) -> list[str]:
    """Human-readable list of what changed between two fingerprints."""
    keys = [k for k in FINGERPRINT_ORDER if k in old or k in new] + \
           [k for k in new if k not in FINGERPRINT_ORDER]
    out = []
    for k in keys:
        if old.get(k) == new.get(k):
            continue
        if k == "base_config" and old_cfg is not None and new_cfg is not None:
            a, b = _flat(old_cfg), _flat(new_cfg)
            diffs = [f"{key} {a.get(key)!r} -> {b.get(key)!r}" for key in sorted(set(a) | set(b))
                     if a.get(key) != b.get(key)]
            out.append("base config: " + ", ".join(diffs[:4]) if diffs else f"base_config: {old.get(k)!r} -> {new.get(k)!r}")
        else:
            out.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
    return out


_ABSENT = object()


def _only_keys_added_at_default(old: dict, new: dict, old_cfg: dict | None, new_cfg: dict | None) -> bool:
    """Whether two fingerprints differ only because the base config gained keys (a newer
    Vantage's config sections) that the old one lacks and that sit at their defaults."""
    if not old_cfg or not new_cfg or any(old.get(k) != new.get(k) for k in set(old) | set(new) if k != "base_config"):
        return False
    a, b = _flat(old_cfg), _flat(new_cfg)
    defaults = _flat(config_from_dict({}).to_dict())
    diff = [k for k in set(a) | set(b) if a.get(k, _ABSENT) != b.get(k, _ABSENT)]
    return bool(diff) and all(k not in a and k in defaults and b.get(k, _ABSENT) == defaults[k] for k in diff)


def base_config_without_searched(space: SearchSpace, base: Config, steps_per_trial: int | None) -> dict:
    cfg = base.to_dict()
    for key in space.searched_keys(base):
        sec, k = key.split(".")
        cfg[sec].pop(k, None)
    if steps_per_trial:
        cfg["training"]["num_train_steps"] = steps_per_trial
    return cfg


def fingerprint_parts(space: SearchSpace, base: Config, data_desc: dict[str, Any],
                      objectives: list[str], steps_per_trial: int | None) -> dict[str, Any]:
    """What makes trials comparable: base config minus searched keys, data, tokenizer, metric."""
    cfg = base_config_without_searched(space, base, steps_per_trial)
    return {
        "base_config": hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16],
        "data_source": data_desc["source"],
        "data_split": f"train={data_desc['train_examples']} valid={data_desc['valid_examples']} "
                      f"eval={data_desc['eval_examples']} valid_dbs={','.join(data_desc['valid_dbs'])[:200]}",
        "tokenizer": data_desc["tokenizer"],
        "metric": METRIC_VERSION,
        "objectives": ",".join(objectives),
        "space": space.name,
        "code_version": code_version(),
    }


def open_study(storage, study_name: str, directions: list[str], sampler, pruner, fingerprint: dict[str, Any],
               *, new_study: bool = False, accept_mismatch: bool = False,
               base_config_dict: dict | None = None, metric_names: list[str] | None = None) -> optuna.Study:
    """Create the study, or continue it after checking its directions and fingerprint.
    `metric_names` (one per objective, e.g. ["exact_match"]) are stored with
    `study.set_metric_names`, so optuna-dashboard labels the values."""
    try:
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    except Exception as e:
        raise StorageError(f"storage: cannot list studies ({str(e).splitlines()[0][:200]})") from None
    if study_name in existing and new_study:
        raise VantageError(f"study '{study_name}' already exists; --new-study needs a new --study-name "
                           "(existing studies are never overwritten)")
    if study_name in existing:
        have = [d.name.lower() for d in existing[study_name].directions]
        if have != directions:
            raise VantageError(f"study '{study_name}' exists with directions {have}, this sweep needs "
                               f"{directions}; use another --study-name")
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        old = study.user_attrs.get("fingerprint")
        if old and old != fingerprint and _only_keys_added_at_default(
                old, fingerprint, study.user_attrs.get(SETTINGS_ATTR, {}).get("base_config"), base_config_dict):
            # Config keys added since the study was made, at their defaults: the same setup.
            log.info("study %s: base config gained keys at their defaults since it was made; same setup", study_name)
            study.set_user_attr("fingerprint", fingerprint)
        elif old and old != fingerprint:
            changed = fingerprint_diff(old, fingerprint, study.user_attrs.get(SETTINGS_ATTR, {}).get("base_config"),
                                       base_config_dict)
            if not accept_mismatch:
                raise VantageError(f"study '{study_name}' was run with a different setup ({'; '.join(changed[:4])}); "
                                   "pass --new-study with a new --study-name, or --accept-mismatch")
            log.warning("study %s: fingerprint mismatch accepted (%s)", study_name, "; ".join(changed))
            study.set_user_attr("fingerprint", fingerprint)
        _name_metrics(study, metric_names)
        return study
    study = optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                sampler=sampler, pruner=pruner)
    study.set_user_attr("fingerprint", fingerprint)
    _name_metrics(study, metric_names)
    return study


def _name_metrics(study: optuna.Study, names: list[str] | None) -> None:
    if names and study.metric_names != list(names):
        study.set_metric_names(list(names))


def load_existing(storage, study_name: str, storage_url: str = "", **kwargs) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=storage, **kwargs)
    except KeyError:
        raise VantageError(f"study '{study_name}' not found in {redact(storage_url) or 'storage'}") from None
