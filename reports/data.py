"""One pass over a study's trials into a pandas DataFrame (the source of every report table)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd

from vantage_core.eval.metrics import proportion_ci
from vantage_core.train import metrics as M

# The columns of trials.csv after `number, state, baseline, param_*` (stable: tests and users read them).
METRIC_COLUMNS = ["exact_match", "em_ci_low", "em_ci_high", "eval_examples", "valid_sql", "eval_loss",
                  "peak_memory_mb", "predicted_memory_mb", "tokens_per_sec", "wall_time_s", "steps",
                  "pruned_at_step", "infeasible_reason", "failure_reason"]

# name -> (user attribute / frame column, direction, label)
METRICS = {
    "exact_match": ("exact_match", "maximize", "exact match"),
    "peak_memory": ("peak_memory_mb", "minimize", "peak memory (MB)"),
    "tokens_per_sec": ("tokens_per_sec", "maximize", "tokens/s"),
}


@dataclass
class StudyData:
    name: str
    directions: list[str]
    objectives: list[str]
    user_attrs: dict[str, Any]
    trials: list[optuna.trial.FrozenTrial]
    frame: pd.DataFrame
    params: list[str] = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    def by_number(self, n: int) -> optuna.trial.FrozenTrial:
        return self._index[n]

    def __post_init__(self):
        self._index = {t.number: t for t in self.trials}


def _finite(v) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _one_line(v) -> str | None:
    return " ".join(str(v).split()) if v else None


def eval_examples_of(ua: dict) -> int:
    n = ua.get("eval_examples")
    if isinstance(n, (int, float)) and n > 0:
        return int(n)
    hist = ua.get("eval_history") or []
    if hist and isinstance(hist[-1], dict):
        n = hist[-1].get("eval/num_examples")
        if isinstance(n, (int, float)) and n > 0:
            return int(n)
    return 0


def em_interval(em: float | None, n: int) -> tuple[float | None, float | None]:
    """Wilson 95% interval of an exact-match rate measured on `n` examples."""
    if em is None or n <= 0:
        return None, None
    k = min(n, max(0, round(em * n)))
    lo, hi = proportion_ci(k, n)
    return lo, hi


def trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    ua = t.user_attrs
    em = _finite(ua.get("exact_match"))
    if em is None and t.state == optuna.trial.TrialState.PRUNED:
        hist = [h.get(M.EVAL_EXACT_MATCH) for h in ua.get("eval_history") or [] if isinstance(h, dict)]
        hist = [v for v in (_finite(h) for h in hist) if v is not None]
        em = max(hist) if hist else None
    n = eval_examples_of(ua)
    lo, hi = em_interval(em, n)
    pm = _finite(ua.get("peak_memory_bytes"))
    pred = _finite(ua.get("predicted_peak_memory_bytes"))
    row = {"number": t.number, "state": t.state.name, "baseline": bool(ua.get("baseline"))}
    row.update({f"param_{k}": v for k, v in t.params.items()})
    row.update({
        "exact_match": em, "em_ci_low": lo, "em_ci_high": hi, "eval_examples": n or None,
        "valid_sql": _finite(ua.get("valid_sql")), "eval_loss": _finite(ua.get("eval_loss")),
        "peak_memory_mb": round(pm / 2**20, 1) if pm else None,
        "predicted_memory_mb": round(pred / 2**20, 1) if pred else None,
        "tokens_per_sec": _finite(ua.get("tokens_per_sec")), "wall_time_s": _finite(ua.get("wall_time_s")),
        "steps": ua.get("steps"), "pruned_at_step": ua.get("pruned_at_step"),
        "infeasible_reason": _one_line(ua.get("infeasible_reason")),
        "failure_reason": _one_line(ua.get("failure_reason")),
    })
    if t.values:
        for i, v in enumerate(t.values):
            row[f"value_{i}"] = v
    return row


def trials_frame_of(trials: list[optuna.trial.FrozenTrial]) -> pd.DataFrame:
    rows = [trial_row(t) for t in trials]
    if not rows:
        return pd.DataFrame(columns=["number", "state", "baseline"] + METRIC_COLUMNS)
    df = pd.DataFrame(rows)
    params = sorted(c for c in df.columns if c.startswith("param_"))
    values = sorted(c for c in df.columns if c.startswith("value_"))
    df = df[["number", "state", "baseline"] + params + METRIC_COLUMNS + values]
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def objectives_of(study: optuna.Study) -> list[str]:
    fp = study.user_attrs.get("fingerprint") or {}
    names = [o for o in str(fp.get("objectives", "")).split(",") if o]
    if len(names) == len(study.directions):
        return names
    if len(study.directions) == 1:
        return ["exact_match"]
    return [f"objective_{i}" for i in range(len(study.directions))]


def load_study_data(study: optuna.Study) -> StudyData:
    trials = study.get_trials(deepcopy=False)
    df = trials_frame_of(trials)
    return StudyData(name=study.study_name, directions=[d.name.lower() for d in study.directions],
                     objectives=objectives_of(study), user_attrs=dict(study.user_attrs), trials=trials,
                     frame=df, params=sorted(c[len("param_"):] for c in df.columns if c.startswith("param_")))
