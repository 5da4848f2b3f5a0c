"""Promotion of a trial to a full-budget run evaluated once on dev, and noise repeats."""

import subprocess
import sys

import optuna
import pytest

from studies.promote import t_interval

pytestmark = pytest.mark.integration


def cli(tmp, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "studies", *args], cwd=tmp, capture_output=True, text=True,
                          timeout=timeout)


def test_t_interval():
    m, lo, hi = t_interval([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4) and lo == pytest.approx(0.4 - 4.303 * 0.2 / 3 ** 0.5)
    assert hi == pytest.approx(0.4 + 4.303 * 0.2 / 3 ** 0.5)
    assert t_interval([0.5]) == (0.5, 0.5, 0.5)


def test_promote_best_trial_on_dev_and_repeats(tmp_path):
    # A quick study (fake objective: the trials carry real configs and parameters).
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "3", "--objective-fn",
            "runners.fake_objective:quadratic", "--set", "data.max_eval_examples=8", "--set",
            "eval.max_new_tokens=32", "--steps-per-trial", "6")
    assert r.returncode == 0, r.stderr[-2000:]
    study = optuna.load_study(study_name="lr-tiny-synthetic", storage=f"sqlite:///{tmp_path}/vantage_studies.db")
    best = study.best_trial
    r = cli(tmp_path, "promote", "lr-tiny-synthetic", "--num_train_steps", "8", "--dev-examples", "8",
            "--repeats", "2", "--write-config", "best/tiny_best.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    from vantage_core.config import load_config
    written = load_config(str(tmp_path / "best/tiny_best.yaml"))   # loads back as a config
    assert written.training.learning_rate == pytest.approx(best.params["learning_rate"])
    assert written.training.num_train_steps == 8
    assert f"promoted trial {best.number}" in r.stdout
    study = optuna.load_study(study_name="lr-tiny-synthetic", storage=f"sqlite:///{tmp_path}/vantage_studies.db")
    p = study.user_attrs["promoted"]
    assert p["trial"] == best.number and p["steps"] == 8 and p["split"] == "dev" and p["dev_examples"] == 8
    assert p["params"] == best.params
    lo, hi = p["dev_exact_match_ci"]
    assert lo <= p["dev_exact_match"] <= hi and p["ci_kind"].startswith("t-interval")
    assert len(p["runs"]) == 2 and p["runs"][0]["seed"] != p["runs"][1]["seed"]
    for run in p["runs"]:
        assert run["steps"] == 8 and len(run["exact_match_ci"]) == 2
    assert p["checkpoint_path"] and (tmp_path / p["checkpoint_path"]).exists()
    assert f"learning_rate: {best.params['learning_rate']}" in p["config"]
    assert "num_train_steps: 8" in p["config"]
    assert len(study.user_attrs["promotions"]) == 1
    # the study's report shows the promoted run's dev numbers beside the trial's validation score
    from reports.build import build_report
    rep = build_report(study)
    prom = rep.csvs["promoted.csv"]
    assert list(prom["trial"]) == [best.number] and list(prom["examples"]) == [8]
    lo, hi = p["dev_exact_match_ci"]
    assert prom["dev exact match [95% CI]"].iloc[0].endswith(f"[{lo:.3f}, {hi:.3f}]")
    # errors are one line
    r = cli(tmp_path, "promote", "lr-tiny-synthetic", "--trial", "99", "--num_train_steps", "8")
    assert r.returncode == 2 and "has no trial 99" in r.stderr
    r = cli(tmp_path, "promote", "nosuch", "--num_train_steps", "8")
    assert r.returncode == 2 and "study 'nosuch' not found" in r.stderr


def test_sweep_repeats_record_mean_and_interval(tmp_path):
    r = cli(tmp_path, "capacity", "--model", "tiny", "--trials", "1", "--repeats", "2", "--steps-per-trial", "6",
            "--objective-fn", "runners.fake_objective:quadratic",
            "--set", "training.eval_steps=6", "--set", "data.max_eval_examples=8", "--set", "eval.max_new_tokens=32")
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="capacity-tiny-synthetic", storage=f"sqlite:///{tmp_path}/vantage_studies.db")
    rep = study.user_attrs["repeats"]
    assert rep["trial"] == 0 and len(rep["exact_match"]) == 2 and rep["split"] == "validation"
    assert rep["seeds"] == [43, 44] and rep["steps"] == 6
    assert rep["ci95"][0] <= rep["mean"] <= rep["ci95"][1]
    assert "repeats of trial 0" in r.stdout
