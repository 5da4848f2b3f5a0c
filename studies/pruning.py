"""The one place that talks to Optuna's pruning API: `trial.report` / `should_prune`."""

from __future__ import annotations

import math
from typing import Any

import optuna

from vantage_core.train import metrics as M

# Exact match moves in steps of 1/n (n eval examples); short CPU proxy trials often all score
# 0, which leaves the sampler and the pruner with nothing but ties. The study's value is
# therefore exact match with ties broken by eval loss: EM + TIE_EPS / (1 + eval_loss), a
# term below 1e-4, smaller than one example's worth of EM for n < 10,000. Ordering by EM is
# unchanged; among equal EM, lower eval loss wins. The pruner watches this same value.
TIE_EPS = 1e-4


def objective_value(report: dict[str, Any], metric: str = M.EVAL_EXACT_MATCH, tie_break: bool = True) -> float:
    value = float(report[metric])
    if tie_break and metric == M.EVAL_EXACT_MATCH:
        loss = report.get(M.EVAL_LOSS)
        if loss is not None and math.isfinite(loss) and loss >= 0:
            value += TIE_EPS / (1.0 + float(loss))
    return value


class OptunaPruningCallback:
    """Reports the objective's own metric (in the study's direction) at every evaluation.

    Also records each evaluation in the trial's user attributes so reports and the
    dashboard can read the metric history. Multi-objective studies cannot report (Optuna
    has no `Trial.report` for them), so `prune=False` there.
    """

    def __init__(self, trial: optuna.Trial, metric: str = M.EVAL_EXACT_MATCH, *, prune: bool = True,
                 tie_break: bool = True):
        self.trial = trial
        self.metric = metric
        self.prune = prune
        self.tie_break = tie_break
        self.history: list[dict[str, Any]] = []
        self.train_tail: list[dict[str, Any]] = []
        self.best_value: float | None = None

    def on_train_report(self, report: dict[str, Any]) -> None:
        keep = {k: report[k] for k in (M.STEP, M.TRAIN_LOSS, M.TRAIN_GRAD_NORM, M.TRAIN_AUX_LOSS,
                                        M.EXPERT_UTILIZATION, M.DROPPED_FRACTION, M.TRAIN_TOKENS_PER_SEC)
                if k in report}
        self.train_tail.append(keep)
        self.trial.set_user_attr("train_history", self.train_tail[-200:])

    def on_eval_report(self, report: dict[str, Any]) -> None:
        step = int(report[M.STEP])
        value = objective_value(report, self.metric, self.tie_break)
        self.history.append({k: v for k, v in report.items() if isinstance(v, (int, float))})
        self.trial.set_user_attr("eval_history", self.history)
        if not math.isfinite(value):
            return
        self.best_value = value if self.best_value is None else max(self.best_value, value)
        if not self.prune:
            return
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_step", step)
            raise optuna.TrialPruned(f"pruned at step {step}: {self.metric}={value:.4f}")

    def close(self):
        pass
