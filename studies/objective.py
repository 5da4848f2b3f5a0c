"""The thin objective: config from the trial, call the core, store what reports need."""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from search_spaces import SearchSpace
from vantage_core.config import Config
from vantage_core.errors import VantageError
from vantage_core.train import metrics as M

from .pruning import OptunaPruningCallback

log = logging.getLogger("vantage.sweep")

# name -> (direction, TrainResult attribute)
OBJECTIVES = {
    "exact_match": ("maximize", "best_exact_match"),
    "peak_memory": ("minimize", "peak_memory_bytes"),
    "tokens_per_sec": ("maximize", "tokens_per_sec"),
}


class TrialFailed(Exception):
    """A trial that ended without a usable result (diverged, crashed); the sweep goes on."""


@dataclass
class TrialSpec:
    space: SearchSpace
    base: Config
    objectives: list[str]
    ranges: dict[str, Any] | None = None
    steps_per_trial: int | None = None
    runs_dir: Path | None = None
    keep_checkpoints: bool = False
    extra_overrides: dict[str, Any] = field(default_factory=dict)

    def config_for(self, trial) -> Config:
        cfg = self.space.suggest(trial, self.base, self.ranges)
        if self.steps_per_trial:
            t = cfg.training
            eval_steps = min(t.eval_steps, self.steps_per_trial)
            cfg = cfg.replace(training={"num_train_steps": self.steps_per_trial, "eval_steps": eval_steps,
                                        "warmup_steps": min(t.warmup_steps, self.steps_per_trial // 2)})
        return cfg


def record_result(trial, result) -> None:
    trial.set_user_attr("exact_match", result.best_exact_match)
    trial.set_user_attr("final_exact_match", result.final_exact_match)
    trial.set_user_attr("valid_sql", result.valid_sql)
    trial.set_user_attr("eval_loss", result.eval_loss if math.isfinite(result.eval_loss) else None)
    trial.set_user_attr("peak_memory_bytes", result.peak_memory_bytes)
    trial.set_user_attr("tokens_per_sec", result.tokens_per_sec)
    trial.set_user_attr("wall_time_s", result.wall_time_s)
    trial.set_user_attr("dropped_fraction", result.dropped_fraction)
    trial.set_user_attr("steps", result.steps)
    trial.set_user_attr("eval_examples", result.eval_history[-1].get("eval/num_examples", 0)
                        if result.eval_history else 0)


def run_trial(trial: optuna.Trial, spec: TrialSpec, data) -> float | tuple[float, ...]:
    """Objective body shared by every runner."""
    from vantage_core.train.trainer import train

    cfg = spec.config_for(trial)
    trial.set_user_attr("config", cfg.to_yaml())
    multi = len(spec.objectives) > 1
    cb = OptunaPruningCallback(trial, M.EVAL_EXACT_MATCH, prune=not multi)
    out = None
    if spec.runs_dir is not None:
        out = spec.runs_dir / f"trial-{trial.number:04d}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        trial.set_user_attr("checkpoint_dir", str(out))
    t0 = time.perf_counter()
    log.info("trial %d: %s", trial.number, trial.params)
    try:
        result = train(cfg, data, [cb], output_dir=out)
    except optuna.TrialPruned:
        trial.set_user_attr("wall_time_s", time.perf_counter() - t0)
        if cb.history:
            trial.set_user_attr("exact_match", max(h[M.EVAL_EXACT_MATCH] for h in cb.history))
        if out is not None and not spec.keep_checkpoints:
            shutil.rmtree(out, ignore_errors=True)
            trial.set_user_attr("checkpoint_dir", None)
        raise
    except VantageError as e:
        trial.set_user_attr("failure_reason", str(e))
        raise TrialFailed(str(e)) from None
    except (RuntimeError, MemoryError, ValueError) as e:
        # MLX raises RuntimeError on allocation failures; keep the sweep going.
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
        trial.set_user_attr("failure_reason", reason)
        raise TrialFailed(reason) from None
    record_result(trial, result)
    if result.status != "completed":
        trial.set_user_attr("failure_reason", result.error)
        raise TrialFailed(result.error or result.status)
    values = tuple(float(getattr(result, OBJECTIVES[o][1])) for o in spec.objectives)
    log.info("trial %d: %s", trial.number, dict(zip(spec.objectives, values)))
    return values if multi else values[0]
