"""Feasibility before launch: the memory prediction runs for every sampled configuration and a
trial predicted not to fit is pruned at once with its reason; the report counts them."""

import subprocess
import sys

import optuna
import pytest

from studies.feasibility import check_trial, parse_size
from vantage_core.config import load_config
from vantage_core.errors import VantageError


@pytest.mark.parametrize("text,expected", [("8GiB", 8 * 2**30), ("16GB", 16 * 10**9), ("512MiB", 512 * 2**20),
                                           ("1.5g", int(1.5 * 2**30)), ("1000", 1000), (None, None)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["eight", "8XB", "-1GiB", "0"])
def test_parse_size_rejects(bad):
    with pytest.raises(VantageError):
        parse_size(bad)


def test_check_trial_prunes_with_reason_or_records_prediction():
    cfg = load_config("tiny")
    study = optuna.create_study()
    t = study.ask()
    pred = check_trial(t, cfg, max_memory=64 * 2**30)
    assert pred["peak"] > 0 and study.trials[0].user_attrs["predicted_peak_memory_bytes"] == pred["peak"]
    t2 = study.ask()
    with pytest.raises(optuna.TrialPruned, match="infeasible"):
        check_trial(t2, cfg, max_memory=2**20)
    ua = study.trials[1].user_attrs
    assert "predicted peak memory" in ua["infeasible_reason"] and "--max-memory" in ua["infeasible_reason"]


@pytest.mark.integration
def test_sweep_with_max_memory_prunes_before_launch_and_report_counts(tmp_path):
    # Nothing an lr sweep samples fits 1 MiB: refused before any study (tests/test_sweep_refuse.py).
    r = subprocess.run([sys.executable, "-m", "studies", "lr", "--model", "tiny", "--trials", "2",
                        "--max-memory", "1MiB"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no configuration the search space can sample fits" in r.stderr
    assert not (tmp_path / "vantage_studies.db").exists()
    # A batch-size sweep at 300 MiB: batch 8 fits (predicted 215 MiB), the baseline's 16 (421 MiB) does not.
    r = subprocess.run([sys.executable, "-m", "studies", "batch-size", "--model", "tiny", "--trials", "2",
                        "--max-memory", "300MiB", "--steps-per-trial", "4", "--set", "data.max_eval_examples=4"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    study = optuna.load_study(study_name="batch-size-tiny-synthetic", storage=f"sqlite:///{tmp_path}/vantage_studies.db")
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert study.trials[0].params["batch_size"] == 16 and study.trials[0] in pruned
    for t in study.trials:
        assert (t in pruned) == (t.params["batch_size"] > 8)
    for t in pruned:
        assert "predicted peak memory" in t.user_attrs["infeasible_reason"]
        assert t.user_attrs["predicted_peak_memory_bytes"] > 300 * 2**20
        assert "train_history" not in t.user_attrs  # never trained
    md = (tmp_path / "sweeps" / "batch-size-tiny-synthetic" / "report" / "report.md").read_text()
    assert f"**{len(pruned)} of 2 trials** were predicted not to fit" in md
    assert "Out of Memory" in md  # diagnosis names the guide's OOM remedies
    r = subprocess.run([sys.executable, "-m", "studies", "lr", "--max-memory", "lots"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot read memory size 'lots'" in r.stderr
