"""Trials table of a study (pandas), and `write_trials_report`: the full report.

Kept for callers of the first version; the report itself lives in `reports.build`.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd

from .data import METRIC_COLUMNS, trials_frame_of

COLUMNS = ["number", "state"] + METRIC_COLUMNS


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, baseline, param_*, metrics (see reports.data)."""
    return trials_frame_of(study.get_trials(deepcopy=False))


def best_trial_summary(study: optuna.Study) -> dict | None:
    if len(study.directions) > 1:
        return None
    try:
        t = study.best_trial
    except ValueError:
        return None
    return {"number": t.number, "value": t.value, "params": t.params,
            "peak_memory_mb": round((t.user_attrs.get("peak_memory_bytes") or 0) / 2**20, 1),
            "tokens_per_sec": t.user_attrs.get("tokens_per_sec")}


def write_trials_report(study: optuna.Study, out_dir: str | Path, *, storage_url: str | None = None) -> Path:
    """The full study report (Markdown, HTML, CSV, PNG) in `out_dir`; see reports.build."""
    from .build import write_report
    return write_report(study, out_dir, storage_url=storage_url)
