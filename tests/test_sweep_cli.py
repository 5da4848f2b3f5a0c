"""The spine end to end through the CLI: a real (short) sweep in SQLite storage, resume, bad input."""

import hashlib
import sqlite3
import subprocess
import sys

import optuna
import pytest

pytestmark = pytest.mark.integration

FAST = ["--steps-per-trial", "24", "--set", "training.eval_steps=12", "--set", "data.max_eval_examples=16",
        "--set", "eval.max_new_tokens=48"]


def sweep(tmp_path, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "studies", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)


def db_digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def n_trials(path, name):
    return len(optuna.load_study(study_name=name, storage=f"sqlite:///{path}").trials)


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    r = sweep(tmp, "lr", "--model", "tiny", "--trials", "3", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp, r


def test_sweep_creates_study_with_metrics_and_report(first_sweep):
    tmp, r = first_sweep
    study = optuna.load_study(study_name="lr-tiny-synthetic", storage=f"sqlite:///{tmp}/vantage_studies.db")
    assert len(study.trials) == 3
    base = study.trials[0]
    assert base.user_attrs.get("baseline") is True
    assert base.params["learning_rate"] == pytest.approx(6e-3)  # the config's own value first
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert finished
    for t in study.trials:
        if t.state.name == "COMPLETE":
            assert 0.0 <= t.value <= 1.0
            assert t.user_attrs["peak_memory_bytes"] > 0
            assert t.user_attrs["tokens_per_sec"] > 0
            assert t.intermediate_values  # the pruner saw the periodic exact match
            assert "hidden_size: 64" in t.user_attrs["config"]
    assert study.user_attrs["fingerprint"]["data_source"] == "synthetic"
    report = tmp / "sweeps" / "lr-tiny-synthetic" / "report"
    csv = (report / "trials.csv").read_text()
    assert "exact_match" in csv and "peak_memory_mb" in csv and "tokens_per_sec" in csv
    assert len(csv.strip().splitlines()) == 4
    assert "Best trial" in (report / "report.md").read_text()


def test_each_trial_writes_its_tensorboard_run(first_sweep):
    """`tensorboard --logdir sweeps/<study>` compares trials: one event-file run per trial
    (pruned trials keep theirs), and the study names its metric for optuna-dashboard."""
    tmp, _ = first_sweep
    study = optuna.load_study(study_name="lr-tiny-synthetic", storage=f"sqlite:///{tmp}/vantage_studies.db")
    assert study.metric_names == ["exact_match"]
    trials = tmp / "sweeps" / "lr-tiny-synthetic" / "trials"
    for t in study.trials:
        if t.state.name in ("COMPLETE", "PRUNED"):
            logs = trials / f"trial-{t.number:04d}" / "logs"
            assert list(logs.glob("events.out.tfevents.*")), (t.number, t.state.name)


def test_rerun_continues_same_study(first_sweep):
    tmp, _ = first_sweep
    db = tmp / "vantage_studies.db"
    before = n_trials(db, "lr-tiny-synthetic")
    r = sweep(tmp, "lr", "--model", "tiny", "--trials", "1", *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    assert n_trials(db, "lr-tiny-synthetic") == before + 1


@pytest.mark.parametrize("args,needle", [
    (["lr", "--model", "tiny", "--set", "model.hiden_size=3"], "model.hiden_size"),
    (["lr", "--model", "tiny", "--data", "spider:/nonexistent/spider"], "/nonexistent/spider"),
    (["lr", "--model", "tiny", "--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot connect"),
    (["lr", "--model", "tiny", "--storage", "notaurl"], "not a storage URL"),
    (["lr", "--model", "tiny", "--sampler", "bogus"], "unknown sampler"),
    (["lr", "--model", "nosuch.yaml"], "nosuch.yaml"),
    (["learning-rate", "--model", "tiny"], "unknown sweep"),
])
def test_bad_input_one_line_exit_2_and_study_untouched(first_sweep, args, needle):
    tmp, _ = first_sweep
    db = tmp / "vantage_studies.db"
    digest = db_digest(db)
    r = sweep(tmp, *args, *FAST)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert db_digest(db) == digest
