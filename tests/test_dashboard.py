"""`vantage-sweep dashboard`: optuna-dashboard on a Vantage study, bound to 127.0.0.1, with the
trials' user attributes (large histories included) and intermediate values; a real browser
(Debian's chromium, headless) renders the study name and a trial."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import optuna
import pytest

from reports.demo import make_demo_study
from studies.dashboard import make_dashboard_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dash")
    url = f"sqlite:///{tmp}/studies.db"
    study = make_demo_study(12, storage=url, study_name="joint-tiny-dash")
    # a trial with a very large history must not break the pages
    t = optuna.trial.create_trial(params={"learning_rate": 1e-3}, distributions={
        "learning_rate": optuna.distributions.FloatDistribution(3e-4, 5e-2, log=True)}, value=0.1,
        user_attrs={"train_history": [{"step": i, "train/loss": 3.0} for i in range(5000)], "exact_match": 0.1},
        intermediate_values={10: 0.05, 20: 0.1})
    study.add_trial(t)
    return tmp, url


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def test_dashboard_api_shows_vantage_fields(db):
    _, url = db
    server = make_dashboard_server(url, "127.0.0.1", 0)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        studies = json.loads(get(f"{base}/api/studies"))["study_summaries"]
        s = next(x for x in studies if x["study_name"] == "joint-tiny-dash")
        detail = json.loads(get(f"{base}/api/studies/{s['study_id']}"))
        trials = detail["trials"]
        assert len(trials) == 13
        keys = {a["key"] for t in trials for a in t["user_attrs"]}
        assert {"exact_match", "peak_memory_bytes", "tokens_per_sec", "eval_history", "config", "baseline"} <= keys
        assert any(t["intermediate_values"] for t in trials)
        big = trials[-1]
        hist = next(a["value"] for a in big["user_attrs"] if a["key"] == "train_history")
        assert len(hist) <= 1024  # optuna-dashboard cuts JSON attributes; the page stays small
        assert "<html" in get(f"{base}/dashboard/").lower()
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_refuses_busy_port(db):
    from vantage_core.errors import VantageError
    _, url = db
    server = make_dashboard_server(url, "127.0.0.1", 0)
    try:
        with pytest.raises(VantageError, match="cannot listen"):
            make_dashboard_server(url, "127.0.0.1", server.server_port)
    finally:
        server.server_close()


def dump_dom(url, profile):
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000",
                        "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return r.stdout


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_browser_finds_study_and_trial(db):
    tmp, url = db
    proc = subprocess.Popen([sys.executable, "-m", "studies", "dashboard", "--storage", url, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line, deadline = "", time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"dashboard: (http://127\.0\.0\.1:(\d+)/dashboard/)", line)
            if m or proc.poll() is not None:
                break
        assert m, f"no dashboard URL printed: {line!r}"
        home = m.group(1)
        with tempfile.TemporaryDirectory() as profile:
            dom = dump_dom(home, profile)
            assert "joint-tiny-dash" in dom, dom[-2000:]
            sid = json.loads(get(home.replace("/dashboard/", "/api/studies")))["study_summaries"][0]["study_id"]
            dom = dump_dom(f"{home}studies/{sid}/trials", profile)
        assert "Trial 0" in dom and "joint-tiny-dash" in dom, dom[-2000:]
        assert "exact_match" in dom  # the trial's user attributes are on the page
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dashboard_never_echoes_the_password(capsys):
    from studies.cli import _main
    from vantage_core.errors import StorageError
    with pytest.raises(StorageError) as e:
        _main(["dashboard", "--storage", "postgresql://vantage:s3cret@127.0.0.1:1/optuna", "--port", "0"])
    assert "s3cret" not in str(e.value) and "***" in str(e.value)
    assert "s3cret" not in capsys.readouterr().out
