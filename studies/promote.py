"""Promotion and noise.

`vantage-sweep promote STUDY [--trial N] --num_train_steps M`: train the chosen (default: best)
trial's configuration for the full budget and evaluate it ONCE, at the end, on the source's
dev set (never seen by the sweep: trials were scored on a validation split carved from the
training data). The result goes on the study as user attribute ``promoted``.

`--repeats K` (here and on the sweep command) re-trains a configuration with K training
seeds and records the mean exact match with a 95% t-interval: how much of a difference
between trials is seed noise.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

import yaml

from vantage_core.cli.args import ArgumentParser, nonnegative_int, positive_int
from vantage_core.errors import VantageError
from vantage_core.fileio import atomic_write

from .settings import SweepSettings
from .storage import DEFAULT_STORAGE, open_storage
from .study import load_existing

log = logging.getLogger("vantage.sweep")

# Two-sided 95% Student t critical values, df = 1..30.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean; (x, x, x) for one value."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval of no values")
    mean = statistics.fmean(values)
    if n == 1:
        return mean, mean, mean
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    half = t * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def pick_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    if number is not None:
        for t in study.get_trials(deepcopy=False):
            if t.number == number:
                if t.state != TrialState.COMPLETE:
                    raise VantageError(f"study '{study.study_name}': trial {number} is {t.state.name}, "
                                       "promote a COMPLETE trial")
                return t
        raise VantageError(f"study '{study.study_name}' has no trial {number}")
    if len(study.directions) > 1:
        raise VantageError(f"study '{study.study_name}' is multi-objective: choose a trial of the Pareto "
                           "front with --trial N")
    try:
        return study.best_trial
    except ValueError:
        raise VantageError(f"study '{study.study_name}' has no completed trial to promote") from None


def _train_once(cfg, data, out: Path | None) -> dict[str, Any]:
    from vantage_core.eval.evaluate import evaluate
    from vantage_core.eval.metrics import proportion_ci
    from vantage_core.train.trainer import train

    result = train(cfg, data, [], evaluate=evaluate, output_dir=out)
    if result.status != "completed":
        raise VantageError(f"training failed: {result.error or result.status}")
    n = result.eval_history[-1].get("eval/num_examples", 0) if result.eval_history else 0
    em = result.final_exact_match
    return {"seed": cfg.training.seed, "exact_match": em,
            "exact_match_ci": list(proportion_ci(round(em * n), n)), "examples": n,
            "valid_sql": result.valid_sql, "steps": result.steps, "wall_time_s": round(result.wall_time_s, 2),
            "peak_memory_bytes": result.peak_memory_bytes, "checkpoint_path": result.best_checkpoint}


def _seeded(cfg, k: int, repeats: int):
    """Repeat k of `repeats`: the configuration's own seed first when repeats == 1."""
    return cfg if repeats <= 1 else cfg.replace(training={"seed": cfg.training.seed + k})


def run_repeats(study: optuna.Study, spec, *, repeats: int, trial_number: int | None = None) -> dict[str, Any]:
    """Re-train a trial's configuration (default: the best) with `repeats` training seeds, on the
    study's validation split with the study's per-trial budget; record mean and 95% t-interval."""
    from optuna.trial import FixedTrial

    trial = pick_trial(study, trial_number)
    cfg = spec.config_for(FixedTrial(dict(trial.params)))
    runs = []
    for k in range(1, repeats + 1):
        c = cfg.replace(training={"seed": cfg.training.seed + k})
        log.info("repeat %d/%d of trial %d (training.seed=%d)", k, repeats, trial.number, c.training.seed)
        runs.append(_train_once(c, spec.data, None))
    ems = [r["exact_match"] for r in runs]
    mean, lo, hi = t_interval(ems)
    rec = {"trial": trial.number, "split": "validation", "steps": cfg.training.num_train_steps,
           "seeds": [r["seed"] for r in runs], "exact_match": ems, "mean": mean, "ci95": [lo, hi],
           "runs": runs, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    study.set_user_attr("repeats", rec)
    print(f"repeats of trial {trial.number}: exact match mean {mean:.3f} (95% t-interval {lo:.3f}-{hi:.3f}) "
          f"over seeds {rec['seeds']}")
    return rec


def promote(storage_url: str, study_name: str, *, trial_number: int | None, num_train_steps: int,
            repeats: int = 1, dev_examples: int | None = None, out: str | Path | None = None) -> dict[str, Any]:
    from vantage_core.data.prepare import prepare_data

    storage = open_storage(storage_url, heartbeat_interval=None)
    study = load_existing(storage, study_name, storage_url)
    settings = SweepSettings.load(study)
    trial = pick_trial(study, trial_number)
    spec = settings.spec()
    cfg = spec.space.apply(spec.base, dict(trial.params))       # the full-run config, no per-trial clamps
    t = cfg.training
    cfg = cfg.replace(
        training={"num_train_steps": num_train_steps, "eval_steps": num_train_steps,   # evaluate once, at the end
                  "warmup_steps": min(t.warmup_steps, num_train_steps // 2)},
        data={"max_eval_examples": dev_examples or 10 ** 9})
    data = prepare_data(cfg, final_split="dev")
    root = Path(out) if out else Path("sweeps") / study_name / "promoted"
    runs = []
    for k in range(repeats):
        c = _seeded(cfg, k, repeats)
        d = root / f"trial-{trial.number:04d}-steps{num_train_steps}-seed{c.training.seed}"
        log.info("promoting trial %d: %d steps, seed %d, dev (%d examples)", trial.number, num_train_steps,
                 c.training.seed, len(data.eval_examples))
        runs.append(_train_once(c, data, d))
    ems = [r["exact_match"] for r in runs]
    mean, lo, hi = t_interval(ems)
    rec = {"trial": trial.number, "params": dict(trial.params), "steps": num_train_steps, "split": "dev",
           "dev_examples": runs[0]["examples"], "dev_exact_match": mean,
           "dev_exact_match_ci": runs[0]["exact_match_ci"] if repeats == 1 else [lo, hi],
           "ci_kind": "wilson" if repeats == 1 else f"t-interval over {repeats} seeds",
           "valid_sql": statistics.fmean(r["valid_sql"] for r in runs),
           "checkpoint_path": runs[0]["checkpoint_path"], "runs": runs,
           "config": yaml.safe_dump(cfg.to_dict(), sort_keys=False),
           "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    study.set_user_attr("promoted", rec)
    history = list(study.user_attrs.get("promotions", []))
    history.append({k: v for k, v in rec.items() if k not in ("config", "runs")})
    study.set_user_attr("promotions", history)
    ci = rec["dev_exact_match_ci"]
    print(f"promoted trial {trial.number} of {study_name}: {num_train_steps} steps, dev exact match "
          f"{mean:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, {rec['ci_kind']}, {rec['dev_examples']} examples), "
          f"valid SQL {rec['valid_sql']:.3f}")
    print(f"checkpoint: {rec['checkpoint_path']}")
    return rec


PROMOTE_DESCRIPTION = ("Train a trial's configuration (default: the best) for the full budget and evaluate it once "
                       "on the dev set; the result is stored on the study (user attribute 'promoted').")


def add_promote_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study name")
    p.add_argument("--trial", type=nonnegative_int, default=None, help="trial number (default: the best trial)")
    p.add_argument("--num_train_steps", type=positive_int, required=True, help="training steps of the promoted run")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL (default: {DEFAULT_STORAGE})")
    p.add_argument("--repeats", type=positive_int, default=1, metavar="K",
                   help="train with K seeds; reports the mean and a 95%% t-interval (default: 1, Wilson interval)")
    p.add_argument("--dev-examples", type=positive_int, default=None,
                   help="evaluate on the first N dev examples of a fixed shuffle (default: all)")
    p.add_argument("--out", default=None, help="checkpoint folder (default: sweeps/<study>/promoted)")
    p.add_argument("--write-config", default=None, metavar="PATH",
                   help="also write the promoted run's resolved config as YAML here (e.g. configs/spider_best.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def promote_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="vantage-sweep promote", description=PROMOTE_DESCRIPTION)
    add_promote_arguments(p)
    return p


def cmd_promote(args) -> int:
    rec = promote(args.storage, args.study, trial_number=args.trial, num_train_steps=args.num_train_steps,
                  repeats=args.repeats, dev_examples=args.dev_examples, out=args.out)
    if args.write_config:
        path = Path(args.write_config)
        path.parent.mkdir(parents=True, exist_ok=True)
        head = (f"# Promoted from study '{args.study}', trial {rec['trial']} ({rec['steps']} steps): dev exact match "
                f"{rec['dev_exact_match']:.3f} on {rec['dev_examples']} examples (vantage-sweep promote).\n")
        atomic_write(path, head + rec["config"], what="promoted config")
        print(f"config: {path}")
    return 0
