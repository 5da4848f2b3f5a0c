"""Many processes, one study: `vantage-sweep worker` on PostgreSQL (and MySQL), `--n-jobs` on a
JournalStorage, and real tiny training in parallel processes. Accounting tests use the fast
fake objective (hidden `--objective-fn`), which logs "trial_number pid" per trial run."""

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from sweep_process_helpers import pg_db  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

FAKE = ["--objective-fn", "runners.fake_objective:quadratic"]
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def cli(tmp, *args, env=None, timeout=300):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "studies", *args], cwd=tmp, env=e, capture_output=True,
                          text=True, timeout=timeout)


def popen(tmp, *args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "studies", *args], cwd=tmp, env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def pg_url(pg_db):
    """A fresh PostgreSQL database (the shared fixture in sweep_process_helpers), as a URL."""
    return pg_db[0]


@pytest.fixture
def mysql_url():
    pymysql = pytest.importorskip("pymysql")
    name = f"vt_{uuid.uuid4().hex[:12]}"
    try:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    except Exception as e:
        pytest.skip(f"MariaDB not reachable: {e}")
    with conn.cursor() as c:
        c.execute(f"CREATE DATABASE {name}")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with conn.cursor() as c:
            c.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


def account(study, log: Path, expected: int):
    """Every trial in storage exactly once, finished, and run exactly once by some process."""
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == expected
    assert sorted(t.number for t in trials) == list(range(expected))
    states = Counter(t.state.name for t in trials)
    assert set(states) <= {"COMPLETE", "PRUNED"}, states
    runs = Counter(int(line.split()[0]) for line in log.read_text().split("\n") if line.strip())
    assert runs == Counter(range(expected)), "each trial number ran exactly once"
    pids = {int(line.split()[1]) for line in log.read_text().split("\n") if line.strip()}
    for t in trials:
        assert t.user_attrs["pid"] in pids
        assert t.user_attrs.get("config")
    return states, pids


def test_four_workers_on_postgresql_40_trials(tmp_path, pg_url):
    log = tmp_path / "runs.log"
    env = {"VANTAGE_FAKE_LOG": str(log), "VANTAGE_FAKE_STEP_SECONDS": "0.01"}
    # The study (and its settings) comes from the sweep command; it runs the baseline trial.
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "1", "--storage", pg_url, "--study-name", "shared",
            *FAKE, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    workers = [popen(tmp_path, "worker", "--storage", pg_url, "--study-name", "shared", "--trials", n, env=env)
               for n in ("10", "10", "10", "9")]
    outs = [w.communicate(timeout=300) for w in workers]
    for w, (so, se) in zip(workers, outs):
        assert w.returncode == 0, se[-2000:]
        assert "ran" in so
    from studies.storage import open_storage
    study = optuna.load_study(study_name="shared", storage=open_storage(pg_url, heartbeat_interval=None))
    states, pids = account(study, log, 40)
    assert len(pids) == 5                                   # the sweep + 4 workers
    assert study.trials[0].user_attrs.get("baseline") is True
    assert states["PRUNED"] >= 1 and states["COMPLETE"] >= 2
    assert study.user_attrs["vantage"]["sweep"] == "lr" and study.user_attrs["fingerprint"]


def test_worker_on_mysql(tmp_path, mysql_url):
    log = tmp_path / "runs.log"
    env = {"VANTAGE_FAKE_LOG": str(log)}
    r = cli(tmp_path, "capacity", "--model", "tiny", "--trials", "2", "--storage", mysql_url,
            "--study-name", "m", *FAKE, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli(tmp_path, "worker", "--storage", mysql_url, "--study-name", "m", "--trials", "3", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    from studies.storage import open_storage
    study = optuna.load_study(study_name="m", storage=open_storage(mysql_url, heartbeat_interval=None))
    account(study, log, 5)
    assert all("expert_capacity" in t.params for t in study.trials)


def test_n_jobs_2_on_journal_40_trials(tmp_path):
    log = tmp_path / "runs.log"
    env = {"VANTAGE_FAKE_LOG": str(log), "VANTAGE_FAKE_STEP_SECONDS": "0.01"}
    # Default storage is SQLite: with --n-jobs > 1 the sweep uses a JournalStorage next to it.
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "40", "--n-jobs", "2", *FAKE, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "JournalStorage" in r.stderr
    journal = tmp_path / "vantage_studies.journal.log"
    assert journal.is_file() and not (tmp_path / "vantage_studies.db").exists()
    from studies.storage import open_storage
    study = optuna.load_study(study_name="lr-tiny-synthetic", storage=open_storage(f"journal:{journal}"))
    states, pids = account(study, log, 40)
    assert len(pids) == 2 and os.getpid() not in pids       # two separate processes ran them
    # an explicit SQLite storage with --n-jobs > 1 is refused, with the way out
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "2", "--n-jobs", "2", "--storage",
            "sqlite:///x.db", *FAKE)
    assert r.returncode == 2 and "journal:PATH" in r.stderr and "SQLite" in r.stderr
    assert not (tmp_path / "x.db").exists()


def test_n_jobs_2_real_tiny_training(tmp_path):
    """Two processes each train a real tiny trial against one JournalStorage."""
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "2", "--n-jobs", "2", "--storage",
            f"journal:{tmp_path}/j.log", "--steps-per-trial", "8", "--set", "training.eval_steps=8",
            "--set", "data.max_eval_examples=8", "--set", "eval.max_new_tokens=32", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    from studies.storage import open_storage
    study = optuna.load_study(study_name="lr-tiny-synthetic", storage=open_storage(f"journal:{tmp_path}/j.log"))
    assert len(study.trials) == 2
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2
    for t in study.trials:
        assert t.state.name == "COMPLETE", t.user_attrs.get("failure_reason")
        assert t.user_attrs["steps"] == 8 and t.user_attrs["peak_memory_bytes"] > 0
        assert len(t.user_attrs["exact_match_ci"]) == 2
        assert "hidden_size: 64" in t.user_attrs["config"]
