"""Creating, resuming and describing studies: samplers and pruners by name, the baseline
trial, and the fingerprint that keeps a study's trials comparable."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import optuna

from search_spaces import SearchSpace
from vantage_core.config import Config
from vantage_core.errors import StorageError, VantageError

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


def make_sampler(name: str, seed: int | None, space: SearchSpace, base: Config, ranges=None):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3)
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
    if name == "median":
        # Few start-up trials so pruning can happen within the first sweep.
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise VantageError(f"unknown pruner '{name}' (choose from {', '.join(PRUNERS)})")


def fingerprint_parts(space: SearchSpace, base: Config, data_desc: dict[str, Any],
                      objectives: list[str], steps_per_trial: int | None) -> dict[str, Any]:
    """What makes trials comparable: base config minus searched keys, data, tokenizer, metric."""
    cfg = base.to_dict()
    for key in space.searched_keys(base):
        sec, k = key.split(".")
        cfg[sec].pop(k, None)
    if steps_per_trial:
        cfg["training"]["num_train_steps"] = steps_per_trial
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
               *, new_study: bool = False, accept_mismatch: bool = False) -> optuna.Study:
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
        if old and old != fingerprint:
            changed = [k for k in fingerprint if old.get(k) != fingerprint.get(k)]
            if not accept_mismatch:
                detail = "; ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed[:3])
                raise VantageError(f"study '{study_name}' was run with a different setup ({detail}); "
                                   "pass --new-study with a new --study-name, or --accept-mismatch")
            log.warning("study %s: fingerprint mismatch accepted (%s)", study_name, ", ".join(changed))
        return study
    study = optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                sampler=sampler, pruner=pruner)
    study.set_user_attr("fingerprint", fingerprint)
    return study
