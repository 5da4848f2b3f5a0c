"""A study written by the code before the issue-20 redesign and issue 16's new config keys
(tests/fixtures/study_pre_redesign.db, made at commit f080000 with
`python -m studies lr --model tiny --trials 3 --storage sqlite:///old.db
--objective-fn runners.fake_objective:quadratic`) continues under today's code with the same
fingerprint, and a real change of setup is still refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "study_pre_redesign.db"
FAKE = ["--objective-fn", "runners.fake_objective:quadratic", "--quiet"]


def _sweep(tmp_path, db, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "studies", "lr", "--model", "tiny", "--storage", f"sqlite:///{db}",
                           "--out", str(tmp_path / "sweeps"), *FAKE, *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_pre_redesign_study_continues_and_still_refuses_a_changed_setup(tmp_path):
    db = tmp_path / "s.db"
    shutil.copy(FIXTURE, db)
    before = optuna.load_study(study_name="lr-tiny-synthetic", storage=f"sqlite:///{db}")
    old_trials = [(t.number, t.state, t.params, t.value) for t in before.trials]
    assert len(old_trials) == 3

    r = _sweep(tmp_path, db, "--trials", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    study = optuna.load_study(study_name="lr-tiny-synthetic", storage=f"sqlite:///{db}")
    assert len(study.trials) == 5                                   # added to the same study
    assert [(t.number, t.state, t.params, t.value) for t in study.trials[:3]] == old_trials

    r = _sweep(tmp_path, db, "--trials", "1", "--set", "training.mixed_precision=bf16",
               "--set", "training.master_weights=bfloat16")
    assert r.returncode == 2
    assert "different setup" in r.stderr and "training.master_weights 'float32' -> 'bfloat16'" in r.stderr
    assert len(optuna.load_study(study_name="lr-tiny-synthetic", storage=f"sqlite:///{db}").trials) == 5
