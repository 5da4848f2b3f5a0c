"""The thin objective: config from the trial, call the core, store what reports need."""

from __future__ import annotations

import importlib
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from search_spaces import SearchSpace
from vantage_core.config import Config
from vantage_core.errors import VantageError
from vantage_core.train import metrics as M
from vantage_core.train.callbacks import TensorBoardSink

from .feasibility import check_trial
from .pruning import OptunaPruningCallback
from .recovery import mark_owner, proc_start_time  # noqa: F401 (re-exported)

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
    tie_break: bool = True
    objective_fn: str | None = None          # debug hook "module:function" (fast fake objectives)
    max_memory: int | None = None            # bytes; feasibility check before launch (studies.feasibility)
    extra_overrides: dict[str, Any] = field(default_factory=dict)
    _data: Any = field(default=None, repr=False)

    def config_for(self, trial) -> Config:
        cfg = self.space.suggest(trial, self.base, self.ranges)
        if self.steps_per_trial:
            t = cfg.training
            eval_steps = min(t.eval_steps, self.steps_per_trial)
            cfg = cfg.replace(training={"num_train_steps": self.steps_per_trial, "eval_steps": eval_steps,
                                        "warmup_steps": min(t.warmup_steps, self.steps_per_trial // 2)})
        return cfg

    @property
    def data(self):
        """The prepared training data (validation split carved from training), loaded once."""
        if self._data is None:
            from vantage_core.data.prepare import prepare_data
            self._data = prepare_data(self.base)
        return self._data

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1


def record_result(trial, result) -> None:
    from vantage_core.eval.metrics import proportion_ci

    n = result.eval_history[-1].get("eval/num_examples", 0) if result.eval_history else 0
    trial.set_user_attr("exact_match", result.best_exact_match)
    trial.set_user_attr("exact_match_ci", list(proportion_ci(round(result.best_exact_match * n), n)))
    trial.set_user_attr("final_exact_match", result.final_exact_match)
    trial.set_user_attr("valid_sql", result.valid_sql)
    trial.set_user_attr("eval_loss", result.eval_loss if math.isfinite(result.eval_loss) else None)
    trial.set_user_attr("peak_memory_bytes", result.peak_memory_bytes)
    trial.set_user_attr("tokens_per_sec", result.tokens_per_sec)
    trial.set_user_attr("wall_time_s", result.wall_time_s)
    trial.set_user_attr("dropped_fraction", result.dropped_fraction)
    trial.set_user_attr("steps", result.steps)
    trial.set_user_attr("eval_examples", n)
    trial.set_user_attr("checkpoint_path", result.best_checkpoint)


def run_trial(trial: optuna.Trial, spec: TrialSpec, data=None) -> float | tuple[float, ...]:
    """Objective body shared by every runner."""
    from vantage_core.eval.evaluate import evaluate
    from vantage_core.train.trainer import train

    data = data if data is not None else spec.data
    cfg = spec.config_for(trial)
    trial.set_user_attr("config", cfg.to_yaml())
    check_trial(trial, cfg, spec.max_memory)   # prunes, before launch, what cannot fit
    cb = OptunaPruningCallback(trial, M.EVAL_EXACT_MATCH, prune=not spec.multi,
                               tie_break=spec.tie_break and not spec.multi)
    out = None
    sinks = [cb]
    if spec.runs_dir is not None:
        out = Path(spec.runs_dir) / f"trial-{trial.number:04d}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        trial.set_user_attr("checkpoint_dir", str(out))
        # One TensorBoard run per trial: `tensorboard --logdir sweeps/<study>` compares them.
        # Before the pruning callback, so the evaluation that prunes a trial is logged too.
        sinks.insert(0, TensorBoardSink(out / "logs"))
    t0 = time.perf_counter()
    log.info("trial %d: %s", trial.number, trial.params)
    try:
        result = train(cfg, data, sinks, evaluate=evaluate, output_dir=out)
    except optuna.TrialPruned:
        trial.set_user_attr("wall_time_s", time.perf_counter() - t0)
        if cb.history:
            trial.set_user_attr("exact_match", max(h[M.EVAL_EXACT_MATCH] for h in cb.history))
            trial.set_user_attr("steps", int(cb.history[-1][M.STEP]))
            # The plain exact match of its last evaluation (never the pruner's tie-broken score).
            log.info("trial %d: pruned at step %d, exact_match %.4f", trial.number,
                     int(cb.history[-1][M.STEP]), float(cb.history[-1][M.EVAL_EXACT_MATCH]))
        if out is not None and not spec.keep_checkpoints:
            remove_checkpoints(out)   # the TensorBoard events, config and metrics stay
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
    # The metrics themselves: exact match is the best periodic evaluation's, the same number as
    # the `exact_match` user attribute (the eval-loss tie-break lives only in the pruner).
    values = tuple(float(getattr(result, OBJECTIVES[o][1])) for o in spec.objectives)
    log.info("trial %d: %s", trial.number, dict(zip(spec.objectives, values)))
    return values if spec.multi else values[0]


def remove_checkpoints(run: Path) -> None:
    """A pruned trial's checkpoints (everything but its logs, config and metrics) are deleted."""
    keep = {"logs", "config.yaml", "metrics.jsonl"}
    for p in Path(run).iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def load_ref(ref: str) -> Callable:
    mod, _, fn = ref.partition(":")
    if not mod or not fn:
        raise VantageError(f"--objective-fn '{ref}': expected module:function")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise VantageError(f"--objective-fn '{ref}': cannot load ({e})") from None


def make_objective(spec: TrialSpec) -> Callable[[optuna.Trial], Any]:
    """The objective every runner calls: records which process runs the trial, then trains
    (or calls the debug objective `spec.objective_fn(trial, spec)`)."""
    fn = load_ref(spec.objective_fn) if spec.objective_fn else run_trial

    def objective(trial):
        mark_owner(trial)
        return fn(trial, spec)

    return objective


__all__ = ["OBJECTIVES", "TrialFailed", "TrialSpec", "run_trial", "make_objective", "record_result",
           "mark_owner", "proc_start_time", "load_ref"]
