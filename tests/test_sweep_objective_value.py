"""The study stores exact match itself: a trial's value and its intermediate values are the plain
exact match the training returned and reported; the eval-loss tie-break lives only inside the
pruner (studies/pruning.py: the `pruner_scores` user attribute and the TieBreak*Pruner classes).
Fast: in-memory studies, training replaced by scripted evaluations."""

from __future__ import annotations

import math
import random

import optuna
import pytest

from search_spaces import get_space
from studies.objective import TrialSpec, run_trial
from studies.pruning import (PRUNER_SCORES, TIE_EPS, OptunaPruningCallback, TieBreakHyperbandPruner,
                             TieBreakMedianPruner, TieBreakSuccessiveHalvingPruner, tie_broken_score,
                             with_pruner_scores)
from studies.study import make_pruner
from vantage_core.config import load_config
from vantage_core.train import metrics as M
from vantage_core.train.trainer import TrainResult

optuna.logging.set_verbosity(optuna.logging.ERROR)


def evals(curve):
    """[(step, em, eval_loss), ...] -> the trainer's eval reports."""
    return [{M.STEP: s, M.EVAL_EXACT_MATCH: em, M.EVAL_LOSS: loss, "eval/num_examples": 16}
            for s, em, loss in curve]


def fake_train(curve):
    """A stand-in for vantage_core.train.trainer.train: reports `curve` to the callbacks, then
    returns what the trainer would (best_exact_match = the best evaluation's EM)."""
    def train(cfg, data, callbacks, evaluate=None, output_dir=None):
        reps = evals(curve)
        for r in reps:
            for cb in callbacks:
                cb.on_eval_report(r)
        ems = [r[M.EVAL_EXACT_MATCH] for r in reps]
        return TrainResult(status="completed", steps=reps[-1][M.STEP], best_exact_match=max(ems),
                           final_exact_match=ems[-1], eval_loss=reps[-1][M.EVAL_LOSS], valid_sql=0.5,
                           peak_memory_bytes=123 << 20, tokens_per_sec=1000.0, wall_time_s=1.0,
                           dropped_fraction=0.0, eval_history=reps)
    return train


@pytest.fixture(scope="module")
def base():
    return load_config("tiny")


def spec_for(base, objectives=("exact_match",), tie_break=True):
    return TrialSpec(space=get_space("lr"), base=base, objectives=list(objectives), tie_break=tie_break)


CURVES = {
    # all-zero EM (short proxy trials): the case the tie-break exists for
    "all_zero": [(4, 0.0, 3.2), (8, 0.0, 2.9), (12, 0.0, 2.7)],
    # best EM mid-run, lower at the end: the value is the best evaluation's (as before)
    "peak_mid": [(4, 0.0625, 2.5), (8, 0.25, 2.0), (12, 0.1875, 2.2)],
    # equal EM at two steps with different losses (the old value took the lower-loss one's bonus)
    "tied_best": [(4, 0.125, 2.4), (8, 0.125, 1.1), (12, 0.0625, 1.9)],
}


@pytest.mark.parametrize("tie_break", [True, False], ids=["tie_break", "no_tie_break"])
@pytest.mark.parametrize("name", list(CURVES))
def test_completed_trial_stores_plain_exact_match(base, monkeypatch, name, tie_break):
    curve = CURVES[name]
    monkeypatch.setattr("vantage_core.train.trainer.train", fake_train(curve))
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median"))
    spec = spec_for(base, tie_break=tie_break)
    study.optimize(lambda t: run_trial(t, spec, data=object()), n_trials=1)
    t = study.trials[0]
    assert t.state == optuna.trial.TrialState.COMPLETE
    best_em = max(em for _, em, _ in curve)
    # (a) the stored value is the exact match training returned: exactly, no loss term
    assert t.value == best_em
    assert t.value == t.user_attrs["exact_match"]
    # (b) the intermediate values are the reported exact matches, step by step
    assert t.intermediate_values == {s: em for s, em, _ in curve}
    # the tie-broken scores exist only for the pruner, and only with the tie-break on
    if tie_break:
        scores = t.user_attrs[PRUNER_SCORES]
        assert scores == {str(s): em + TIE_EPS / (1 + loss) for s, em, loss in curve}
    else:
        assert PRUNER_SCORES not in t.user_attrs


def test_multi_objective_exact_match_is_plain_and_unpruned(base, monkeypatch):
    curve = CURVES["tied_best"]
    monkeypatch.setattr("vantage_core.train.trainer.train", fake_train(curve))
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=make_pruner("none"))
    spec = spec_for(base, objectives=("exact_match", "peak_memory"))
    study.optimize(lambda t: run_trial(t, spec, data=object()), n_trials=1)
    t = study.trials[0]
    assert t.values == [0.125, float(123 << 20)]
    assert t.intermediate_values == {} and PRUNER_SCORES not in t.user_attrs


# ------------------------------------------------------------------ the pruner keeps the tie-break

def callback_objective(curves, tie_break=True):
    """Objective feeding trial n's curve through the real callback (as run_trial does)."""
    def objective(trial):
        cb = OptunaPruningCallback(trial, M.EVAL_EXACT_MATCH, tie_break=tie_break)
        curve = curves[trial.number]
        for r in evals(curve):
            cb.on_eval_report(r)
        return max(em for _, em, _ in curve)
    return objective


def flat(em, loss, steps=(1, 2, 3, 4)):
    return [(s, em, loss) for s in steps]


@pytest.mark.parametrize("pruner", ["median", "sha"])
def test_pruner_separates_equal_zero_em_by_eval_loss(pruner):
    # Two finished trials at EM 0 (loss 2), then one worse (loss 3) and one better (loss 1),
    # all at EM 0.0: only the eval loss tells them apart.
    curves = [flat(0.0, 2.0), flat(0.0, 2.0), flat(0.0, 3.0), flat(0.0, 1.0)]
    states = {}
    for tie_break in (True, False):
        study = optuna.create_study(direction="maximize",
                                    pruner=make_pruner(pruner, n_startup_trials=2, max_resource=4))
        study.optimize(callback_objective(curves, tie_break), n_trials=len(curves))
        states[tie_break] = [t.state.name for t in study.trials]
        worse = study.trials[2]
        # stored values stay plain EM, for the pruned trial too (Optuna stores its last report)
        assert worse.value == 0.0 and set(worse.intermediate_values.values()) == {0.0}
    assert states[True] == ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    # without the tie-break the same trials are all ties, and nothing is pruned
    assert states[False] == ["COMPLETE"] * 4


def random_curves(seed, n_trials=14, steps=(2, 4, 6, 8)):
    """Curves with many exact ties in EM (16 examples, mostly 0) and varied eval loss."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_trials):
        loss, em = rng.uniform(2.0, 4.0), 0
        c = []
        for s in steps:
            loss -= rng.uniform(0.0, 0.3)
            em = min(16, em + (rng.random() < 0.25))
            c.append((s, em / 16, round(loss, 3)))
        out.append(c)
    return out


def old_objective(curves):
    """Before: the tie-broken value itself was reported (and stored), to a plain Optuna pruner."""
    def objective(trial):
        best = None
        for r in evals(curves[trial.number]):
            v = tie_broken_score(r)
            best = v if best is None else max(best, v)
            trial.report(v, r[M.STEP])
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best
    return objective


PLAIN = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
         "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
         "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=8)}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pruner", ["median", "sha", "hyperband"])
def test_pruning_decisions_unchanged_from_tie_broken_values(pruner, seed):
    curves = random_curves(seed)
    runs = {}
    for mode in ("old", "new"):
        p = PLAIN[pruner]() if mode == "old" else make_pruner(pruner, n_startup_trials=2, max_resource=8)
        study = optuna.create_study(study_name="same-brackets", direction="maximize", pruner=p)
        obj = old_objective(curves) if mode == "old" else callback_objective(curves)
        study.optimize(obj, n_trials=len(curves))
        runs[mode] = study.trials
    old, new = runs["old"], runs["new"]
    # pruned at the same trials and steps as when the trial values carried the tie-break
    assert [(t.state.name, t.last_step) for t in new] == [(t.state.name, t.last_step) for t in old]
    assert any(t.state.name == "PRUNED" for t in new), "the scenario must prune something"
    for t_new, t_old, curve in zip(new, old, curves):
        reported = {s: em for s, em, _ in curve if s in t_new.intermediate_values}
        assert t_new.intermediate_values == reported        # plain EM in the storage
        assert t_new.intermediate_values != t_old.intermediate_values   # the old ones were not
        if t_new.state.name == "COMPLETE":
            assert t_new.value == max(em for _, em, _ in curve)
            assert math.floor(t_old.value * 16 + 1e-9) / 16 == t_new.value


def test_vantage_pruners_keep_their_optuna_types():
    # Optuna's samplers look for isinstance(study.pruner, HyperbandPruner) to sample per bracket
    assert isinstance(make_pruner("hyperband"), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("hyperband"), TieBreakHyperbandPruner)
    assert isinstance(make_pruner("median"), TieBreakMedianPruner)
    assert isinstance(make_pruner("sha"), TieBreakSuccessiveHalvingPruner)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)


def test_with_pruner_scores_views_without_touching_the_trial():
    t = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.0, 2: 0.0, 3: 0.0},
                                  user_attrs={PRUNER_SCORES: {"1": 3e-5, "2": True}})
    v = with_pruner_scores(t)
    assert v.intermediate_values == {1: 3e-5, 2: 0.0, 3: 0.0}   # a non-number score is ignored
    assert v.last_step == 3 and t.intermediate_values == {1: 0.0, 2: 0.0, 3: 0.0}
    plain = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.5})
    assert with_pruner_scores(plain) is plain
