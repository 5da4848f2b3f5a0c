"""What a practitioner watches during a sweep: the live display (rendered to a string and
checked), in process, with --n-jobs, the subprocess runner and `vantage-sweep worker`; quiet
when stdout is not a terminal and with --quiet; trial values that are the exact match itself
in the log, the study's metric names for optuna-dashboard, and one TensorBoard run per trial."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from rich.console import Console

from search_spaces import get_space
from studies import progress as P
from studies.objective import TrialSpec, run_trial
from studies.pruning import PRUNER_SCORES
from studies.study import make_pruner
from vantage_core.config import load_config
from vantage_core.train import metrics as M
from vantage_core.train.trainer import TrainResult

ROOT = Path(__file__).resolve().parents[1]
FAKE = ["--objective-fn", "runners.fake_objective:quadratic"]
PANEL = "╭─ study lr-tiny-synthetic"


# ---------------------------------------------------------------------------------------------
# the display itself
# ---------------------------------------------------------------------------------------------
def test_render_shows_the_study_and_a_row_per_running_trial():
    snap = P.Snapshot(study_name="lr-tiny-synthetic", objectives=["exact_match"], complete=2, pruned=1, failed=1,
                      running=2, total=6, run_done=4, run_target=8, best_number=3, best_value=0.4125,
                      best_ci=(0.31, 0.52), elapsed_s=65, left_s=130,
                      rows=[P.RunningTrial(4, step=12, total_steps=24, loss=2.34119, exact_match=0.125,
                                           tokens_per_sec=12345.6, elapsed_s=20, params={"learning_rate": 3.1e-3}),
                            P.RunningTrial(5, total_steps=24, params={"learning_rate": 1e-2})])
    text = P.render_text(snap)
    assert "study lr-tiny-synthetic" in text
    assert "4/8 this run" in text
    assert "done 2  pruned 1  failed 1  running 2  (study: 6)" in text
    assert "trial 3: exact_match 0.412 (95% CI 0.310-0.520)" in text
    assert "0:01:05" in text and "left ~0:02:10" in text
    for col in ("trial", "step", "loss", "exact match", "tokens/s"):
        assert col in text
    row = next(ln for ln in text.splitlines() if "12/24" in ln)
    assert "2.3412" in row and "0.125" in row and "12,346" in row and "learning_rate=0.0031" in row
    row5 = next(ln for ln in text.splitlines() if "learning_rate=0.01" in ln)
    assert " - " in row5 or row5.rstrip().endswith("-") or "│    - │" in row5


def test_render_multi_objective_and_no_best_yet():
    snap = P.Snapshot(study_name="s", objectives=["exact_match", "peak_memory"], complete=3, pareto=2)
    assert "Pareto front: 2 trials (exact_match, peak_memory)" in P.render_text(snap)
    snap = P.Snapshot(study_name="s", objectives=["exact_match"], run_target=None)
    text = P.render_text(snap)
    assert "no completed trial yet" in text and "0 this run" in text and "left ~?" in text


def _study_with_trials():
    study = optuna.create_study(direction="maximize", study_name="lr-tiny-synthetic")
    dist = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    study.add_trial(create_trial(params={"learning_rate": 6e-3}, distributions=dist, value=0.25,
                                 user_attrs={"exact_match": 0.25, "exact_match_ci": [0.1, 0.45]}))
    study.add_trial(create_trial(params={"learning_rate": 3e-3}, distributions=dist, value=0.5,
                                 user_attrs={"exact_match": 0.5, "exact_match_ci": [0.3, 0.7],
                                             PRUNER_SCORES: {"8": 0.5000321}}))
    study.add_trial(create_trial(params={"learning_rate": 1e-1}, distributions=dist, state=TrialState.PRUNED,
                                 intermediate_values={4: 0.0}, user_attrs={PRUNER_SCORES: {"4": 2.786e-05}}))
    study.add_trial(create_trial(params={"learning_rate": 1e-4}, distributions=dist, state=TrialState.FAIL))
    t = study.ask(dist)
    t.set_user_attr("train_history", [{M.STEP: 6, M.TRAIN_LOSS: 3.5, M.TRAIN_TOKENS_PER_SEC: 900.0},
                                      {M.STEP: 10, M.TRAIN_LOSS: 2.75, M.TRAIN_TOKENS_PER_SEC: 1500.0}])
    t.set_user_attr("eval_history", [{M.STEP: 8, M.EVAL_EXACT_MATCH: 0.0625, M.EVAL_LOSS: 2.9}])
    t.set_user_attr(PRUNER_SCORES, {"8": 0.0625312})
    return study, t


def test_snapshot_reads_the_study():
    study, running = _study_with_trials()
    snap = P.take_snapshot(study, objectives=["exact_match"], started=0.0, finished_before={0},
                           run_target=6, steps=24)
    assert (snap.complete, snap.pruned, snap.failed, snap.running, snap.total) == (2, 1, 1, 1, 5)
    assert snap.run_done == 3                       # trial 0 was finished before this run
    assert snap.best_number == 1 and snap.best_value == 0.5 and snap.best_ci == (0.3, 0.7)
    assert snap.left_s is not None and snap.left_s > 0
    (row,) = snap.rows
    assert (row.number, row.step, row.total_steps, row.loss, row.exact_match, row.tokens_per_sec) == \
        (running.number, 10, 24, 2.75, 0.0625, 1500.0)
    text = P.render_text(snap)
    # the plain exact match only: no tie-broken pruner score anywhere on the display
    for score in ("0.5000321", "2.786e-05", "0.0625312", "0.500032", "0.06253"):
        assert score not in text
    assert "10/24" in text and "0.062" in text and "1,500" in text


def test_snapshot_time_left_respects_the_timeout():
    study, _ = _study_with_trials()
    snap = P.take_snapshot(study, objectives=["exact_match"], started=0.0, finished_before=set(),
                           run_target=1000, timeout=1.0)
    assert snap.left_s == 0.0


def test_quiet_or_not_a_terminal_means_no_display():
    assert not P.wants_display(quiet=False, console=Console(file=io.StringIO()))
    assert not P.wants_display(quiet=True, console=Console(file=io.StringIO(), force_terminal=True))
    assert P.wants_display(quiet=False, console=Console(file=io.StringIO(), force_terminal=True))
    study, _ = _study_with_trials()
    with P.SweepMonitor(study, objectives=["exact_match"], n_trials=1, enabled=False) as m:
        assert m._live is None


# ---------------------------------------------------------------------------------------------
# a real (fake-objective) sweep in this process, on a forced terminal
# ---------------------------------------------------------------------------------------------
def test_live_display_during_an_inprocess_sweep(tmp_path, monkeypatch):
    import studies.cli as cli

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, color_system=None, width=160)

    class Monitor(P.SweepMonitor):
        def __init__(self, *a, **k):
            k.update(console=console, interval=0.05)
            super().__init__(*a, **k)

    monkeypatch.setattr(cli, "SweepMonitor", Monitor)
    monkeypatch.setattr(cli, "wants_display", lambda quiet=False, console=None: not quiet)
    monkeypatch.setenv("VANTAGE_FAKE_STEP_SECONDS", "0.15")
    monkeypatch.chdir(tmp_path)
    rc = cli._main(["lr", "--model", "tiny", "--trials", "3", *FAKE, "--storage", f"sqlite:///{tmp_path}/s.db"])
    assert rc == 0
    out = buf.getvalue()
    assert PANEL in out and "3/3 this run" in out
    assert re.search(r"done \d+  pruned \d+  failed 0  running [01]", out)
    assert re.search(r"trial \d+: exact_match 0\.\d{3}", out)
    # a running trial's row: step of the fake objective's 5, loss, exact match, tokens/s
    assert re.search(r"│\s+[1-5]/\d+ │\s+\d\.\d{4} │\s+0\.\d{3} │\s+1,00\d │", out), out[-3000:]
    # and --quiet: nothing drawn
    buf.truncate(0)
    buf.seek(0)
    rc = cli._main(["lr", "--model", "tiny", "--trials", "1", *FAKE, "--storage", f"sqlite:///{tmp_path}/s.db",
                    "--quiet"])
    assert rc == 0 and PANEL not in buf.getvalue()


# ---------------------------------------------------------------------------------------------
# the other runners and the worker: the display is drawn in the parent / worker process
# ---------------------------------------------------------------------------------------------
def cli(tmp, *args, tty=True, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               VANTAGE_FAKE_STEP_SECONDS="0.2", COLUMNS="160")
    env.pop("FORCE_COLOR", None)
    env["TTY_COMPATIBLE"] = "1" if tty else "0"
    return subprocess.run([sys.executable, "-m", "studies", *args], cwd=tmp, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.integration
@pytest.mark.parametrize("runner", [["--n-jobs", "2", "--storage", "journal:j.log"], ["--runner", "subprocess"]],
                         ids=["n_jobs", "subprocess"])
def test_live_display_with_processes(tmp_path, runner):
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "2", *FAKE, *runner)
    assert r.returncode == 0, r.stderr[-3000:]
    assert PANEL in r.stdout and "2/2 this run" in r.stdout, r.stdout[-3000:]
    assert re.search(r"│\s+[1-5]/\d+ │", r.stdout), r.stdout[-3000:]   # a running trial's row, from storage
    # the trial processes log warnings only while the display shows them
    assert not re.search(r"INFO vantage\.sweep\[\d+\]: trial \d", r.stderr), r.stderr[-3000:]


@pytest.mark.integration
def test_worker_live_display_and_not_a_terminal(tmp_path):
    r = cli(tmp_path, "lr", "--model", "tiny", "--trials", "1", *FAKE, tty=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert PANEL not in r.stdout and "╭" not in r.stdout          # not a terminal: log lines only
    assert "study lr-tiny-synthetic in sqlite" in r.stderr
    r = cli(tmp_path, "worker", "--study-name", "lr-tiny-synthetic", "--trials", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert PANEL in r.stdout and "2/2 this run" in r.stdout and "(study: 3)" in r.stdout, r.stdout[-3000:]
    r = cli(tmp_path, "worker", "--study-name", "lr-tiny-synthetic", "--trials", "1", "--quiet")
    assert r.returncode == 0 and PANEL not in r.stdout


# ---------------------------------------------------------------------------------------------
# trial values, log lines, metric names, TensorBoard: exact match itself, never the tie-break
# ---------------------------------------------------------------------------------------------
def fake_train(curve):
    """The trainer's contract: reports to every callback, closes them, returns a TrainResult."""
    def train(cfg, data, callbacks, output_dir=None, **_):
        reps = [{M.STEP: s, M.EVAL_EXACT_MATCH: em, M.EVAL_LOSS: loss, "eval/num_examples": 16}
                for s, em, loss in curve]
        try:
            for r in reps:
                for cb in callbacks:
                    cb.on_train_report({M.STEP: r[M.STEP], M.TRAIN_LOSS: r[M.EVAL_LOSS] + 0.1,
                                        M.TRAIN_TOKENS_PER_SEC: 1000.0})
                for cb in callbacks:
                    cb.on_eval_report(r)
        finally:
            for cb in callbacks:
                if hasattr(cb, "close"):
                    cb.close()
        ems = [r[M.EVAL_EXACT_MATCH] for r in reps]
        return TrainResult(status="completed", steps=reps[-1][M.STEP], best_exact_match=max(ems),
                           final_exact_match=ems[-1], eval_loss=reps[-1][M.EVAL_LOSS], valid_sql=0.5,
                           peak_memory_bytes=1 << 20, tokens_per_sec=1000.0, wall_time_s=1.0,
                           dropped_fraction=0.0, eval_history=reps)
    return train


CURVES = [[(4, 0.0, 3.2), (8, 0.0, 2.9)], [(4, 0.0, 2.1), (8, 0.0, 1.7)], [(4, 0.0, 3.9), (8, 0.0, 3.8)],
          [(4, 0.0, 4.5), (8, 0.0, 4.4)]]


@pytest.fixture
def tie_study(tmp_path, monkeypatch, caplog):
    """Four all-zero-EM trials (the tie-break's case) in a SQLite study, with run folders."""
    import vantage_core.train.trainer as T

    from studies.study import open_study
    from studies.storage import open_storage

    base = load_config("tiny")
    spec = TrialSpec(space=get_space("lr"), base=base, objectives=["exact_match"], runs_dir=tmp_path / "trials")
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=None)
    study = open_study(storage, "lr-tiny-synthetic", ["maximize"], optuna.samplers.RandomSampler(seed=0),
                       make_pruner("median", n_startup_trials=2), {"metric": "em"}, metric_names=["exact_match"])
    caplog.set_level(logging.INFO, logger="vantage.sweep")
    for curve in CURVES:
        monkeypatch.setattr(T, "train", fake_train(curve))
        study.optimize(lambda t: run_trial(t, spec, data=object()), n_trials=1)
    return study, tmp_path, caplog


def test_log_lines_show_the_plain_exact_match(tie_study):
    study, _, caplog = tie_study
    states = [t.state for t in study.trials]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    scores = {float(v) for t in study.trials for v in t.user_attrs.get(PRUNER_SCORES, {}).values()}
    assert scores and all(0 < s < 1e-4 for s in scores)
    text = "\n".join(r.getMessage() for r in caplog.get_records("setup"))   # the trials ran in the fixture
    assert "exact_match" in text and "pruned at step" in text
    numbers = [float(x) for x in re.findall(r"(?<![\w.])\d+\.\d+(?:e-?\d+)?|\d+e-\d+", text)]
    for s in scores:
        assert all(abs(n - s) > 1e-12 for n in numbers), (s, text)
    assert not re.search(r"\d(\.\d+)?e-0?5", text), text          # no 2.786e-05-like tie-break value
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert t.value == 0.0
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            assert all(v == 0.0 for v in t.intermediate_values.values())


def test_metric_names_for_optuna_dashboard(tie_study):
    study, tmp, _ = tie_study
    assert study.metric_names == ["exact_match"]
    from studies.dashboard import make_app
    app = make_app(f"sqlite:///{tmp}/s.db")
    sid = study._study_id

    def get(path):
        env = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
        setup_testing_defaults(env)
        status = {}
        body = b"".join(app(env, lambda s, h, *a: status.setdefault("s", s)))
        assert status["s"].startswith("200"), (path, status)
        return json.loads(body)

    detail = get(f"/api/studies/{sid}")
    assert detail["objective_names"] == ["exact_match"]
    for t in detail["trials"]:
        for v in t.get("values") or []:
            assert float(v) == 0.0                         # plain EM, the pruned ones too
        for iv in t.get("intermediate_values") or []:
            assert float(iv["value"]) == 0.0


def test_multi_objective_names_each_objective(tmp_path):
    from studies.study import open_study
    from studies.storage import open_storage
    storage = open_storage(f"sqlite:///{tmp_path}/m.db", heartbeat_interval=None)
    names = ["exact_match", "peak_memory", "tokens_per_sec"]
    study = open_study(storage, "joint", ["maximize", "minimize", "maximize"], None, None, {"m": 1},
                       metric_names=names)
    assert study.metric_names == names
    again = open_study(storage, "joint", ["maximize", "minimize", "maximize"], None, None, {"m": 1},
                       metric_names=names)
    assert again.metric_names == names


def test_each_trial_writes_its_tensorboard_run(tie_study):
    study, tmp, _ = tie_study
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for t in study.trials:
        logs = tmp / "trials" / f"trial-{t.number:04d}" / "logs"
        events = list(logs.glob("events.out.tfevents.*"))
        assert events, (t.number, t.state.name)            # pruned trials keep theirs too
        acc = EventAccumulator(str(logs))
        acc.Reload()
        assert M.EVAL_EXACT_MATCH in acc.Tags()["scalars"] and M.TRAIN_LOSS in acc.Tags()["scalars"]
        assert [e.step for e in acc.Scalars(M.EVAL_EXACT_MATCH)] == [4, 8][: len(acc.Scalars(M.EVAL_EXACT_MATCH))]
        if t.state == TrialState.PRUNED:
            assert t.user_attrs.get("checkpoint_dir") is None
