"""Crashes: SIGKILL a sweep mid-trial and rerun (the study continues, the killed trial ends
FAIL with a reason and is retried, no finished trial is lost); stale heartbeats of another
host; one process per trial with a killed child and --trial-timeout."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

pytestmark = pytest.mark.integration

FAKE = ["--objective-fn", "runners.fake_objective:quadratic"]


def popen(tmp, *args, env):
    return subprocess.Popen([sys.executable, "-m", "studies", *args], cwd=tmp, env=dict(os.environ, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli(tmp, *args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "studies", *args], cwd=tmp, env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=timeout)


def wait_lines(path, n, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and len(path.read_text().split()) >= 2 * n:
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
    raise AssertionError("timed out waiting for trials to start")


def load(tmp, name="lr-tiny-synthetic"):
    from studies.storage import open_storage
    return optuna.load_study(study_name=name, storage=open_storage(f"sqlite:///{tmp}/vantage_studies.db",
                                                                   heartbeat_interval=None))


def snapshot(study):
    return {t.number: (t.state.name, t.value, dict(t.params)) for t in study.trials
            if t.state.name in ("COMPLETE", "PRUNED")}


@pytest.mark.parametrize("other_host", [False, True], ids=["same-host-pid-dead", "heartbeat-stale"])
def test_sigkill_mid_trial_then_rerun(tmp_path, other_host):
    log = tmp_path / "runs.log"
    env = {"VANTAGE_FAKE_LOG": str(log), "VANTAGE_FAKE_STEP_SECONDS": "1.0", "VANTAGE_FAKE_STEPS": "3"}
    args = ["lr", "--model", "tiny", *FAKE, "--heartbeat-interval", "1", "--grace-period", "2"]
    p = popen(tmp_path, *args, "--trials", "6", env=env)
    wait_lines(log, 3, p)             # trials 0, 1 finished; trial 2 is running (its first step: 1 s)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    study = load(tmp_path)
    killed = [t for t in study.trials if t.state.name == "RUNNING"]
    assert [t.number for t in killed] == [2]
    killed_params = dict(killed[0].params)
    before = snapshot(study)
    assert sorted(before) == [0, 1]
    if other_host:
        # As if it had run on another machine: only the heartbeat can tell it is dead.
        study._storage.set_trial_user_attr(killed[0]._trial_id, "host", "another-machine")
        time.sleep(3)                 # > grace period
    r = cli(tmp_path, *args, "--trials", "2", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    study = load(tmp_path)
    t2 = study.trials[2]
    assert t2.state.name == "FAIL"
    if other_host:
        reason = study.user_attrs["failure_reasons"]["2"]
        assert "heartbeat stale" in reason
    else:
        reason = t2.user_attrs["failure_reason"]
        assert "died while running this trial" in reason
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 2]
    assert len(retry) == 1 and retry[0].params == killed_params
    assert retry[0].state.name in ("COMPLETE", "PRUNED") and reason in retry[0].user_attrs["retry_reason"]
    after = snapshot(study)
    for n, v in before.items():
        assert after[n] == v          # no finished trial lost or changed
    assert len(study.trials) == 5 and not [t for t in study.trials if t.state.name == "RUNNING"]


def test_subprocess_runner_killed_child_and_trial_timeout(tmp_path):
    log = tmp_path / "runs.log"
    env = {"VANTAGE_FAKE_LOG": str(log), "VANTAGE_FAKE_STEP_SECONDS": "0.6", "VANTAGE_FAKE_STEPS": "3"}
    p = popen(tmp_path, "lr", "--model", "tiny", *FAKE, "--runner", "subprocess", "--trials", "3", env=env)
    wait_lines(log, 2, p)                        # trial 1's child is running
    pid = int(log.read_text().split()[3])
    assert pid != p.pid
    os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    study = load(tmp_path)
    states = [t.state.name for t in study.trials]
    assert states[1] == "FAIL", states
    assert "killed by SIGKILL" in study.trials[1].user_attrs["failure_reason"]
    assert study.trials[2].user_attrs.get("retry_of") == 1 and study.trials[2].params == study.trials[1].params
    for t in (study.trials[0], study.trials[2]):
        assert t.state.name in ("COMPLETE", "PRUNED")
        assert t.user_attrs["process_peak_rss_bytes"] > 10 * 2**20   # each trial's own process
        assert t.user_attrs["pid"] not in (p.pid, pid)
    # --trial-timeout: the child is killed and its trial FAILs with the reason.
    env["VANTAGE_FAKE_STEP_SECONDS"] = "3"
    r = cli(tmp_path, "lr", "--model", "tiny", *FAKE, "--trial-timeout", "5", "--trials", "1", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    t = load(tmp_path).trials[-1]
    assert t.state.name == "FAIL" and "timed out after 5s" in t.user_attrs["failure_reason"]
