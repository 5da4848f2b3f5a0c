"""Feasibility before launch: a sampled configuration predicted not to fit is pruned at once.

`check_trial` runs the trainer's memory prediction (vantage_core.model.memory) for the
configuration a trial sampled, stores the prediction in the trial's user attributes and,
when the predicted peak exceeds the machine's memory (or the sweep's ``--max-memory``),
stores the reason as ``infeasible_reason`` and raises `optuna.TrialPruned` before any
training starts. Reports count these trials.
"""

from __future__ import annotations

import logging
import re

import optuna

from vantage_core.errors import MemoryBudgetError, VantageError

log = logging.getLogger("vantage.sweep")

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024 ** 2, "mb": 1000 ** 2,
          "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3, "t": 1024 ** 4,
          "tb": 1000 ** 4, "tib": 1024 ** 4}


def parse_size(text: str | int | None) -> int | None:
    """'8GiB' -> 8589934592; '500MB' -> 500000000; '1.5g' -> 1.5 GiB; plain numbers are bytes."""
    if text is None or isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise VantageError(f"cannot read memory size '{text}' (e.g. 8GiB, 16GB, 512MiB, or bytes)")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise VantageError(f"memory size must be > 0, got '{text}'")
    return value


def check_trial(trial: optuna.Trial, cfg, max_memory: int | None = None) -> dict | None:
    """Predict `cfg`'s training memory; prune `trial` (with ``infeasible_reason``) if it won't fit.

    Returns the prediction (a dict of bytes, see `predict_memory`) or None when no predictor
    is available.
    """
    try:
        from vantage_core.model.memory import check_fits, predict_memory
    except ImportError:  # pragma: no cover - the predictor ships with vantage_core
        return None
    try:
        pred = predict_memory(cfg)
    except Exception as e:  # a prediction bug must never stop a sweep
        log.warning("trial %d: memory prediction failed (%s); launching unchecked", trial.number, e)
        return None
    trial.set_user_attr("predicted_peak_memory_bytes", int(pred["peak"]))
    try:
        from vantage_core.model.memory import predict_time
        trial.set_user_attr("predicted_time_s", round(float(predict_time(cfg)["total_s"]), 1))
    except Exception as e:  # informative only: never blocks a trial
        log.debug("trial %d: time prediction failed (%s)", trial.number, e)
    try:
        check_fits(cfg, limit_bytes=max_memory)
    except MemoryBudgetError as e:
        reason = str(e)
        if max_memory is not None:
            reason += f" [--max-memory {max_memory / 2**30:.2f} GiB]"
        trial.set_user_attr("infeasible_reason", reason)
        log.warning("trial %d: infeasible, pruned before launch: %s", trial.number, reason)
        raise optuna.TrialPruned(f"infeasible: {reason}") from None
    return pred
