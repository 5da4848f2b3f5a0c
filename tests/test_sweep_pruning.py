"""Real tiny sweeps with honest pruning: trials store and report the plain exact match, the
median pruner decides on it with ties broken by eval loss (the trials' pruner_scores) and
prunes; the baseline is trial 0; the fingerprint is stored and resuming with different data
is refused with the reason. Multi-objective runs unpruned (fast fake objective)."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.integration

SPIDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "spider"
FAST = ["--set", "data.max_eval_examples=8", "--set", "eval.max_new_tokens=32"]


def sweep(tmp, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "studies", *args], cwd=tmp, capture_output=True, text=True,
                          timeout=timeout)


def load(tmp, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp}/vantage_studies.db")


def check_pruned_study(study, n):
    trials = study.trials
    assert len(trials) == n
    assert trials[0].user_attrs.get("baseline") is True
    assert trials[0].params == {"learning_rate": pytest.approx(trials[0].params["learning_rate"])}
    states = [t.state.name for t in trials]
    assert "PRUNED" in states, [(t.number, t.state.name, t.intermediate_values) for t in trials]
    for t in trials:
        if t.state.name in ("PRUNED", "COMPLETE"):
            # intermediate values are the plain exact match of each evaluation; the pruner's
            # tie-broken scores (EM + < 1e-4 for lower eval loss) are kept apart
            ev = {int(h["step"]): h for h in t.user_attrs["eval_history"]}
            assert t.intermediate_values == {s: ev[s]["eval/exact_match"] for s in t.intermediate_values}
            scores = t.user_attrs["pruner_scores"]
            assert set(scores) == {str(s) for s in t.intermediate_values}
            for s, em in t.intermediate_values.items():
                assert scores[str(s)] == pytest.approx(em + 1e-4 / (1 + ev[s]["eval/loss"]), rel=0, abs=1e-12)
        if t.state.name == "PRUNED":
            step = t.user_attrs["pruned_at_step"]
            assert step in t.intermediate_values and t.user_attrs.get("checkpoint_dir") is None
        if t.state.name == "COMPLETE":
            # the value is the plain exact match: the best reported one, the exact_match attribute
            assert t.value == max(t.intermediate_values.values())
            assert t.value == t.user_attrs["exact_match"]
            lo, hi = t.user_attrs["exact_match_ci"]
            assert 0 <= lo <= t.user_attrs["exact_match"] <= hi <= 1
            assert Path(t.user_attrs["checkpoint_dir"]).is_dir()
    fp = study.user_attrs["fingerprint"]
    for key in ("base_config", "data_source", "data_split", "tokenizer", "metric", "code_version"):
        assert fp[key]
    return states


def test_lr_sweep_prunes_and_refuses_changed_data(tmp_path):
    args = ["lr", "--model", "tiny", "--pruner", "median", "--steps-per-trial", "16",
            "--set", "training.eval_steps=4", *FAST]
    r = sweep(tmp_path, *args, "--trials", "5")
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(tmp_path, "lr-tiny-synthetic")
    check_pruned_study(study, 5)
    assert study.user_attrs["fingerprint"]["data_source"] == "synthetic"
    # Resuming with different data is refused, naming what changed; the study is untouched.
    r = sweep(tmp_path, *args, "--trials", "1", "--set", "data.synthetic_num_databases=12")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: study 'lr-tiny-synthetic' was run with a different setup")
    assert "data_split" in line and "data.synthetic_num_databases 24 -> 12" in line
    assert "--new-study" in line and "--accept-mismatch" in line
    assert len(load(tmp_path, "lr-tiny-synthetic").trials) == 5
    # --new-study with the same name is refused too
    r = sweep(tmp_path, *args, "--trials", "1", "--new-study")
    assert r.returncode == 2 and "already exists" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("data", ["synthetic", "spider"])
def test_lr_sweep_12_trials(tmp_path, data):
    extra = []
    if data == "spider":
        if not (SPIDER / "tables.json").is_file():
            pytest.skip("../shared/data/spider not available")
        extra = ["--data", f"spider:{SPIDER}"]
    args = ["lr", "--model", "tiny", "--trials", "12", "--pruner", "median", "--steps-per-trial", "20",
            "--set", "training.eval_steps=10", "--set", "data.max_eval_examples=16",
            "--set", "eval.max_new_tokens=48", *extra]
    r = sweep(tmp_path, *args, timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    name = f"lr-tiny-{data}"
    states = check_pruned_study(load(tmp_path, name), 12)
    print(name, {s: states.count(s) for s in set(states)})
    r = sweep(tmp_path, *args, "--trials", "1", "--set", "data.validation_fraction=0.3")
    assert r.returncode == 2 and "data_split" in r.stderr


def test_multi_objective_runs_unpruned(tmp_path):
    r = sweep(tmp_path, "--help")
    assert "UNPRUNED" in r.stdout and "NSGA-II" in r.stdout
    r = sweep(tmp_path, "joint", "--model", "tiny", "--trials", "6", "--objectives",
              "exact_match,peak_memory,tokens_per_sec", "--objective-fn", "runners.fake_objective:quadratic")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trials run unpruned" in r.stderr
    study = load(tmp_path, "joint-tiny-synthetic")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MAXIMIZE"]
    assert study.user_attrs["vantage"]["sampler"] == "nsga2" and study.user_attrs["vantage"]["pruner"] == "none"
    assert len(study.trials) == 6 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert all(not t.intermediate_values for t in study.trials)
    assert study.trials[0].user_attrs["baseline"] is True
    assert len(study.trials[0].values) == 3
    assert set(study.trials[1].params) == {"learning_rate", "warmup_steps", "router_aux_loss_coef",
                                           "expert_capacity"}
