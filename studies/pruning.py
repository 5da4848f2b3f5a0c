"""The one place that talks to Optuna's pruning API: `trial.report` / `should_prune`, and the
pruners that decide on them."""

from __future__ import annotations

import copy
import math
from typing import Any

import optuna

from vantage_core.train import metrics as M

# Exact match moves in steps of 1/n (n eval examples); short CPU proxy trials often all score
# 0, which leaves the pruner with nothing but ties. The study stores the exact match itself
# (trial values and intermediate values are plain EM, so reports and optuna-dashboard show the
# real metric); the tie-break lives only inside the pruner. At every evaluation the callback
# also records a tie-broken score, EM + TIE_EPS / (1 + eval_loss), in the trial's
# PRUNER_SCORES user attribute; the Vantage pruners (`TieBreak*Pruner`, made by
# `studies.study.make_pruner`) decide on those scores instead of the intermediate values. The
# term is below 1e-4, smaller than one example's worth of EM for n < 10,000: ordering by EM is
# unchanged; among equal EM, lower eval loss wins.
TIE_EPS = 1e-4
PRUNER_SCORES = "pruner_scores"   # user attribute: {str(step): tie-broken score}


def tie_broken_score(report: dict[str, Any], metric: str = M.EVAL_EXACT_MATCH, tie_break: bool = True) -> float:
    """The value the pruner compares for one evaluation: `report[metric]`, plus (exact match
    only, `tie_break`) a < TIE_EPS bonus for lower eval loss. Never stored as a trial value."""
    value = float(report[metric])
    if tie_break and metric == M.EVAL_EXACT_MATCH:
        loss = report.get(M.EVAL_LOSS)
        if loss is not None and math.isfinite(loss) and loss >= 0:
            value += TIE_EPS / (1.0 + float(loss))
    return value


class OptunaPruningCallback:
    """Reports the objective's own metric (plain, in the study's direction) at every evaluation.

    Also records each evaluation in the trial's user attributes so reports and the dashboard
    can read the metric history, and (with `tie_break`) the tie-broken score the Vantage
    pruners decide on. Multi-objective studies cannot report (Optuna has no `Trial.report`
    for them), so `prune=False` there.
    """

    def __init__(self, trial: optuna.Trial, metric: str = M.EVAL_EXACT_MATCH, *, prune: bool = True,
                 tie_break: bool = True):
        self.trial = trial
        self.metric = metric
        self.prune = prune
        self.tie_break = tie_break
        self.history: list[dict[str, Any]] = []
        self.train_tail: list[dict[str, Any]] = []
        self.scores: dict[str, float] = {}
        self.best_value: float | None = None   # best plain metric over evaluations

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
        if not math.isfinite(value):
            return
        self.best_value = value if self.best_value is None else max(self.best_value, value)
        if not self.prune:
            return
        if self.tie_break and self.metric == M.EVAL_EXACT_MATCH:
            # Before report/should_prune: the pruner reads it from the trial it is given.
            self.scores[str(step)] = tie_broken_score(report, self.metric)
            self.trial.set_user_attr(PRUNER_SCORES, dict(self.scores))
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_step", step)
            raise optuna.TrialPruned(f"pruned at step {step}: {self.metric}={value:.4f}")

    def close(self):
        pass


# ------------------------------------------------------------------ pruners

def with_pruner_scores(trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """`trial` as the pruner sees it: each intermediate value replaced by the tie-broken score
    recorded for that step (PRUNER_SCORES), where there is one. A shallow copy; the stored
    trial is untouched. Trials without scores (`--tie-break none`, studies from before the
    scores existed) are returned as they are."""
    scores = trial.user_attrs.get(PRUNER_SCORES)
    if not isinstance(scores, dict) or not scores or not trial.intermediate_values:
        return trial
    iv = {}
    for step, v in trial.intermediate_values.items():
        s = scores.get(str(step))
        iv[step] = float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else v
    view = copy.copy(trial)
    view.intermediate_values = iv
    return view


class _ScoredStudy:
    """The study as the pruner sees it: `get_trials` returns `with_pruner_scores` views;
    everything else (direction, storage, study id, name, sampler, ...) is the study's own."""

    def __init__(self, study: optuna.Study):
        self._scored_study = study

    def get_trials(self, deepcopy: bool = True, states=None) -> list[optuna.trial.FrozenTrial]:
        return [with_pruner_scores(t) for t in self._scored_study.get_trials(deepcopy=deepcopy, states=states)]

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name):
        if name == "_scored_study":   # not yet set (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._scored_study, name)


class TieBreakPruner:
    """Mixin over an Optuna pruner: it decides on the tie-broken scores (PRUNER_SCORES) of this
    trial and of the others instead of their plain intermediate values. Subclassing (rather
    than wrapping) keeps `isinstance(study.pruner, HyperbandPruner)`, which Optuna's samplers
    use to see only the trial's Hyperband bracket."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return super().prune(_ScoredStudy(study), with_pruner_scores(trial))  # type: ignore[misc]


class TieBreakMedianPruner(TieBreakPruner, optuna.pruners.MedianPruner):
    pass


class TieBreakSuccessiveHalvingPruner(TieBreakPruner, optuna.pruners.SuccessiveHalvingPruner):
    pass


class TieBreakHyperbandPruner(TieBreakPruner, optuna.pruners.HyperbandPruner):
    pass
