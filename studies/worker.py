"""Joining a study from its storage alone: `vantage-sweep worker --storage URL --study-name S`.

A study created by `vantage-sweep SWEEP` carries its settings in the user attribute
`vantage` (sweep, model config YAML, ranges, steps per trial, data source, objectives,
sampler, pruner, ...), so any process on any machine that can reach the storage can run
trials of it. Used by the worker command, by each process of `--n-jobs N`, and by the
per-trial child processes of the subprocess runner.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from search_spaces import get_space
from vantage_core.config import config_from_dict
from vantage_core.errors import VantageError

from .objective import TrialSpec
from .storage import open_storage, redact
from .study import (fingerprint_diff, fingerprint_parts, load_existing, load_settings, make_pruner,
                    make_sampler, reap_dead_trials)

log = logging.getLogger("vantage.sweep")


@dataclass
class Joined:
    study: optuna.Study
    spec: TrialSpec
    settings: dict[str, Any]


def spec_from_settings(settings: dict[str, Any], *, out: str | Path | None = None) -> TrialSpec:
    space = get_space(settings["sweep"])
    base = config_from_dict(yaml.safe_load(settings["config_yaml"]), source="study settings")
    runs = Path(out) if out else Path(settings.get("runs_dir") or "sweeps/trials")
    return TrialSpec(space=space, base=base, objectives=list(settings["objectives"]),
                     ranges=settings.get("ranges"), steps_per_trial=settings.get("steps_per_trial"),
                     runs_dir=runs, keep_checkpoints=bool(settings.get("keep_checkpoints")),
                     tie_break=bool(settings.get("tie_break", True)),
                     objective_fn=settings.get("objective_fn"))


def join_study(storage_url: str, study_name: str, *, seed: int | None = None, parallel: bool = True,
               out: str | Path | None = None, check_data: bool = True,
               heartbeat_interval: int | None = None, grace_period: int | None = None,
               accept_mismatch: bool = False) -> Joined:
    """Open an existing study with the sampler/pruner/objective its settings describe."""
    probe = open_storage(storage_url, heartbeat_interval=None)
    settings = load_settings(load_existing(probe, study_name, storage_url))
    hb = heartbeat_interval if heartbeat_interval is not None else settings.get("heartbeat_interval", 60)
    gp = grace_period if grace_period is not None else settings.get("grace_period", 180)
    storage = open_storage(storage_url, heartbeat_interval=hb or None, grace_period=gp)
    spec = spec_from_settings(settings, out=out)
    multi = len(spec.objectives) > 1
    sampler = make_sampler(settings.get("sampler", "tpe"), seed, spec.space, spec.base, spec.ranges,
                           parallel=parallel)
    pruner = make_pruner("none" if multi else settings.get("pruner", "median"),
                         max_resource=settings.get("steps_per_trial") or spec.base.training.num_train_steps)
    study = load_existing(storage, study_name, storage_url, sampler=sampler, pruner=pruner)
    if check_data and not spec.objective_fn:
        # This machine's data must be the study's data (same split, same tokenizer).
        fp = fingerprint_parts(spec.space, spec.base, spec.data.describe(), spec.objectives,
                               settings.get("steps_per_trial"))
        old = study.user_attrs.get("fingerprint") or {}
        changed = [d for d in fingerprint_diff(old, fp) if not d.startswith("code_version")]
        if changed and not accept_mismatch:
            raise VantageError(f"study '{study_name}': this machine's setup differs from the study's "
                               f"({'; '.join(changed[:3])}); fix the data/code or pass --accept-mismatch")
        if any(d.startswith("code_version") for d in fingerprint_diff(old, fp)):
            log.warning("study %s: running with a different code version than the study's", study_name)
    return Joined(study, spec, settings)


def optimize(joined: Joined, *, n_trials: int | None, timeout: float | None) -> int:
    """Run trials of the study in this process; returns how many this call ran."""
    from .objective import TrialFailed, make_objective

    study, spec = joined.study, joined.spec
    reap_dead_trials(study)
    before = os.getpid()
    count = {"n": 0}

    def after(st, ft):
        count["n"] += 1
        reap_dead_trials(st)

    study.optimize(make_objective(spec), n_trials=n_trials, timeout=timeout, catch=(TrialFailed,),
                   callbacks=[after], show_progress_bar=False, gc_after_trial=True)
    assert before == os.getpid()
    return count["n"]


def run_worker(storage_url: str, study_name: str, *, n_trials: int | None = None, timeout: float | None = None,
               seed: int | None = None, out: str | Path | None = None, runner: str = "inprocess",
               trial_timeout: float | None = None, accept_mismatch: bool = False) -> int:
    """The worker command: join and run trials until n_trials / timeout (or forever)."""
    if runner == "subprocess" or trial_timeout:
        from runners.subprocess import run_subprocess
        joined = join_study(storage_url, study_name, seed=seed, out=out, check_data=False)
        return run_subprocess(joined.study, storage_url, n_trials=n_trials, timeout=timeout,
                              trial_timeout=trial_timeout, seed=seed, out=out)
    joined = join_study(storage_url, study_name, seed=seed, out=out, accept_mismatch=accept_mismatch)
    log.info("worker %d joined study %s in %s", os.getpid(), study_name, redact(storage_url))
    return optimize(joined, n_trials=n_trials, timeout=timeout)
