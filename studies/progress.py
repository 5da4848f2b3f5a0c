"""Live sweep progress on a terminal (rich, as `vantage-train`'s progress bar).

A study panel (trials done / pruned / failed / running, this run's progress bar, the best
trial so far with its 95% interval, elapsed and estimated time left) and one row per running
trial (step, train loss, last exact match, tokens/s, parameters).

Everything is read from the study's storage, which the trials already write as they train
(``train_history`` / ``eval_history`` user attributes at every report): the same display works
for the in-process runner, ``--n-jobs`` processes, the subprocess runner and
``vantage-sweep worker`` (which also sees the trials of other workers).

Off when stdout is not a terminal (log lines only) and with ``--quiet``. While it is on, log
lines print above it.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from vantage_core.train import metrics as M

log = logging.getLogger("vantage.sweep")


@dataclass
class RunningTrial:
    number: int
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    exact_match: float | None = None
    tokens_per_sec: float | None = None
    elapsed_s: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Snapshot:
    study_name: str
    objectives: list[str]
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    total: int = 0                      # trials in the study
    run_done: int = 0                   # trials this command finished
    run_target: int | None = None       # trials this command runs (None: until stopped)
    best_number: int | None = None
    best_value: float | None = None     # the plain metric (exact match), never a tie-break score
    best_ci: tuple[float, float] | None = None
    pareto: int | None = None           # multi-objective: trials on the Pareto front
    elapsed_s: float = 0.0
    left_s: float | None = None
    rows: list[RunningTrial] = field(default_factory=list)


def _last(history, key):
    if isinstance(history, list):
        for h in reversed(history):
            if isinstance(h, dict) and isinstance(h.get(key), (int, float)):
                return h[key]
    return None


def _fmt_duration(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _fmt_param(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def take_snapshot(study: optuna.Study, *, objectives: list[str], started: float, finished_before: set[int],
                  run_target: int | None, steps: int | None = None, timeout: float | None = None,
                  trials=None) -> Snapshot:
    """What the display shows, read from the study (`trials`: already-read trials, for tests)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    now = time.time()
    snap = Snapshot(study_name=study.study_name, objectives=list(objectives), total=len(trials),
                    run_target=run_target, elapsed_s=time.monotonic() - started)
    finished = []
    for t in trials:
        if t.state == TrialState.COMPLETE:
            snap.complete += 1
        elif t.state == TrialState.PRUNED:
            snap.pruned += 1
        elif t.state == TrialState.FAIL:
            snap.failed += 1
        elif t.state == TrialState.RUNNING:
            snap.running += 1
        elif t.state == TrialState.WAITING:
            snap.waiting += 1
        if t.state.is_finished():
            finished.append(t)
        if t.state == TrialState.RUNNING:
            ua = t.user_attrs
            th, eh = ua.get("train_history"), ua.get("eval_history")
            step = _last(th, M.STEP)
            estep = _last(eh, M.STEP)
            if estep is not None and (step is None or estep > step):
                step = estep
            start = t.datetime_start.timestamp() if t.datetime_start else None
            snap.rows.append(RunningTrial(
                number=t.number, step=None if step is None else int(step), total_steps=steps,
                loss=_last(th, M.TRAIN_LOSS), exact_match=_last(eh, M.EVAL_EXACT_MATCH),
                tokens_per_sec=_last(th, M.TRAIN_TOKENS_PER_SEC),
                elapsed_s=None if start is None else now - start, params=dict(t.params)))
    snap.run_done = sum(1 for t in finished if t.number not in finished_before)
    if len(objectives) == 1:
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        if done:
            pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
            b = pick(done, key=lambda t: t.value)
            snap.best_number, snap.best_value = b.number, float(b.value)
            ci = b.user_attrs.get("exact_match_ci")
            if objectives[0] == "exact_match" and isinstance(ci, (list, tuple)) and len(ci) == 2:
                snap.best_ci = (float(ci[0]), float(ci[1]))
    elif snap.complete:
        try:
            snap.pareto = len(study.best_trials)
        except Exception:  # a storage hiccup must not stop the display
            snap.pareto = None
    if run_target is not None and snap.run_done:
        rate = snap.run_done / max(snap.elapsed_s, 1e-9)
        snap.left_s = max(0, run_target - snap.run_done) / rate
    if timeout is not None:
        cap = max(0.0, timeout - snap.elapsed_s)
        snap.left_s = cap if snap.left_s is None else min(snap.left_s, cap)
    snap.rows.sort(key=lambda r: r.number)
    return snap


def render(snap: Snapshot):
    """The rich renderable for one snapshot."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    if snap.run_target:
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=snap.run_target, completed=min(snap.run_done, snap.run_target), width=30),
                    Text(f"{snap.run_done}/{snap.run_target} this run"))
        head.add_row("trials", bar)
    else:
        head.add_row("trials", Text(f"{snap.run_done} this run"))
    counts = (f"done {snap.complete}  pruned {snap.pruned}  failed {snap.failed}  running {snap.running}"
              + (f"  queued {snap.waiting}" if snap.waiting else "") + f"  (study: {snap.total})")
    head.add_row("", Text(counts))
    name = snap.objectives[0] if len(snap.objectives) == 1 else ", ".join(snap.objectives)
    if snap.pareto is not None:
        best = f"Pareto front: {snap.pareto} trials ({name})"
    elif snap.best_value is not None:
        best = f"trial {snap.best_number}: {name} {snap.best_value:.3f}"
        if snap.best_ci:
            best += f" (95% CI {snap.best_ci[0]:.3f}-{snap.best_ci[1]:.3f})"
    else:
        best = "no completed trial yet"
    head.add_row("best", Text(best))
    head.add_row("elapsed", Text(f"{_fmt_duration(snap.elapsed_s)}   left ~{_fmt_duration(snap.left_s)}"))
    panel = Panel(head, title=f"study {snap.study_name}", title_align="left", expand=False)
    if not snap.rows:
        return panel
    table = Table(title=None, show_edge=False, header_style="bold", pad_edge=False)
    for col, just in (("trial", "right"), ("step", "right"), ("loss", "right"), ("exact match", "right"),
                      ("tokens/s", "right"), ("time", "right"), ("params", "left")):
        table.add_column(col, justify=just)
    for r in snap.rows:
        step = "-" if r.step is None else (f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step))
        table.add_row(str(r.number), step,
                      "-" if r.loss is None else f"{r.loss:.4f}",
                      "-" if r.exact_match is None else f"{r.exact_match:.3f}",
                      "-" if r.tokens_per_sec is None else f"{r.tokens_per_sec:,.0f}",
                      _fmt_duration(r.elapsed_s),
                      " ".join(f"{k}={_fmt_param(v)}" for k, v in r.params.items()))
    return Group(panel, table)


def render_text(snap: Snapshot, width: int = 140) -> str:
    """The display as plain text (tests, logs)."""
    import io
    console = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=width)
    console.print(render(snap))
    return console.file.getvalue()


def wants_display(quiet: bool = False, console: Console | None = None) -> bool:
    """On for a terminal stdout unless --quiet."""
    if quiet:
        return False
    console = console or Console()
    return console.is_terminal


class SweepMonitor:
    """Polls the study every `interval` seconds and redraws the display (a context manager).
    Disabled (a no-op) when `enabled` is False."""

    def __init__(self, study: optuna.Study, *, objectives: list[str], n_trials: int | None,
                 steps: int | None = None, timeout: float | None = None, enabled: bool = True,
                 console: Console | None = None, interval: float = 1.0):
        self.study = study
        self.objectives = list(objectives)
        self.n_trials = n_trials
        self.steps = steps
        self.timeout = timeout
        self.enabled = enabled
        self.console = console
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None
        self._live = None
        self._swapped: list[tuple[logging.StreamHandler, Any]] = []
        self.started = time.monotonic()
        self.finished_before: set[int] = set()

    def snapshot(self) -> Snapshot:
        return take_snapshot(self.study, objectives=self.objectives, started=self.started,
                             finished_before=self.finished_before, run_target=self.n_trials,
                             steps=self.steps, timeout=self.timeout)

    def __enter__(self):
        self.started = time.monotonic()
        if not self.enabled:
            return self
        try:
            self.finished_before = {t.number for t in self.study.get_trials(deepcopy=False)
                                    if t.state.is_finished()}
        except Exception:
            self.finished_before = set()
        self._live = Live(console=self.console or Console(), auto_refresh=False, transient=False,
                          redirect_stdout=True, redirect_stderr=True)
        self._live.start()
        # Log handlers hold the real stderr: point them at the live console's proxy meanwhile,
        # so log lines print above the display instead of through it.
        for h in logging.getLogger().handlers:
            if isinstance(h, logging.StreamHandler) and h.stream in (sys.__stderr__, sys.__stdout__):
                self._swapped.append((h, h.stream))
                h.setStream(sys.stderr)
        self._thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)
        self._thread.start()
        return self

    def _draw(self):
        try:
            self._live.update(render(self.snapshot()), refresh=True)
        except Exception:  # the display must never stop a sweep
            log.debug("progress display failed", exc_info=True)

    def _loop(self):
        while not self._stop.is_set():
            self._draw()
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        if self._live is None:
            return False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._draw()
        for h, stream in self._swapped:
            h.setStream(stream)
        self._live.stop()
        self._live = None
        return False


def log_line(snap: Snapshot) -> str:
    """One summary line (what a non-terminal run logs at the end)."""
    best = "-" if snap.best_value is None else f"{snap.best_value:.3f} (trial {snap.best_number})"
    return (f"study {snap.study_name}: done {snap.complete}, pruned {snap.pruned}, failed {snap.failed}, "
            f"running {snap.running}; best {best}; elapsed {_fmt_duration(snap.elapsed_s)}")


__all__ = ["SweepMonitor", "Snapshot", "RunningTrial", "take_snapshot", "render", "render_text",
           "wants_display", "log_line"]
