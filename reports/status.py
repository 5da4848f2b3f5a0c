"""`vantage-sweep status`: every study in a storage with trial counts by state, the best value
and its 95% interval."""

from __future__ import annotations

import optuna
import pandas as pd

from .data import em_interval, eval_examples_of

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
COLUMNS = ["study", "objectives", "trials", *[s.lower() for s in STATES], "infeasible", "best", "95% CI", "best trial"]


def _objectives(study) -> list[str]:
    fp = study.user_attrs.get("fingerprint") or {}
    names = [o for o in str(fp.get("objectives", "")).split(",") if o]
    dirs = [d.name.lower() for d in study.directions]
    if len(names) != len(dirs):
        names = ["exact_match"] if len(dirs) == 1 else [f"objective_{i}" for i in range(len(dirs))]
    return [f"{n} ({'max' if d == 'maximize' else 'min'})" for n, d in zip(names, dirs)]


def status_frame(storage) -> pd.DataFrame:
    rows = []
    for st in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        trials = storage.get_all_trials(st._study_id, deepcopy=False)
        counts = {s: 0 for s in STATES}
        for t in trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        row = {"study": st.study_name, "objectives": ", ".join(_objectives(st)), "trials": len(trials),
               **{s.lower(): counts[s] for s in STATES},
               "infeasible": sum(1 for t in trials if t.user_attrs.get("infeasible_reason")),
               "best": "-", "95% CI": "-", "best trial": "-"}
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        if done:
            if len(st.directions) == 1:
                sign = 1 if st.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
                best = max(done, key=lambda t: (sign * t.values[0], -t.number))
                # an exact-match objective's value is the exact match itself
                row["best"] = (f"EM {best.values[0]:.4g}" if _objectives(st)[0].startswith("exact_match")
                               else f"{best.values[0]:.4g}")
            else:  # multi-objective: the highest exact match among completed trials
                best = max(done, key=lambda t: (t.user_attrs.get("exact_match") or 0.0, -t.number))
                row["best"] = f"EM {best.user_attrs.get('exact_match') or 0.0:.4g}"
            row["best trial"] = best.number
            em = best.user_attrs.get("exact_match")
            lo, hi = em_interval(em if isinstance(em, (int, float)) else None, eval_examples_of(best.user_attrs))
            if lo is not None:
                row["95% CI"] = f"EM [{lo:.3f}, {hi:.3f}] (n={eval_examples_of(best.user_attrs)})"
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def format_status(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    return df.to_string(index=False)
