"""Joining a study from its storage alone: `vantage-sweep worker --storage URL --study-name S`.

A study created by `vantage-sweep SWEEP` carries its settings in the user attribute
`vantage` (sweep, model config YAML, ranges, steps per trial, data source, objectives,
sampler, pruner, ...), so any process on any machine that can reach the storage can run
trials of it. Used by the worker command, by each process of `--n-jobs N`, and by the
per-trial child processes of the subprocess runner.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import optuna

from runners.inprocess import run_inprocess
from runners.subprocess import run_subprocess
from vantage_core.cli.args import ArgumentParser, positive_float, positive_int
from vantage_core.errors import VantageError

from .objective import TrialSpec
from .progress import SweepMonitor, wants_display
from .settings import SweepSettings
from .storage import DEFAULT_STORAGE, absolute, open_storage, redact
from .study import fingerprint_diff, fingerprint_parts, load_existing, make_pruner, make_sampler

log = logging.getLogger("vantage.sweep")


@dataclass
class Joined:
    study: optuna.Study
    spec: TrialSpec
    settings: SweepSettings


def spec_from_settings(settings: SweepSettings | dict, *, out: str | Path | None = None) -> TrialSpec:
    if isinstance(settings, dict):
        settings = SweepSettings.from_attr(settings)
    return settings.spec(out=out)


def join_study(storage_url: str, study_name: str, *, seed: int | None = None, parallel: bool = True,
               out: str | Path | None = None, check_data: bool = True,
               heartbeat_interval: int | None = None, grace_period: int | None = None,
               accept_mismatch: bool = False) -> Joined:
    """Open an existing study with the sampler/pruner/objective its settings describe."""
    probe = open_storage(storage_url, heartbeat_interval=None)
    settings = SweepSettings.load(load_existing(probe, study_name, storage_url))
    hb = heartbeat_interval if heartbeat_interval is not None else settings.heartbeat_interval
    gp = grace_period if grace_period is not None else settings.grace_period
    storage = open_storage(storage_url, heartbeat_interval=hb or None, grace_period=gp)
    if out is None and settings.runs_dir and not Path(settings.runs_dir).parent.is_dir():
        out = Path("sweeps") / study_name / "trials"   # another machine: the study's folder is not here
    spec = settings.spec(out=out)
    sampler = make_sampler(settings.sampler, seed, spec.space, spec.base, spec.ranges, parallel=parallel)
    pruner = make_pruner("none" if spec.multi else settings.pruner,
                         max_resource=settings.steps_per_trial or spec.base.training.num_train_steps)
    study = load_existing(storage, study_name, storage_url, sampler=sampler, pruner=pruner)
    if check_data and not spec.objective_fn:
        # This machine's data must be the study's data (same split, same tokenizer).
        fp = fingerprint_parts(spec.space, spec.base, spec.data.describe(), spec.objectives,
                               settings.steps_per_trial)
        old = study.user_attrs.get("fingerprint") or {}
        changed = [d for d in fingerprint_diff(old, fp) if not d.startswith("code_version")]
        if changed and not accept_mismatch:
            raise VantageError(f"study '{study_name}': this machine's setup differs from the study's "
                               f"({'; '.join(changed[:3])}); fix the data/code or pass --accept-mismatch")
        if any(d.startswith("code_version") for d in fingerprint_diff(old, fp)):
            log.warning("study %s: running with a different code version than the study's", study_name)
    return Joined(study, spec, settings)


def optimize(joined: Joined, *, n_trials: int | None, timeout: float | None) -> int:
    """Run trials of the study in this process; returns how many this call ran."""
    return run_inprocess(joined.study, joined.spec, n_trials=n_trials, timeout=timeout)


def run_worker(storage_url: str, study_name: str, *, n_trials: int | None = None, timeout: float | None = None,
               seed: int | None = None, out: str | Path | None = None, runner: str = "inprocess",
               trial_timeout: float | None = None, accept_mismatch: bool = False, quiet: bool = True) -> int:
    """The worker command: join and run trials until n_trials / timeout (or forever), with the
    live display of the study unless `quiet` (or stdout is not a terminal)."""
    subprocess_runner = runner == "subprocess" or bool(trial_timeout)
    joined = join_study(storage_url, study_name, seed=seed, out=out, check_data=not subprocess_runner,
                        accept_mismatch=accept_mismatch)
    log.info("worker %d joined study %s in %s", os.getpid(), study_name, redact(storage_url))
    s = joined.settings
    monitor = SweepMonitor(joined.study, objectives=s.objectives, n_trials=n_trials, timeout=timeout,
                           steps=s.steps_per_trial or joined.spec.base.training.num_train_steps,
                           enabled=wants_display(quiet))
    with monitor:
        if subprocess_runner:
            return run_subprocess(joined.study, storage_url, n_trials=n_trials, timeout=timeout,
                                  trial_timeout=trial_timeout, seed=seed, out=str(out) if out else None,
                                  quiet_children=monitor.enabled)
        return optimize(joined, n_trials=n_trials, timeout=timeout)


WORKER_DESCRIPTION = ("Join an existing study and run its trials: start one on every machine that can reach "
                      "the storage (PostgreSQL: postgresql://user@host/db, MySQL: mysql+pymysql://user@host/db). "
                      "Everything else (search space, model config, data, objectives) is read from the study.")


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    p.add_argument("--study-name", required=True, help="the study to join (created by `vantage-sweep SWEEP`)")
    p.add_argument("--trials", type=positive_int, default=None,
                   help="trials this worker runs, then exits (default: until --timeout or Ctrl-C)")
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="stop starting new trials after this many seconds")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default: random per worker)")
    p.add_argument("--runner", choices=("inprocess", "subprocess"), default="inprocess",
                   help="run each trial in this process or in its own process (default: inprocess)")
    p.add_argument("--trial-timeout", type=positive_float, default=None, metavar="SECONDS",
                   help="kill a trial that runs longer than this (implies --runner subprocess)")
    p.add_argument("--out", default=None, help="folder for this worker's trial checkpoints "
                                               "(default: the study's, if it exists here)")
    p.add_argument("--accept-mismatch", action="store_true",
                   help="run even though this machine's data/tokenizer differ from the study's fingerprint")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no live progress display (log lines only; also the default when stdout is not a terminal)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def worker_parser() -> ArgumentParser:
    p = ArgumentParser(prog="vantage-sweep worker", description=WORKER_DESCRIPTION)
    add_worker_arguments(p)
    return p


def cmd_worker(args) -> int:
    storage_url = absolute(args.storage)
    if storage_url.startswith("sqlite"):
        log.warning("SQLite storage: run at most one process on it at a time (use journal:PATH or a server "
                    "database for several workers)")
    n = run_worker(storage_url, args.study_name, n_trials=args.trials, timeout=args.timeout, seed=args.seed,
                   out=args.out, runner=args.runner, trial_timeout=args.trial_timeout,
                   accept_mismatch=args.accept_mismatch, quiet=args.quiet)
    print(f"worker {os.getpid()}: ran {n} trials of study {args.study_name}")
    return 0
