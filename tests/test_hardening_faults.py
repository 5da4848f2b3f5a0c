"""Faults, and nothing lost: a trial process SIGKILLed mid-step and mid-checkpoint-save, the
sweep driver killed, the PostgreSQL connections dropped (and the database unreachable for a
while), a full disk while writing checkpoints and reports, a trial that hangs.

Each: the study resumes, every finished trial is intact, the victim trial is FAIL with its
reason, and checkpoints are never half-written under a final name.
(The in-process SIGKILL of a sweep and the subprocess runner's killed child / --trial-timeout
with the fake objective are in tests/test_sweep_kill.py; these use real training where it
matters and check the checkpoints.)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sweep_process_helpers import (FAKE, REAL, SMALL_DATA, assert_checkpoints_intact, cli, env_with, finished_snapshot,
                                   fsize_limit, load_study, one_error_line, pg_db, popen,  # noqa: F401
                                   terminate_backends, trial_child)

pytestmark = pytest.mark.integration

STUDY = "lr-tiny-synthetic"


# ---------------------------------------------------------------------------------------------
# Fault-injecting objectives (loaded by the sweep's trial processes via --objective-fn)
# ---------------------------------------------------------------------------------------------
def _arm_kill_in_save(nth: int, point: str) -> None:
    """SIGKILL this process during its `nth` checkpoint save, at `point`."""
    import pathlib

    import mlx.core as mx

    from vantage_core import weights as ck

    state = {"saves": 0}
    real_save, real_rename, real_rmtree = mx.save_safetensors, pathlib.Path.rename, ck.shutil.rmtree

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def save(path, arrays, *a, **k):
        real_save(path, arrays, *a, **k)
        if Path(path).name == "model.safetensors":
            state["saves"] += 1
            if state["saves"] == nth and point == "weights":
                die()
        if Path(path).name == "optimizer.safetensors" and state["saves"] == nth and point == "optimizer":
            die()

    def rename(self, target):
        armed = state["saves"] == nth
        if armed and point == "before-rename" and ".old-" in Path(target).name:
            die()
        out = real_rename(self, target)
        if armed and point == "between-renames" and ".old-" in Path(target).name:
            die()
        return out

    def rmtree(path, *a, **k):
        if state["saves"] == nth and point == "before-cleanup" and ".old-" in Path(path).name:
            die()
        return real_rmtree(path, *a, **k)

    mx.save_safetensors = save
    pathlib.Path.rename = rename
    ck.shutil.rmtree = rmtree


def kill_during_save(trial, spec):
    from studies.objective import run_trial
    if trial.number == int(os.environ["VT_KILL_TRIAL"]):
        _arm_kill_in_save(int(os.environ["VT_KILL_SAVE_N"]), os.environ["VT_KILL_POINT"])
    return run_trial(trial, spec)


def hang_on_trial(trial, spec):
    """The chosen trial hangs and ignores SIGTERM (so the runner must escalate to SIGKILL)."""
    from runners.fake_objective import quadratic
    if trial.number == int(os.environ["VT_HANG_TRIAL"]):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        trial.set_user_attr("hung", True)
        while True:
            time.sleep(60)
    return quadratic(trial, spec)


def wait_for(pred, proc, timeout=240, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended before {what}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def train_lines(trial_dir: Path) -> int:
    f = trial_dir / "metrics.jsonl"
    if not f.is_file():
        return 0
    return sum(1 for ln in f.read_text().splitlines() if '"train/loss"' in ln)


def sqlite(tmp):
    return f"sqlite:///{tmp}/vantage_studies.db"


# ---------------------------------------------------------------------------------------------
# 1. A trial process SIGKILLed mid-step (real training, one process per trial)
# ---------------------------------------------------------------------------------------------
def test_trial_process_sigkill_mid_step(tmp_path):
    p = popen(tmp_path, "lr", "--model", "tiny", "--runner", "subprocess", "--trials", "2", *REAL)
    trials = tmp_path / "sweeps" / STUDY / "trials"
    wait_for(lambda: train_lines(trials / "trial-0000") >= 5, p, what="trial 0 at step 5")
    victim = trial_child(p.pid, 0)
    assert victim, "trial 0's process not found"
    os.kill(victim, signal.SIGKILL)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    study = load_study(sqlite(tmp_path), STUDY)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE"], states
    t0 = study.trials[0]
    assert "killed by SIGKILL" in t0.user_attrs["failure_reason"]
    retry = study.trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.params == t0.params and retry.user_attrs["baseline"]
    assert retry.user_attrs["steps"] == 8 and Path(retry.user_attrs["checkpoint_path"]).is_dir()
    # the victim's own folder: checkpoint-3 was saved before the kill and loads
    finals = assert_checkpoints_intact(tmp_path / "sweeps")
    assert trials / "trial-0000" / "checkpoint-3" in finals


# ---------------------------------------------------------------------------------------------
# 2. SIGKILL mid-checkpoint-save: every point of the save, then inside a running sweep
# ---------------------------------------------------------------------------------------------
SAVE_CHILD = r"""
import json, os, sys
import mlx.core as mx
from mlx.utils import tree_flatten, tree_map
from vantage_core.config import load_config
from vantage_core.data.tokenizer import SQLTokenizer
from vantage_core.weights import save_checkpoint
from vantage_core.train.optim import make_optimizer
from vantage_core.model import build_model
import test_hardening_faults as F

ck, point = sys.argv[1], sys.argv[2]
cfg = load_config("tiny")
model = build_model(cfg)
opt = make_optimizer(cfg.training)
opt.init(model.trainable_parameters())
tok = SQLTokenizer.train(["SELECT name FROM singer WHERE age > 3"] * 4, 300)
def total():
    return float(sum(mx.sum(v).item() for _, v in tree_flatten(model.parameters())))
sums = {"1": total()}
save_checkpoint(ck, model=model, config=cfg, tokenizer=tok, optimizer=opt, state={"v": 1})
model.update(tree_map(lambda p: p + 1.0, model.parameters()))
mx.eval(model.parameters())
sums["2"] = total()
open(ck + ".sums.json", "w").write(json.dumps(sums))
F._arm_kill_in_save(1, point)
save_checkpoint(ck, model=model, config=cfg, tokenizer=tok, optimizer=opt, state={"v": 2})
print("not killed")
"""


@pytest.mark.parametrize("point", ["weights", "optimizer", "before-rename", "between-renames", "before-cleanup"])
def test_sigkill_at_every_point_of_a_checkpoint_save(tmp_path, point):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from vantage_core.model import build_model
    from vantage_core.sources import find_checkpoint
    from vantage_core.weights import load_checkpoint_config, load_state, load_weights

    ck = tmp_path / "run" / "checkpoint-latest"
    ck.parent.mkdir()
    r = subprocess.run([sys.executable, "-c", SAVE_CHILD, str(ck), point], cwd=tmp_path, env=env_with(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-3000:])
    sums = json.loads((tmp_path / "run" / "checkpoint-latest.sums.json").read_text())
    # A folder under the final name is always complete; otherwise the previous copy is found.
    got = find_checkpoint(ck)
    if ck.is_dir():
        assert got == ck
    else:
        assert point == "between-renames" and got.name.startswith(".checkpoint-latest.old-")
    v = load_state(got)["v"]
    expect = {"weights": 1, "optimizer": 1, "before-rename": 1, "between-renames": 1, "before-cleanup": 2}[point]
    assert v == expect
    model = build_model(load_checkpoint_config(got))
    load_weights(model, got)
    total = float(sum(mx.sum(p).item() for _, p in tree_flatten(model.parameters())))
    assert total == pytest.approx(sums[str(v)], rel=1e-5)
    assert mx.load(str(got / "optimizer.safetensors"))
    assert_checkpoints_intact(tmp_path / "run")
    if point != "between-renames":
        return
    # the next save (a resumed run: another process) replaces it cleanly
    r = subprocess.run([sys.executable, "-c", SAVE_CHILD.replace("F._arm_kill_in_save(1, point)", ""), str(ck),
                        point], cwd=tmp_path, env=env_with(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "not killed" in r.stdout, r.stderr[-3000:]
    assert load_state(ck)["v"] == 2
    assert_checkpoints_intact(tmp_path / "run")


def test_trial_killed_mid_checkpoint_save_in_a_sweep(tmp_path):
    env = {"VT_KILL_TRIAL": "0", "VT_KILL_SAVE_N": "3", "VT_KILL_POINT": "weights"}
    r = cli(tmp_path, "lr", "--model", "tiny", "--runner", "subprocess", "--trials", "2", *REAL,
            "--objective-fn", "test_hardening_faults:kill_during_save", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sqlite(tmp_path), STUDY)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "COMPLETE"], states
    assert "killed by SIGKILL" in study.trials[0].user_attrs["failure_reason"]
    assert study.trials[1].user_attrs["retry_of"] == 0 and study.trials[1].user_attrs["steps"] == 8
    victim = tmp_path / "sweeps" / STUDY / "trials" / "trial-0000"
    leftovers = [p.name for p in victim.iterdir() if p.name.startswith(".checkpoint-")]
    assert leftovers and all(".tmp-" in n for n in leftovers), leftovers   # the half-written one
    finals = assert_checkpoints_intact(tmp_path / "sweeps")
    assert victim / "checkpoint-3" in finals                               # saved before the kill


# ---------------------------------------------------------------------------------------------
# 3. The sweep driver killed (with its trial process), then the sweep is run again
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective", [
    "fake", pytest.param("real", marks=pytest.mark.slow)])
def test_sweep_driver_and_trial_killed_then_resumed(tmp_path, objective):
    if objective == "fake":
        log = tmp_path / "runs.log"
        extra, env = list(FAKE), {"VANTAGE_FAKE_LOG": str(log), "VANTAGE_FAKE_STEP_SECONDS": "0.5",
                                  "VANTAGE_FAKE_STEPS": "4"}
        started = lambda: log.is_file() and len(log.read_text().split()) >= 4   # noqa: E731
    else:
        extra, env = list(REAL), {}
        started = lambda: train_lines(tmp_path / "sweeps" / STUDY / "trials" / "trial-0001") >= 3  # noqa: E731
    p = popen(tmp_path, "lr", "--model", "tiny", "--runner", "subprocess", "--trials", "4", *extra, env=env,
              new_session=True)
    wait_for(started, p, what="trial 1 running")
    os.killpg(p.pid, signal.SIGKILL)          # the driver and its trial process, at once
    p.communicate()
    study = load_study(sqlite(tmp_path), STUDY)
    assert [t.state.name for t in study.trials][1:] == ["RUNNING"]
    assert study.trials[0].state.name in ("COMPLETE", "PRUNED")
    before = finished_snapshot(study)
    r = cli(tmp_path, "lr", "--model", "tiny", "--runner", "subprocess", "--trials", "1", *extra, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sqlite(tmp_path), STUDY)
    assert [t.state.name for t in study.trials][1] == "FAIL" and len(study.trials) == 3
    assert study.trials[2].state.name in ("COMPLETE", "PRUNED")
    assert "died while running this trial" in study.trials[1].user_attrs["failure_reason"]
    assert study.trials[2].user_attrs["retry_of"] == 1 and study.trials[2].params == study.trials[1].params
    assert {n: v for n, v in finished_snapshot(study).items() if n in before} == before
    if objective == "real":
        assert_checkpoints_intact(tmp_path / "sweeps")


# ---------------------------------------------------------------------------------------------
# 4. PostgreSQL: connections terminated again and again, and the database unreachable for a while
# ---------------------------------------------------------------------------------------------
def test_postgresql_connections_dropped_and_restored(tmp_path, pg_db):
    url, name, admin = pg_db
    env = {"VANTAGE_FAKE_STEP_SECONDS": "0.08", "VANTAGE_FAKE_STEPS": "5"}   # >= 16 s of trials: outlasts the chaos
    p = popen(tmp_path, "lr", "--model", "tiny", "--trials", "40", "--sampler", "random", "--storage", url,
              "--heartbeat-interval", "1", "--grace-period", "30", *FAKE, env=env)
    stats = {"killed": 0, "outage_s": 0.0}

    def chaos():
        time.sleep(3)
        for i in range(10):                      # phase 1: drop every connection, twice a second
            if p.poll() is not None:
                return
            stats["killed"] += terminate_backends(admin, name)
            time.sleep(0.5)
        if p.poll() is None:                     # phase 2: unreachable for 3 s, then restored
            t0 = time.time()
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            stats["killed"] += terminate_backends(admin, name)
            time.sleep(3)
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            stats["outage_s"] = time.time() - t0

    th = threading.Thread(target=chaos)
    th.start()
    out, err = p.communicate(timeout=600)
    th.join()
    assert p.returncode == 0, err[-4000:]
    assert "Traceback" not in err, err[-4000:]
    assert stats["killed"] >= 5 and stats["outage_s"] >= 3, (stats, "the sweep ended before the faults")
    assert "connection lost" in err                          # it noticed, and rode it out
    study = load_study(url, STUDY)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(40))
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}, [t.state.name for t in trials]
    print(f"\nPostgreSQL chaos: {stats['killed']} backends terminated, {stats['outage_s']:.1f}s outage; "
          f"40/40 trials finished")


# ---------------------------------------------------------------------------------------------
# 5. Disk full while writing a checkpoint (vantage-train, a sweep) and a report
# ---------------------------------------------------------------------------------------------
TRAIN_FAST = ["--config", "tiny", "--data_dir", "synthetic", "--num_train_steps", "2", "--set",
              "training.save_steps=1", "--set", "training.eval_steps=2", "--set", "data.max_eval_examples=4",
              "--set", "eval.max_new_tokens=8", "--no-progress", "--no-tensorboard", *SMALL_DATA]


@pytest.fixture(scope="module")
def warm_cache():
    """The synthetic data and tokenizer in the test cache (written once, without a size limit)."""
    from vantage_core.config import load_config
    from vantage_core.data.prepare import prepare_data
    prepare_data(load_config("tiny", SMALL_DATA[1::2]))


def test_disk_full_during_checkpoint_in_vantage_train(tmp_path, warm_cache):
    r = cli(tmp_path, *TRAIN_FAST, "--output_dir", tmp_path / "run", module="vantage_core.cli.train",
            preexec_fn=fsize_limit(1_000_000))        # model.safetensors is ~1.9 MB
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "cannot write checkpoint" in line, r.stderr[-3000:]
    assert not [p for p in (tmp_path / "run").iterdir() if "checkpoint" in p.name]   # nothing half-written
    assert json.loads((tmp_path / "run" / "run_status.json").read_text())["status"] == "failed"
    # with space again, the same command trains and saves
    r = cli(tmp_path, *TRAIN_FAST, "--output_dir", tmp_path / "run", module="vantage_core.cli.train")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(assert_checkpoints_intact(tmp_path / "run")) >= 3


def test_disk_full_during_a_sweep_then_resumed(tmp_path, warm_cache):
    fast = ["--steps-per-trial", "4", "--set", "training.save_steps=2", "--set", "data.max_eval_examples=4",
            "--set", "eval.max_new_tokens=8", "--pruner", "none", *SMALL_DATA]
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "2", *fast, preexec_fn=fsize_limit(1_000_000))
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sqlite(tmp_path), STUDY)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    for t in study.trials:
        assert "cannot write checkpoint" in t.user_attrs["failure_reason"], t.user_attrs["failure_reason"]
    assert_checkpoints_intact(tmp_path / "sweeps")
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "1", *fast)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_study(sqlite(tmp_path), STUDY)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert len(assert_checkpoints_intact(tmp_path / "sweeps")) >= 2


def test_disk_full_while_writing_a_report(tmp_path):
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "4", *FAKE)
    assert r.returncode == 0, r.stderr[-3000:]
    report = tmp_path / "sweeps" / STUDY / "report"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in report.iterdir()}
    assert "report.md" in before and any(n.endswith(".png") for n in before)
    db = (tmp_path / "vantage_studies.db").read_bytes()
    r = cli(tmp_path, "report", STUDY, "--out", report, preexec_fn=fsize_limit(4096))
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "File too large" in line, r.stderr[-3000:]
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in report.iterdir()}
    assert after == before                         # old report intact, no temporary files left
    assert (tmp_path / "vantage_studies.db").read_bytes() == db


# ---------------------------------------------------------------------------------------------
# 6. A trial that hangs (and ignores SIGTERM): --trial-timeout kills it, the sweep goes on
# ---------------------------------------------------------------------------------------------
def test_hanging_trial_is_killed_by_trial_timeout(tmp_path):
    t0 = time.time()
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "2", "--trial-timeout", "4",
            "--objective-fn", "test_hardening_faults:hang_on_trial", env={"VT_HANG_TRIAL": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    elapsed = time.time() - t0
    study = load_study(sqlite(tmp_path), STUDY)
    states = [t.state.name for t in study.trials]
    assert states[0] in ("COMPLETE", "PRUNED") and states[1:] == ["FAIL"], states
    assert "timed out after 4s" in study.trials[1].user_attrs["failure_reason"]
    assert study.trials[1].user_attrs.get("hung") is True
    assert len(study.trials) == 2                                 # a hang is not retried
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    assert elapsed < 120, elapsed
    with pytest.raises(ProcessLookupError):        # the hung process is gone
        os.kill(study.trials[1].user_attrs["pid"], 0)
