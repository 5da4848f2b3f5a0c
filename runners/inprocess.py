"""In-process runner: trials run one after another in this process (tiny models), or
n_jobs > 1 worker processes (joblib's process backend: MLX state is per process) that each
run trials against the same storage."""

from __future__ import annotations

import logging

import optuna

from studies.objective import TrialFailed, TrialSpec, run_trial

log = logging.getLogger("vantage.sweep")


def run_inprocess(study: optuna.Study, spec: TrialSpec, data, *, n_trials: int,
                  timeout: float | None = None, n_jobs: int = 1) -> None:
    def objective(trial):
        return run_trial(trial, spec, data)

    # A failed trial (crash, OOM, NaN) is recorded as FAIL with its reason; the sweep goes on.
    study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(TrialFailed,),
                   show_progress_bar=False, gc_after_trial=True)
