"""Dead and stale trials: FAIL with a reason, then retried with the same parameters; and which
process owns a RUNNING trial (so a restarted sweep on the same host can tell it died).

Below both studies.storage (whose heartbeat calls `retry_stale_trial`) and studies.study."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import optuna
from optuna.trial import TrialState

log = logging.getLogger("vantage.sweep")

MAX_RETRIES = 2


def proc_start_time(pid: int | str = "self") -> str | None:
    """The process's start time (clock ticks since boot) so a reused pid is not mistaken."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def mark_owner(trial) -> None:
    """Which process runs the trial: lets a restarted sweep on this host fail it at once if
    that process died (heartbeats cover other hosts after their grace period)."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("pid_start", proc_start_time())


def _enqueue_retry(study: optuna.Study, failed, reason: str) -> None:
    retries = int(failed.user_attrs.get("retries", 0))
    if retries >= MAX_RETRIES:
        log.warning("trial %d failed (%s); not retried again (%d retries)", failed.number, reason, retries)
        return
    attrs = {"retry_of": failed.number, "retries": retries + 1, "retry_reason": reason}
    if failed.user_attrs.get("baseline"):
        attrs["baseline"] = True
    study.enqueue_trial(dict(failed.params), user_attrs=attrs, skip_if_exists=False)
    log.warning("trial %d failed (%s); re-queued with the same parameters", failed.number, reason)


def retry_stale_trial(study: optuna.Study, trial) -> None:
    """Heartbeat stale-trial callback: the trial is already FAIL (Optuna refuses attributes on
    finished trials), so the reason goes on the retry and on the study."""
    reason = (f"heartbeat stale: the process running it ({trial.user_attrs.get('host')}:"
              f"{trial.user_attrs.get('pid')}) stopped reporting (killed, crashed or lost)")
    try:
        fails = dict(study.user_attrs.get("failure_reasons", {}))
        fails[str(trial.number)] = reason
        study.set_user_attr("failure_reasons", fails)
    except Exception:  # best effort
        log.debug("cannot record failure reason", exc_info=True)
    _enqueue_retry(study, trial, reason)


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
    except OSError:
        pass
    now = proc_start_time(pid)
    return not (start and now and now != start)


def reap_dead_trials(study: optuna.Study) -> list[int]:
    """RUNNING trials whose process on this host is gone: FAIL with a reason and retry.

    (Trials of other hosts are failed by heartbeats after the grace period.)"""
    host = socket.gethostname()
    reaped = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ua = t.user_attrs
        if ua.get("host") != host or not ua.get("pid"):
            continue
        pid = int(ua["pid"])
        if pid == os.getpid() or _pid_alive(pid, ua.get("pid_start")):
            continue
        reason = f"process {pid} on {host} died while running this trial (killed or crashed)"
        try:
            study._storage.set_trial_user_attr(t._trial_id, "failure_reason", reason)
            if not study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        reaped.append(t.number)
        _enqueue_retry(study, study._storage.get_trial(t._trial_id), reason)
    return reaped
