"""Trials table of a study, with pandas: CSV and Markdown."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd

COLUMNS = ["number", "state", "exact_match", "valid_sql", "eval_loss", "peak_memory_mb",
           "tokens_per_sec", "wall_time_s", "pruned_at_step", "failure_reason"]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        row = {"number": t.number, "state": t.state.name}
        row.update({f"param_{k}": v for k, v in t.params.items()})
        pm = ua.get("peak_memory_bytes")
        row.update({
            "exact_match": ua.get("exact_match"),
            "valid_sql": ua.get("valid_sql"),
            "eval_loss": ua.get("eval_loss"),
            "peak_memory_mb": round(pm / 2**20, 1) if pm else None,
            "tokens_per_sec": ua.get("tokens_per_sec"),
            "wall_time_s": ua.get("wall_time_s"),
            "pruned_at_step": ua.get("pruned_at_step"),
            "failure_reason": ua.get("failure_reason"),
            "baseline": bool(ua.get("baseline")),
        })
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    params = sorted(c for c in df.columns if c.startswith("param_"))
    return df[["number", "state", "baseline"] + params + COLUMNS[2:]]


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


def write_trials_report(study: optuna.Study, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study)
    _atomic_write(out / "trials.csv", df.to_csv(index=False))
    best = best_trial_summary(study)
    lines = [f"# Study `{study.study_name}`", "",
             f"{len(df)} trials: " + ", ".join(f"{n} {s}" for s, n in df["state"].value_counts().items()), ""]
    if best:
        lines += ["## Best trial", "",
                  f"Trial {best['number']}: exact match {best['value']:.3f}, params {best['params']}, "
                  f"peak memory {best['peak_memory_mb']} MB, {best['tokens_per_sec'] or 0:.0f} tokens/s", ""]
    lines += ["## Trials", "", df.to_markdown(index=False, floatfmt=".4g"), ""]
    _atomic_write(out / "report.md", "\n".join(lines))
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
