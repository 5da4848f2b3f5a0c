"""Fast stand-in objectives for tests and accounting at scale (hidden `--objective-fn`).

`quadratic(trial, spec)` samples the real search space (so the baseline, the stored config
and the parameter names are the real ones), then "trains" for a few steps: its exact match
rises towards a peak at learning_rate = 3e-3 and it reports every step through the same
OptunaPruningCallback as real training, so pruning is exercised. Environment knobs:
VANTAGE_FAKE_STEP_SECONDS (sleep per step, default 0), VANTAGE_FAKE_STEPS (default 5),
VANTAGE_FAKE_LOG (append "trial_number pid" lines, to count who ran what).
"""

from __future__ import annotations

import math
import os
import time

from studies.pruning import OptunaPruningCallback
from vantage_core.train import metrics as M


def _score(params: dict) -> float:
    s = 0.6
    if "learning_rate" in params:
        s -= 0.15 * (math.log10(params["learning_rate"]) - math.log10(3e-3)) ** 2
    if "router_aux_loss_coef" in params:
        s -= 0.05 * (math.log10(params["router_aux_loss_coef"]) + 2) ** 2
    if "expert_capacity" in params:
        s -= 0.1 * (params["expert_capacity"] - 1.25) ** 2
    return max(0.0, min(1.0, s))


def quadratic(trial, spec):
    cfg = spec.config_for(trial)
    trial.set_user_attr("config", cfg.to_yaml())
    log = os.environ.get("VANTAGE_FAKE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{trial.number} {os.getpid()}\n")
    steps = int(os.environ.get("VANTAGE_FAKE_STEPS", "5"))
    sleep = float(os.environ.get("VANTAGE_FAKE_STEP_SECONDS", "0"))
    cb = OptunaPruningCallback(trial, M.EVAL_EXACT_MATCH, prune=not spec.multi, tie_break=False)
    target = _score(trial.params)
    for step in range(1, steps + 1):
        if sleep:
            time.sleep(sleep)
        em = target * step / steps
        cb.on_train_report({M.STEP: step, M.TRAIN_LOSS: 2.0 - em, M.TRAIN_TOKENS_PER_SEC: 1000.0 + step})
        cb.on_eval_report({M.STEP: step, M.EVAL_EXACT_MATCH: em, M.EVAL_LOSS: 1.0 - em, "eval/num_examples": 16})
    trial.set_user_attr("exact_match", target)
    trial.set_user_attr("peak_memory_bytes", 1 << 20)
    trial.set_user_attr("tokens_per_sec", 1000.0 * (1 + trial.number % 3))
    if spec.multi:
        vals = {"exact_match": target, "peak_memory": float(1 << 20), "tokens_per_sec": 1000.0 * (1 + trial.number % 3)}
        return tuple(vals[o] for o in spec.objectives)
    return target
