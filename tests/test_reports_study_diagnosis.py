"""Diagnosis that agrees with the study: a loss spike at the same step in every trial is the
data's (a batch), not the learning rate's; no learning-rate range is recommended whose only
trial the pruner stopped on the eval-loss tie-break; no remedy recommends a value the trial's
config already has. One Finding class and one remedies table for the trainer and the report."""

import logging

import optuna
import yaml

from reports.build import build_report
from reports.diagnosis import (Finding, diagnose_history, diagnose_study, pruned_on_tie_break,
                               study_context)

D = optuna.distributions
TS = optuna.trial.TrialState
DIST = {"learning_rate": D.FloatDistribution(1e-3, 2e-2, log=True)}
CONFIG = {"training": {"learning_rate": None, "max_grad_norm": 1.0, "warmup_steps": 20, "seed": 42},
          "model": {"router_z_loss_coef": 0.001, "router_aux_loss_coef": 0.01, "expert_dropout": 0.0,
                    "expert_capacity": 1.25}}


def train_hist(last_step, spikes=(), every=20):
    rows = []
    for step in range(every, last_step + 1, every):
        loss = 0.8 + 6.0 * 0.95 ** step
        if step in spikes:
            loss *= 1.6
        rows.append({"step": step, "train/loss": loss, "train/grad_norm": 1.1, "expert/utilization": 0.95})
    return rows


def trial(lr, state, *, steps, spikes=(), iv=None, em=None, baseline=False):
    cfg = {k: dict(v) for k, v in CONFIG.items()}
    cfg["training"]["learning_rate"] = lr
    ua = {"train_history": train_hist(steps, spikes), "config": yaml.safe_dump(cfg), "steps": steps}
    if baseline:
        ua["baseline"] = True
    if em is not None:
        ua["exact_match"] = em
        ua["eval_examples"] = 64
    if state == TS.PRUNED:
        ua["pruned_at_step"] = max(iv)
    return optuna.trial.create_trial(state=state, value=em if state == TS.COMPLETE else None,
                                     params={"learning_rate": lr}, distributions=DIST,
                                     intermediate_values=iv or {}, user_attrs=ua)


def synthetic_lr_study():
    """The shape of the lr-tiny-synthetic study: two completed trials, the rest pruned; every
    trial that got past step 220 has a loss spike there; trial 0 (lr 6e-3) also spikes at 340
    on its own; the only trial in 1.2e-3..3e-3 (trial 2) was pruned at step 100 on the
    tie-break (exact match 0, like every other trial at step 100)."""
    study = optuna.create_study(study_name="lr-tiny-synthetic", direction="maximize")
    study.set_user_attr("fingerprint", {"objectives": "exact_match"})
    full = {100: 0.0, 200: 0.03, 300: 0.09, 400: 0.2}
    study.add_trial(trial(6e-3, TS.COMPLETE, steps=400, spikes=(220, 340), iv=full, em=0.203, baseline=True))
    study.add_trial(trial(4.58e-3, TS.COMPLETE, steps=400, spikes=(220,), iv={**full, 400: 0.172}, em=0.172))
    study.add_trial(trial(2.418e-3, TS.PRUNED, steps=100, iv={100: 0.0}, em=0.0))
    study.add_trial(trial(1.498e-2, TS.PRUNED, steps=100, iv={100: 0.0}, em=0.0))
    study.add_trial(trial(7.3e-3, TS.PRUNED, steps=300, spikes=(220,), iv={100: 0.0, 200: 0.016, 300: 0.06}, em=0.062))
    study.add_trial(trial(4.3e-3, TS.PRUNED, steps=300, spikes=(220,), iv={100: 0.0, 200: 0.03, 300: 0.05}, em=0.05))
    return study


def test_tie_break_pruning_is_recognised():
    study = synthetic_lr_study()
    trials = study.get_trials()
    tie, note = pruned_on_tie_break(trials[2], trials)
    assert tie and "tie-break" in note and "step 100" in note
    # trial 5 was pruned at step 300 with exact match 0.05 below the others' median there
    tie, note = pruned_on_tie_break(trials[5], trials)
    assert not tie and "below the others' median" in note


def test_spike_at_the_same_step_in_every_trial_points_at_the_data():
    study = synthetic_lr_study()
    ctx = study_context(study.get_trials())
    assert set(ctx.shared_spikes) == {220}
    assert "4 of the 4 trials" in ctx.shared_spikes[220]
    found = diagnose_study(study.get_trials())
    for n in (0, 1, 4, 5):
        data = [f for f in found[n] if f.mode == "data_spike"]
        assert len(data) == 1 and data[0].step == 220, (n, found[n])
        f = data[0]
        assert "batch" in f.remedy and "not from the learning rate" in f.remedy and "training.seed" in f.remedy
        assert "Reduce the learning rate" not in f.remedy and "try" not in f.remedy.split("training.seed")[0]
        assert "4 of the 4 trials" in f.evidence
    # trial 1's only spike is the shared one: no learning-rate finding at all
    assert [f.mode for f in found[1]] == ["data_spike"]


def test_no_learning_rate_range_whose_only_trial_was_pruned_on_the_tie_break():
    study = synthetic_lr_study()
    found = diagnose_study(study.get_trials())
    own = [f for f in found[0] if f.mode == "loss_spike"]
    assert len(own) == 1 and own[0].step == 340
    r = own[0].remedy
    assert "try 0.0012-0.003" not in r and "Reduce the learning rate 2-5x" not in r
    assert "does not recommend that range" in r and "trial 2" in r and "tie-break" in r
    # the rest of the guide's advice stays, minus what the config already has
    assert "max_grad_norm: 0.5`, was 1" in r
    assert "router_z_loss_coef" not in r                      # already 0.001 in the trial's config


def test_learning_rate_range_is_recommended_with_evidence_or_when_untried():
    lr_hist = train_hist(400, spikes=(340,))
    study = optuna.create_study(direction="maximize")
    study.add_trial(trial(1e-2, TS.COMPLETE, steps=400, spikes=(340,), iv={400: 0.1}, em=0.1))
    study.add_trial(trial(3e-3, TS.COMPLETE, steps=400, iv={400: 0.3}, em=0.3))
    f = next(f for f in diagnose_study(study.get_trials())[0] if f.mode == "loss_spike")
    assert "try 0.002-0.005" in f.remedy and "trial 1" in f.remedy and "completed there" in f.remedy
    lonely = optuna.create_study(direction="maximize")
    lonely.add_trial(trial(1e-2, TS.COMPLETE, steps=400, spikes=(340,), iv={400: 0.1}, em=0.1))
    f = next(f for f in diagnose_study(lonely.get_trials())[0] if f.mode == "loss_spike")
    assert "try 0.002-0.005 (no trial of this study ran there yet)" in f.remedy
    assert lr_hist  # the histories above are the same shape as the synthetic study's


def test_remedies_never_recommend_a_value_already_set():
    util = [{"step": 10 * (i + 1), "train/loss": 3.0 - 0.05 * i, "expert/utilization": 0.95 if i < 8 else 0.3}
            for i in range(20)]
    cfg = {"model": {"router_aux_loss_coef": 0.02, "expert_dropout": 0.1, "expert_capacity": 1.25},
           "training": {"max_grad_norm": 0.5}}
    (f,) = diagnose_history(util, [], config=cfg)
    assert f.mode == "expert_collapse"
    assert "router_aux_loss_coef: 0.02" not in f.remedy and "expert_dropout: 0.1" not in f.remedy
    assert "expert_capacity: 1.5`, was 1.25" in f.remedy
    oom = diagnose_history([], [], failure_reason="RuntimeError: [malloc] out of memory",
                           config={"training": {"gradient_checkpointing": True, "mixed_precision": "bf16"}})
    assert "gradient_checkpointing" not in oom[0].remedy and "bf16" not in oom[0].remedy
    assert "batch_size" in oom[0].remedy


def test_the_report_section_agrees_with_the_study():
    rep = build_report(synthetic_lr_study())
    table = rep.csvs["diagnosis.csv"]
    assert set(table["mode"]) == {"data_spike", "loss_spike"}
    assert (table["mode"] == "data_spike").sum() == 4
    assert not table["remedy (guide)"].str.contains("try 0.0012-0.003").any()
    assert table["remedy (guide)"].str.contains("does not recommend that range").sum() == 1


def test_one_finding_class_and_one_remedies_table(caplog):
    from reports import diagnosis as RD
    from vantage_core.train import diagnose as TD
    assert RD.Finding is TD.Finding is Finding
    assert RD.REMEDIES is TD.REMEDIES
    assert {m: t for m, (t, _) in RD.MODES.items()} == {m: r.title for m, r in TD.REMEDIES.items()}
    # the trainer's finding names its guide mode and reads the same remedy text
    (f,) = TD.diagnose([{"step": 10 * (i + 1), "train/loss": 2.0, "train/grad_norm": 40.0 if i == 8 else 1.0}
                        for i in range(12)])
    assert f.kind == "exploding_grad_norm" and f.mode == "exploding_gradients"
    assert f.remedy == TD.remedy_text("exploding_gradients") and f.title == TD.REMEDIES["exploding_gradients"].title
    # live warnings leave out what the run's config already has
    cb = TD.DiagnoseCallback(config={"model": {"router_aux_loss_coef": 0.02}})
    with caplog.at_level(logging.WARNING, logger="vantage.diagnose"):
        for r in [{"step": 10 * (i + 1), "expert/utilization": 1.0 if i < 2 else 0.25} for i in range(4)]:
            cb.on_train_report(r)
    assert len(cb.findings) == 1 and "router_aux_loss_coef: 0.02" not in cb.findings[0].remedy
    assert "expert_dropout: 0.1" in cb.findings[0].remedy
