"""Load: many `vantage-sweep worker` processes on one study, 200 trials of a fast objective that only
reports values (runners.fake_objective with no sleep, random sampler): exact trial accounting, no
duplicate trial numbers, no zombie RUNNING trial, and the storage layer's time per trial printed
(recorded in docs/reliability.md). Each test uses its own fresh database / journal file.

The soaks (marked slow) run 1000 trials, on PostgreSQL with every connection terminated every few
seconds throughout.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sweep_process_helpers import FAKE, cli, load_study, pg_db, popen, terminate_backends  # noqa: F401

pytestmark = pytest.mark.integration


def run_load(tmp: Path, url: str, n_workers: int, n_trials: int, chaos=None) -> dict:
    from runners.parallel import shares

    log = tmp / "runs.log"
    env = {"VANTAGE_FAKE_LOG": str(log), "VANTAGE_FAKE_STEPS": "5", "VANTAGE_FAKE_STEP_SECONDS": "0"}
    # The sweep command creates the study (settings, baseline) and runs the baseline trial.
    r = cli(tmp, "lr", "--model", "tiny", "--trials", "1", "--sampler", "random", "--storage", url,
            "--study-name", "load", *FAKE, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    t0 = time.perf_counter()
    workers = [popen(tmp, "worker", "--storage", url, "--study-name", "load", "--trials", k, env=env)
               for k in shares(n_trials - 1, n_workers)]
    stop = threading.Event()
    killed = {"n": 0}
    if chaos is not None:
        def loop():
            while not stop.wait(chaos["every_s"]):
                killed["n"] += chaos["kill"]()
        th = threading.Thread(target=loop, daemon=True)
        th.start()
    outs = [w.communicate(timeout=1800) for w in workers]
    stop.set()
    wall = time.perf_counter() - t0
    for w, (so, se) in zip(workers, outs):
        assert w.returncode == 0, se[-3000:]
        assert "Traceback" not in se, se[-3000:]

    study = load_study(url, "load")
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(trials) == n_trials, len(trials)
    assert sorted(numbers) == list(range(n_trials)), "duplicate or missing trial numbers"
    states = Counter(t.state.name for t in trials)
    assert set(states) <= {"COMPLETE", "PRUNED"}, states            # no zombie RUNNING / WAITING / FAIL
    runs = Counter(int(ln.split()[0]) for ln in log.read_text().splitlines() if ln.strip())
    assert runs == Counter(range(n_trials)), "each trial ran exactly once"
    pids = {int(ln.split()[1]) for ln in log.read_text().splitlines() if ln.strip()}
    assert len(pids) == n_workers + 1
    for t in trials:
        assert t.user_attrs["pid"] in pids and t.user_attrs.get("config")
        assert t.intermediate_values                                 # every report stored
    mine = [t for t in trials if t.number > 0]
    dur = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in mine)
    span = (max(t.datetime_complete for t in mine) - min(t.datetime_start for t in mine)).total_seconds()
    res = {"storage": url.split(":", 1)[0], "workers": n_workers, "trials": n_trials, "states": dict(states),
           "wall_s": round(wall, 1), "span_s": round(span, 1),
           "trial_s_mean": round(statistics.mean(dur), 4), "trial_s_p50": round(dur[len(dur) // 2], 4),
           "trial_s_p95": round(dur[int(len(dur) * 0.95)], 4),
           "throughput_trials_per_s": round(len(mine) / span, 2), "wall_s_per_trial": round(wall / len(mine), 4),
           "connections_terminated": killed["n"]}
    print("\nLOAD " + json.dumps(res))
    out = os.environ.get("VANTAGE_LOAD_RESULTS")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(res) + "\n")
    return res


def test_8_workers_on_postgresql_200_trials(tmp_path, pg_db):
    url, _, _ = pg_db
    run_load(tmp_path, url, 8, 200)


def test_2_workers_on_journal_200_trials(tmp_path):
    run_load(tmp_path, f"journal:{tmp_path}/load.journal.log", 2, 200)


@pytest.mark.slow
def test_soak_8_workers_postgresql_1000_trials_with_dropped_connections(tmp_path, pg_db):
    url, name, admin = pg_db
    res = run_load(tmp_path, url, 8, 1000, chaos={"every_s": 3.0, "kill": lambda: terminate_backends(admin, name)})
    assert res["connections_terminated"] > 0


@pytest.mark.slow
def test_soak_2_workers_journal_1000_trials(tmp_path):
    run_load(tmp_path, f"journal:{tmp_path}/load.journal.log", 2, 1000)
