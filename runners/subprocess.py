"""One process per trial: isolation from leaks and crashes, per-trial peak memory, and a
per-trial timeout (`--trial-timeout`).

The parent asks the trial (`study.ask()`: it is RUNNING from then on, and a queued baseline
or retry is popped here) and starts `python -m runners.trial_worker ... --trial-number N`,
which samples, trains, reports and tells the result. If the child dies (killed, crashed,
out of memory) or runs past the timeout, the parent sets `failure_reason` and tells FAIL, so
no trial is left RUNNING. The child's peak RSS is stored as `process_peak_rss_bytes`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import optuna
from optuna.trial import TrialState

from studies.recovery import _enqueue_retry, mark_owner, reap_dead_trials
from studies.storage import absolute

log = logging.getLogger("vantage.sweep")


def _wait(proc: subprocess.Popen, timeout: float | None) -> tuple[int | None, int]:
    """Wait for the child with os.wait4 (its own rusage); (returncode or None on timeout, maxrss bytes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, ru.ru_maxrss * 1024
        if deadline is not None and time.monotonic() > deadline:
            return None, 0
        time.sleep(0.2)


def _kill(proc: subprocess.Popen) -> int:
    try:
        proc.send_signal(signal.SIGTERM)
        rc, rss = _wait(proc, 10)
        if rc is None:
            proc.kill()
            rc, rss = _wait(proc, None)
        return rss
    except ProcessLookupError:
        return 0


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def run_one(study: optuna.Study, storage_url: str, *, trial_timeout: float | None = None, seed: int | None = None,
            out: str | None = None, verbose: bool = False, quiet: bool = False) -> int:
    """Run one trial in a child process; returns its number. `quiet`: the child logs warnings
    only (the parent's live display shows its progress)."""
    trial = study.ask()
    mark_owner(trial)  # the parent owns it until the child takes over
    n = trial.number
    # The storage URL (it may hold a password) goes through the environment: a command line is
    # readable by every user of the machine (`ps`), a process's environment only by its owner.
    cmd = [sys.executable, "-m", "runners.trial_worker",
           "--study-name", study.study_name, "--trial-number", str(n)]
    if seed is not None:
        cmd += ["--seed", str(seed + n)]   # every child's sampler sees a different stream
    if out:
        cmd += ["--out", str(out)]
    if verbose:
        cmd.append("-v")
    elif quiet:
        cmd.append("--quiet")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=dict(os.environ, VANTAGE_TRIAL_STORAGE=storage_url))
    rc, rss = _wait(proc, trial_timeout)
    reason = None
    if rc is None:
        rss = _kill(proc)
        reason = f"timed out after {trial_timeout:g}s (--trial-timeout); the trial's process was killed"
    elif rc < 0:
        reason = f"the trial's process was killed by {_signal_name(rc)} (out of memory or killed)"
    elif rc != 0:
        reason = f"the trial's process exited with code {rc} (crash)"
    frozen = study._storage.get_trial(trial._trial_id)
    if frozen.state == TrialState.RUNNING:
        reason = reason or "the trial's process exited without reporting a result"
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "failure_reason", reason)
            storage.set_trial_user_attr(trial._trial_id, "process_peak_rss_bytes", rss)
            storage.set_trial_user_attr(trial._trial_id, "wall_time_s", time.monotonic() - t0)
            study.tell(n, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            return n
        log.warning("trial %d: FAIL (%s)", n, reason)
        if rc is not None:
            # Killed or crashed (not a timeout, which would only repeat): retried once more.
            _enqueue_retry(study, study._storage.get_trial(trial._trial_id), reason)
    elif reason:
        log.warning("trial %d: %s after it was recorded as %s", n, reason, frozen.state.name)
    return n


def run_subprocess(study: optuna.Study, storage_url: str, *, n_trials: int | None, timeout: float | None = None,
                   trial_timeout: float | None = None, n_jobs: int = 1, seed: int | None = 0,
                   out: str | None = None, verbose: bool = False, quiet_children: bool = False) -> int:
    """Run n_trials trials, each in its own process, n_jobs at a time."""
    storage_url = absolute(storage_url)
    reap_dead_trials(study)
    t_start = time.monotonic()
    lock = threading.Lock()
    state = {"left": n_trials, "done": 0}

    def take() -> bool:
        with lock:
            if timeout is not None and time.monotonic() - t_start > timeout:
                return False
            if state["left"] is not None:
                if state["left"] <= 0:
                    return False
                state["left"] -= 1
            return True

    def loop():
        while take():
            run_one(study, storage_url, trial_timeout=trial_timeout, seed=seed, out=out, verbose=verbose,
                    quiet=quiet_children)
            with lock:
                state["done"] += 1
            reap_dead_trials(study)

    threads = [threading.Thread(target=loop, name=f"trial-runner-{i}") for i in range(max(1, n_jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return state["done"]


__all__ = ["run_subprocess", "run_one"]
