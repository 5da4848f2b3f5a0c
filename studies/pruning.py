"""The one place that talks to Optuna's pruning API: `trial.report` / `should_prune`."""

from __future__ import annotations

import math
from typing import Any

import optuna

from vantage_core.train import metrics as M


class OptunaPruningCallback:
    """Reports the objective's own metric (in the study's direction) at every evaluation.

    Also records each evaluation in the trial's user attributes so reports and the
    dashboard can read the metric history. Multi-objective studies cannot report (Optuna
    has no `Trial.report` for them), so `prune=False` there.
    """

    def __init__(self, trial: optuna.Trial, metric: str = M.EVAL_EXACT_MATCH, *, prune: bool = True):
        self.trial = trial
        self.metric = metric
        self.prune = prune
        self.history: list[dict[str, Any]] = []
        self.train_tail: list[dict[str, Any]] = []

    def on_train_report(self, report: dict[str, Any]) -> None:
        keep = {k: report[k] for k in (M.STEP, M.TRAIN_LOSS, M.TRAIN_GRAD_NORM, M.TRAIN_AUX_LOSS,
                                        M.EXPERT_UTILIZATION, M.DROPPED_FRACTION, M.TRAIN_TOKENS_PER_SEC)
                if k in report}
        self.train_tail.append(keep)
        self.trial.set_user_attr("train_history", self.train_tail[-200:])

    def on_eval_report(self, report: dict[str, Any]) -> None:
        step = int(report[M.STEP])
        value = float(report[self.metric])
        self.history.append({k: v for k, v in report.items() if isinstance(v, (int, float))})
        self.trial.set_user_attr("eval_history", self.history)
        if not self.prune or not math.isfinite(value):
            return
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_step", step)
            raise optuna.TrialPruned(f"pruned at step {step}: {self.metric}={value:.4f}")

    def close(self):
        pass
