"""In-process runner: trials run one after another in this process (tiny models)."""

from __future__ import annotations

import logging

import optuna

from studies.objective import TrialFailed, TrialSpec, make_objective
from studies.recovery import reap_dead_trials

log = logging.getLogger("vantage.sweep")


def run_inprocess(study: optuna.Study, spec: TrialSpec, data=None, *, n_trials: int | None,
                  timeout: float | None = None, n_jobs: int = 1) -> int:
    """Run `n_trials` trials here. A failed trial (crash, OOM, NaN) is recorded as FAIL with its
    reason and the sweep goes on. (`n_jobs > 1` is runners.parallel: MLX state is per process.)"""
    if n_jobs != 1:
        raise ValueError("run_inprocess runs one trial at a time; use runners.parallel for n_jobs > 1")
    if data is not None:
        spec._data = data
    reap_dead_trials(study)
    done = {"n": 0}

    def after(st, ft):
        done["n"] += 1
        reap_dead_trials(st)

    study.optimize(make_objective(spec), n_trials=n_trials, timeout=timeout, catch=(TrialFailed,),
                   callbacks=[after], show_progress_bar=False, gc_after_trial=True)
    return done["n"]
