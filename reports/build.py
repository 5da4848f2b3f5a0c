"""The study report: every section built from one pass over the trials, written as Markdown,
one self-contained HTML file (plots embedded as base64 PNG), CSV tables and PNG plots.

    from reports.build import write_report
    write_report(study, "sweeps/lr-tiny-synthetic/report")

Sections: summary, trials, best trials beside the baseline, promoted runs, exact match vs each
searched parameter (and a contour of two), exact match vs peak memory and vs tokens/s, Pareto front, optimization history, intermediate values, parameter importances,
feasibility (trials pruned before launch), diagnosis (the guide's failure modes with remedies).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from vantage_core.fileio import atomic_write

from . import plots
from .data import METRICS, StudyData, load_study_data
from .diagnosis import MODES, diagnose_study

log = logging.getLogger("vantage.report")

MAX_MD_ROWS = 200          # bigger tables are cut in Markdown/HTML (the CSV has every row)
MIN_IMPORTANCE_TRIALS = 5  # fewer completed trials: rank correlation instead of fANOVA
MAX_IMPORTANCE_TRIALS = 1000  # fANOVA on the latest this many completed trials (speed)
COMPLETE = optuna.trial.TrialState.COMPLETE
PRUNED = optuna.trial.TrialState.PRUNED

SECTION_KEYS = ("summary", "trials", "best", "promoted", "params", "em_vs_memory", "em_vs_throughput", "pareto", "history",
                "intermediate", "importances", "feasibility", "diagnosis")


@dataclass
class Section:
    key: str
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, s: str) -> "Section":
        self.blocks.append(("text", s))
        return self

    def table(self, df: pd.DataFrame, csv: str | None = None, *, note_cut: bool = True) -> "Section":
        shown = df
        if len(df) > MAX_MD_ROWS:
            shown = df.head(MAX_MD_ROWS)
            if note_cut:
                self.text(f"First {MAX_MD_ROWS} of {len(df)} rows" + (f"; all rows in `{csv}`." if csv else "."))
        self.blocks.append(("table", shown))
        return self

    def image(self, name: str, alt: str) -> "Section":
        self.blocks.append(("image", (name, alt)))
        return self


@dataclass
class Report:
    title: str
    meta: list[str]
    sections: list[Section]
    images: dict[str, bytes]
    csvs: dict[str, pd.DataFrame]
    timings: dict[str, float] = field(default_factory=dict)

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


# ------------------------------------------------------------------ formatting helpers

def fmt_num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def fmt_em(em, lo, hi) -> str:
    if em is None or (isinstance(em, float) and math.isnan(em)):
        return "-"
    if lo is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{em:.3f}"
    return f"{em:.3f} [{lo:.3f}, {hi:.3f}]"


def _isnum(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _params_str(t: optuna.trial.FrozenTrial) -> str:
    return ", ".join(f"{k}={fmt_num(v)}" for k, v in t.params.items()) or "-"


def _short(s, n: int = 90) -> str:
    if not s or (isinstance(s, float) and math.isnan(s)):
        return ""
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The trials table as people read it: EM with its interval in one column, notes shortened."""
    if df.empty:
        return pd.DataFrame(columns=["trial", "state"])
    params = [c for c in df.columns if c.startswith("param_")]
    out = pd.DataFrame({"trial": df["number"], "state": df["state"],
                        "baseline": df["baseline"].map(lambda b: "yes" if b else "")})
    for p in params:
        out[p[len("param_"):]] = df[p].map(fmt_num)
    out["exact match [95% CI]"] = [fmt_em(e, lo, hi) for e, lo, hi in
                                   zip(df["exact_match"], df["em_ci_low"], df["em_ci_high"])]
    out["n eval"] = df["eval_examples"].map(lambda v: fmt_num(int(v)) if _isnum(v) else "-")
    out["valid SQL"] = df["valid_sql"].map(lambda v: f"{v:.3f}" if _isnum(v) else "-")
    out["eval loss"] = df["eval_loss"].map(lambda v: f"{v:.4f}" if _isnum(v) else "-")
    out["peak MB"] = df["peak_memory_mb"].map(lambda v: f"{v:.1f}" if _isnum(v) else "-")
    out["tokens/s"] = df["tokens_per_sec"].map(lambda v: f"{v:,.0f}" if _isnum(v) else "-")
    out["wall s"] = df["wall_time_s"].map(lambda v: f"{v:.1f}" if _isnum(v) else "-")
    out["pruned at"] = df["pruned_at_step"].map(lambda v: str(int(v)) if _isnum(v) else "")
    notes = [("infeasible: " + _short(i, 70)) if isinstance(i, str) and i else _short(f, 80)
             for i, f in zip(df["infeasible_reason"], df["failure_reason"])]
    out["note"] = notes
    return out


# ------------------------------------------------------------------ sections

def _state_counts(df: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in df["state"].value_counts().items()} if len(df) else {}


def baseline_attempts(sd: StudyData) -> list[optuna.trial.FrozenTrial]:
    """Every trial that ran the baseline configuration: the first one and its retries (a
    retry of a failed baseline carries `baseline` too, with `retry_of`)."""
    return [t for t in sd.trials if t.user_attrs.get("baseline")]


def _baseline(sd: StudyData) -> optuna.trial.FrozenTrial | None:
    """The baseline's completed run: the first COMPLETE baseline attempt (a retried baseline
    counts); without one, the latest attempt that did not fail (pruned or still running), never
    a FAILED attempt."""
    tries = baseline_attempts(sd)
    done = [t for t in tries if t.state == COMPLETE]
    if done:
        return done[0]
    alive = [t for t in tries if t.state != optuna.trial.TrialState.FAIL]
    return alive[-1] if alive else None


def _baseline_note(sd: StudyData) -> str:
    """What happened to the baseline when there is no completed run of it to show."""
    tries = baseline_attempts(sd)
    if not tries:
        return ""
    parts = []
    for t in tries:
        why = t.user_attrs.get("failure_reason") or t.user_attrs.get("retry_reason") or ""
        parts.append(f"trial {t.number} {t.state.name}" + (f" ({_short(why, 80)})" if why and t.state.name == "FAIL" else ""))
    return "; ".join(parts)


def _best_by(df: pd.DataFrame, col: str, direction: str) -> int | None:
    d = df[(df["state"] == "COMPLETE") & df[col].notna()]
    if d.empty:
        return None
    # Ties: the earliest trial (lowest number), as Optuna does.
    d = d.sort_values([col, "number"], ascending=[direction == "minimize", True], kind="stable")
    return int(d.iloc[0]["number"])


def study_best_number(sd: StudyData, study: optuna.Study) -> int | None:
    if sd.multi:
        return _best_by(sd.frame, "exact_match", "maximize")
    try:
        return study.best_trial.number
    except ValueError:
        return None


def section_summary(sd: StudyData, best: int | None, storage_url: str | None) -> Section:
    s = Section("summary", "Summary")
    counts = _state_counts(sd.frame)
    n_inf = int(sd.frame["infeasible_reason"].notna().sum()) if len(sd.frame) else 0
    fp = sd.user_attrs.get("fingerprint") or {}
    lines = [f"- **{len(sd.frame)} trials**: " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "none")
             + (f" ({n_inf} pruned before launch as infeasible)" if n_inf else "")]
    lines.append(f"- objectives: " + ", ".join(f"{o} ({d})" for o, d in zip(sd.objectives, sd.directions)))
    for key in ("sweep", "model"):
        if key in sd.user_attrs:
            lines.append(f"- {key}: `{sd.user_attrs[key]}`")
    if fp:
        lines.append(f"- data: `{fp.get('data_source', '?')}` ({fp.get('data_split', '')}), tokenizer "
                     f"`{fp.get('tokenizer', '?')}`, metric `{fp.get('metric', '?')}`, code `{fp.get('code_version', '?')}`")
    if storage_url:
        lines.append(f"- storage: `{storage_url}`")
    if best is not None:
        r = sd.frame[sd.frame["number"] == best].iloc[0]
        lines.append(f"- best exact match: **{fmt_em(r['exact_match'], r['em_ci_low'], r['em_ci_high'])}** "
                     f"(trial {best}; 95% Wilson interval over {fmt_num(r['eval_examples'])} eval examples)")
    else:
        lines.append("- best exact match: no completed trial yet")
    s.text("\n".join(lines))
    return s


def section_trials(sd: StudyData) -> Section:
    s = Section("trials", "Trials")
    if sd.frame.empty:
        return s.text("No trials yet.")
    s.text("Exact match is the best periodic evaluation of each trial (for pruned trials, the best "
           "before pruning), with its 95% Wilson interval over the evaluation examples. Full table: `trials.csv`.")
    disp = display_frame(sd.frame)
    if len(disp) > MAX_MD_ROWS:
        keep = sd.frame.sort_values(["exact_match", "number"], ascending=[False, True], na_position="last")
        nums = list(keep["number"].head(MAX_MD_ROWS - 1))
        b = _baseline(sd)
        if b is not None and b.number not in nums:
            nums.append(b.number)
        disp = disp[disp["trial"].isin(nums)].sort_values("trial")
        s.text(f"{len(sd.frame)} trials: showing the {len(disp)} with the highest exact match "
               "(and the baseline); every trial is in `trials.csv`.")
    return s.table(disp, "trials.csv", note_cut=False)


def section_best(sd: StudyData, study_best: int | None) -> tuple[Section, pd.DataFrame]:
    s = Section("best", "Best trials and the baseline")
    df = sd.frame
    cols: dict[str, int] = {}
    for name, (col, direction, label) in METRICS.items():
        n = _best_by(df, col, direction)
        if name == "exact_match" and n is not None and study_best is not None:
            em = df.set_index("number")["exact_match"]
            if em.get(study_best) == em.get(n):
                n = study_best  # among ties, the study's own pick (study.best_trial)
        if n is not None:
            cols[f"best {label}"] = n
    if study_best is not None and study_best not in cols.values():
        cols["study best"] = study_best
    base = _baseline(sd)
    tries = baseline_attempts(sd)
    if base is not None:
        cols["baseline (guide default)"] = base.number
    if not cols:
        s.text("No completed trial yet" + (" and no baseline trial." if base is None else "."))
        return s, pd.DataFrame()
    rows = ["trial", "state", "params", "exact match [95% CI]", "valid SQL", "eval loss", "peak memory (MB)",
            "tokens/s", "wall time (s)"]
    table: dict[str, list[str]] = {"": rows}
    for label, n in cols.items():
        t = sd.by_number(n)
        r = df[df["number"] == n].iloc[0]
        table[label] = [str(n), r["state"], _params_str(t), fmt_em(r["exact_match"], r["em_ci_low"], r["em_ci_high"]),
                        fmt_num(r["valid_sql"]), fmt_num(r["eval_loss"]), fmt_num(r["peak_memory_mb"]),
                        f"{r['tokens_per_sec']:,.0f}" if _isnum(r["tokens_per_sec"]) else "-",
                        fmt_num(r["wall_time_s"])]
    out = pd.DataFrame(table)
    s.text("The best completed trial for each metric (exact match: highest; peak memory: lowest; tokens/s: "
           "highest), beside the baseline: the study's first trial, the configuration's own values "
           "(the training guide's defaults).")
    if base is not None and base.state != COMPLETE:
        s.text(f"The baseline has no completed run yet ({_baseline_note(sd)}); its column shows trial "
               f"{base.number}, {base.state.name}.")
    elif base is None and tries:
        s.text(f"No baseline column: every run of the baseline failed ({_baseline_note(sd)}); a failed "
               "trial has no result to compare with.")
    elif base is not None and len(tries) > 1:
        s.text(f"The baseline column is trial {base.number}, the completed run of the baseline "
               f"(attempts: {_baseline_note(sd)}).")
    s.table(out, "best.csv")
    em_best = cols.get(f"best {METRICS['exact_match'][2]}")
    if base is not None and base.state == COMPLETE and em_best is not None:
        rb = df[df["number"] == base.number].iloc[0]
        re_ = df[df["number"] == em_best].iloc[0]
        if _isnum(rb["exact_match"]) and _isnum(re_["exact_match"]):
            diff = re_["exact_match"] - rb["exact_match"]
            overlap = (_isnum(rb["em_ci_low"]) and _isnum(re_["em_ci_low"])
                       and not (re_["em_ci_low"] > rb["em_ci_high"] or rb["em_ci_low"] > re_["em_ci_high"]))
            verdict = ("the 95% intervals overlap: on this many eval examples the difference is not "
                       "distinguishable from noise" if overlap else "the 95% intervals do not overlap")
            if em_best == base.number:
                s.text(f"The baseline (trial {base.number}) is the best trial by exact match.")
            else:
                s.text(f"Best exact match (trial {em_best}) vs baseline (trial {base.number}): "
                       f"{diff:+.3f}; {verdict}.")
    return s, out


def section_promoted(sd: StudyData) -> tuple[Section, pd.DataFrame]:
    """`vantage-sweep promote` runs: the chosen trial trained for the full budget and scored
    once on the held-out dev set, beside that trial's validation score from the sweep."""
    s = Section("promoted", "Promoted runs (dev set)")
    recs = list(sd.user_attrs.get("promotions") or [])
    if not recs and sd.user_attrs.get("promoted"):
        recs = [sd.user_attrs["promoted"]]
    if not recs:
        s.text("No promoted run yet: `vantage-sweep promote STUDY --num_train_steps N` trains the best trial's "
               "configuration for the full budget and evaluates it once on the dev set.")
        return s, pd.DataFrame()
    by_number = {t.number: t for t in sd.trials}
    rows = []
    for r in recs:
        t = by_number.get(r.get("trial"))
        val = t.user_attrs.get("exact_match") if t is not None else None
        lo, hi = (r.get("dev_exact_match_ci") or [None, None])[:2]
        rows.append({"trial": r.get("trial"), "steps": r.get("steps"), "split": r.get("split", "dev"),
                     "examples": r.get("dev_examples"),
                     "dev exact match [95% CI]": fmt_em(r.get("dev_exact_match"), lo, hi),
                     "CI": r.get("ci_kind", ""), "valid SQL": r.get("valid_sql"),
                     "sweep validation EM": val, "when": r.get("time", "")})
    df = pd.DataFrame(rows)
    s.text("Each promotion trains the trial's configuration for `steps` and evaluates it once on the dev set, "
           "which the sweep never saw (trials were scored on a validation split carved from training data).")
    s.table(df, "promoted.csv")
    return s, df


# ------------------------------------------------------------------ the sweep's own question

def param_space(sd: StudyData, param: str) -> tuple[str, bool, str]:
    """(kind, log, description) of a searched parameter, from the trials' distributions."""
    dist = next((t.distributions[param] for t in reversed(sd.trials) if param in t.distributions), None)
    D = optuna.distributions
    if isinstance(dist, D.CategoricalDistribution):
        return "categorical", False, "one of " + ", ".join(str(c) for c in dist.choices)
    if isinstance(dist, (D.FloatDistribution, D.IntDistribution)):
        kind = "int" if isinstance(dist, D.IntDistribution) else "float"
        return kind, bool(dist.log), f"{kind} [{fmt_num(dist.low)}, {fmt_num(dist.high)}]" + (", log scale" if dist.log else "")
    return "float", False, "-"


def searched_params(sd: StudyData) -> list[str]:
    """Parameters that take more than one value across the study's trials."""
    out = []
    for p in sd.params:
        col = sd.frame.get(f"param_{p}")
        if col is not None and col.dropna().astype(str).nunique() > 1:
            out.append(p)
    return out


def _last_value(t: optuna.trial.FrozenTrial, em_target: bool) -> float | None:
    """A trial's last reported value: its last intermediate value (what the pruner saw last),
    else (exact-match objectives) the last evaluation's exact match in eval_history."""
    if t.intermediate_values:
        v = t.intermediate_values[max(t.intermediate_values)]
        if _isnum(v):
            return float(v)
    if em_target:
        h = [r.get("eval/exact_match") for r in (t.user_attrs.get("eval_history") or []) if isinstance(r, dict)]
        h = [v for v in h if _isnum(v)]
        if h:
            return float(h[-1])
    return None


def param_points(sd: StudyData, param: str, param2: str | None = None) -> pd.DataFrame:
    """The data of the objective-vs-parameter plots: one row per trial that has `param`
    (and `param2`): x (and x2), its state, y = the objective for a completed trial, the last
    reported value for a pruned or running one, none for a failed one; the exact match's 95%
    interval (ci_low, ci_high) where y is the exact match; baseline."""
    col, _, label = _target(sd)
    em_target = label == "exact match"
    cols = [c for c in (col, "em_ci_low", "em_ci_high") if c in sd.frame]
    by_number = sd.frame.set_index("number")[cols].to_dict("index")
    rows = []
    for t in sd.trials:
        if param not in t.params or (param2 is not None and param2 not in t.params):
            continue
        if t.state.name not in plots.STATE_ORDER:
            continue
        r = by_number.get(t.number, {})
        y = lo = hi = None
        if t.state == COMPLETE:
            y = r.get(col)
            y = float(y) if _isnum(y) else None
            if em_target:
                lo, hi = r.get("em_ci_low"), r.get("em_ci_high")
        elif t.state.name in ("PRUNED", "RUNNING"):
            y = _last_value(t, em_target)
        rows.append({"number": t.number, "state": t.state.name, "x": t.params[param],
                     "x2": t.params.get(param2) if param2 else None, "y": y,
                     "ci_low": lo if _isnum(lo) else np.nan, "ci_high": hi if _isnum(hi) else np.nan,
                     "baseline": bool(t.user_attrs.get("baseline"))})
    out = pd.DataFrame(rows, columns=["number", "state", "x", "x2", "y", "ci_low", "ci_high", "baseline"])
    out["y"] = pd.to_numeric(out["y"], errors="coerce")
    return out


def _contour_pair(sd: StudyData, params: list[str]) -> tuple[str, str]:
    """The two searched parameters that move the objective most (|Spearman| over completed
    trials), else the first two."""
    col, _, _ = _target(sd)
    d = sd.frame[(sd.frame["state"] == "COMPLETE")]
    scores = []
    for p in params:
        x = pd.to_numeric(d[f"param_{p}"], errors="coerce")
        r = _spearman(x, d[col]) if col in d and x.notna().all() and len(d) >= 3 else float("nan")
        scores.append((-(abs(r) if _isnum(r) else -1.0), params.index(p), p))
    top = [p for _, _, p in sorted(scores)[:2]]
    return top[0], top[1]


def _img_name(param: str) -> str:
    return "em_vs_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in param) + ".png"


def section_params(sd: StudyData, best: int | None, images: dict[str, bytes],
                   figures: dict | None = None) -> tuple[Section, pd.DataFrame]:
    col, direction, label = _target(sd)
    s = Section("params", f"{label.capitalize()} vs the searched parameters")
    params = searched_params(sd)
    if not params:
        s.text("No parameter takes more than one value in this study yet.")
        return s, pd.DataFrame()
    s.text(f"The question the sweep asked: how {label} depends on each searched parameter. One point per trial: "
           f"completed trials at their {label}" + (" with its 95% interval" if label == "exact match" else "")
           + ", pruned trials at the last value they reported (marked x), failed trials (no value) "
           "on the bottom edge; baseline and best trial marked. Log x axis where the search space is log.")
    rows, long = [], []
    for p in params:
        kind, log, space = param_space(sd, p)
        pts = param_points(sd, p)
        done = pts[(pts["state"] == "COMPLETE") & pts["y"].notna()]
        bestrow = done.sort_values(["y", "number"], ascending=[direction == "minimize", True]).head(1)
        rows.append({"parameter": p, "search space": space,
                     "complete": int((pts["state"] == "COMPLETE").sum()), "pruned": int((pts["state"] == "PRUNED").sum()),
                     "failed": int((pts["state"] == "FAIL").sum()),
                     "best trial": int(bestrow["number"].iloc[0]) if len(bestrow) else "-",
                     "its value": fmt_num(bestrow["x"].iloc[0]) if len(bestrow) else "-",
                     f"its {label}": fmt_num(bestrow["y"].iloc[0]) if len(bestrow) else "-",
                     "completed range": (f"{fmt_num(done['x'].min())} - {fmt_num(done['x'].max())}"
                                         if len(done) and kind != "categorical" else "-")})
        fig = plots.fig_objective_vs_param(pts, p, kind=kind, log=log, label=label, best=best)
        if figures is not None:
            figures[_img_name(p)] = (fig, pts)
        images[_img_name(p)] = plots.png(fig)
        long.append(pts.drop(columns=["x2"]).assign(parameter=p))
    table = pd.DataFrame(rows)
    s.table(table)
    for p in params:
        s.image(_img_name(p), f"{label} vs {p}")
    if len(params) >= 2:
        p1, p2 = _contour_pair(sd, params)
        (k1, l1, _), (k2, l2, _) = param_space(sd, p1), param_space(sd, p2)
        pts2 = param_points(sd, p1, p2)
        fig = plots.fig_contour(pts2, p1, p2, kinds=(k1, k2), logs=(l1, l2), label=label)
        if figures is not None:
            figures["contour.png"] = (fig, pts2)
        images["contour.png"] = plots.png(fig)
        s.text(f"{label.capitalize()} over the two parameters that move it most ({p1}, {p2}; rank correlation "
               "over completed trials): completed trials coloured by value"
               + (" over a contour interpolated between them" if getattr(fig, "contour_drawn", False) else "")
               + "; pruned and failed trials marked.")
        s.image("contour.png", f"{label} over {p1} and {p2}")
    points = pd.concat(long, ignore_index=True) if long else pd.DataFrame()
    return s, points


def pareto_front_2d(df: pd.DataFrame, x: str, x_dir: str = "minimize", y: str = "exact_match",
                    y_dir: str = "maximize") -> pd.DataFrame:
    """Non-dominated completed trials on (x, y): O(n log n) sweep."""
    d = df[(df["state"] == "COMPLETE")].dropna(subset=[x, y])
    if d.empty:
        return d
    xs = d[x] if x_dir == "minimize" else -d[x]
    ys = d[y] if y_dir == "maximize" else -d[y]
    order = pd.DataFrame({"x": xs, "y": ys, "n": d["number"]}).sort_values(["x", "y", "n"],
                                                                        ascending=[True, False, True])
    keep, best_y = [], -math.inf
    for idx, yv in zip(order.index, order["y"]):
        if yv > best_y:
            keep.append(idx)
            best_y = yv
    return d.loc[keep]


def _vs_table(df: pd.DataFrame, col: str, label: str, front_numbers: set[int]) -> pd.DataFrame:
    d = df[(df["state"] == "COMPLETE")].dropna(subset=[col, "exact_match"]).sort_values([col, "number"])
    return pd.DataFrame({
        "trial": d["number"], label: d[col].map(lambda v: f"{v:,.1f}"),
        "exact match [95% CI]": [fmt_em(e, lo, hi) for e, lo, hi in zip(d["exact_match"], d["em_ci_low"], d["em_ci_high"])],
        "baseline": d["baseline"].map(lambda b: "yes" if b else ""),
        "on EM/memory front": d["number"].map(lambda n: "yes" if n in front_numbers else ""),
    })


def section_vs(sd: StudyData, col: str, label: str, key: str, title: str, img: str, front: pd.DataFrame,
               best: int | None, images: dict[str, bytes], logx: bool) -> tuple[Section, pd.DataFrame]:
    s = Section(key, title)
    fnums = set(int(n) for n in front["number"]) if len(front) else set()
    table = _vs_table(sd.frame, col, label, fnums)
    if table.empty:
        s.text(f"No completed trial has both exact match and {label} yet.")
    else:
        d = sd.frame[(sd.frame["state"] == "COMPLETE")].dropna(subset=[col, "exact_match"])
        rho = d[col].rank().corr(d["exact_match"].rank()) if len(d) >= 3 else float("nan")
        s.text(f"{len(table)} completed trials, sorted by {label}."
               + (f" Spearman rank correlation of exact match with {label}: {rho:+.2f}." if _isnum(rho) else ""))
        s.table(table, f"{img}.csv")
    # The EM/memory front has its own plot (section "Pareto front"): not drawn here again.
    images[f"{img}.png"] = plots.em_scatter(sd.frame, col, label, f"Exact match vs {label}", best=best, logx=logx)
    s.image(f"{img}.png", f"exact match vs {label}")
    return s, table


def section_pareto(sd: StudyData, study: optuna.Study, images: dict[str, bytes]) -> tuple[Section, pd.DataFrame]:
    s = Section("pareto", "Pareto front")
    df = sd.frame
    if sd.multi:
        try:
            front_trials = study.best_trials
        except Exception:  # pragma: no cover - storage hiccup
            front_trials = []
        nums = {t.number for t in front_trials}
        d = df[df["number"].isin(nums)]
        table = pd.DataFrame({"trial": d["number"]})
        for i, (o, dr) in enumerate(zip(sd.objectives, sd.directions)):
            table[f"{o} ({dr})"] = d[f"value_{i}"].map(fmt_num) if f"value_{i}" in d else "-"
        table["exact match [95% CI]"] = [fmt_em(e, lo, hi) for e, lo, hi in zip(d["exact_match"], d["em_ci_low"], d["em_ci_high"])]
        table["params"] = [_params_str(sd.by_number(n)) for n in d["number"]]
        s.text(f"Multi-objective study ({', '.join(sd.objectives)}): Optuna's non-dominated trials "
               f"(`study.best_trials`), {len(table)} of {int((df['state'] == 'COMPLETE').sum())} completed.")
        if len(table):
            s.table(table, "pareto.csv")
            if len(sd.objectives) >= 2 and "value_1" in df:
                images["pareto.png"] = plots.pareto_objectives(df[df["state"] == "COMPLETE"], "value_0", "value_1",
                                                               sd.objectives[0], sd.objectives[1], nums)
                s.image("pareto.png", "Pareto front")
        return s, table
    front = pareto_front_2d(df, "peak_memory_mb")
    table = pd.DataFrame({
        "trial": front["number"], "peak memory (MB)": front["peak_memory_mb"].map(lambda v: f"{v:,.1f}"),
        "exact match [95% CI]": [fmt_em(e, lo, hi) for e, lo, hi in zip(front["exact_match"], front["em_ci_low"], front["em_ci_high"])],
        "tokens/s": front["tokens_per_sec"].map(lambda v: f"{v:,.0f}" if _isnum(v) else "-"),
        "params": [_params_str(sd.by_number(int(n))) for n in front["number"]],
    })
    if table.empty:
        s.text("No completed trial with exact match and peak memory yet.")
    else:
        s.text(f"Single-objective study: the exact-match vs peak-memory front computed from the completed "
               f"trials (no other trial has higher exact match for less memory): {len(table)} trials.")
        s.table(table, "pareto.csv")
    done = df[df["state"] == "COMPLETE"]
    images["pareto.png"] = plots.pareto_objectives(done, "peak_memory_mb", "exact_match", "peak memory (MB)",
                                                   "exact match", set(int(n) for n in front["number"]),
                                                   title="Pareto front: exact match vs peak memory")
    s.image("pareto.png", "Pareto front")
    return s, table


def _target(sd: StudyData) -> tuple[str, str, str]:
    """(frame column, direction, label) that history/importance use: a single-objective study's
    own value (for an exact-match objective, the exact match itself); a multi-objective study's
    exact_match attribute."""
    if not sd.multi:
        label = "exact match" if sd.objectives[0] == "exact_match" else sd.objectives[0]
        return "value_0", sd.directions[0], label
    return "exact_match", "maximize", "exact match"


def section_history(sd: StudyData, images: dict[str, bytes]) -> tuple[Section, pd.DataFrame]:
    s = Section("history", "Optimization history")
    col, direction, label = _target(sd)
    df = sd.frame
    d = df[(df["state"] == "COMPLETE")]
    d = d[d[col].notna()] if col in d else d.iloc[0:0]
    hist = pd.DataFrame({"number": d["number"], "value": d[col] if col in d else []})
    if hist.empty:
        s.text("No completed trial yet.")
        return s, hist
    hist["best_so_far"] = hist["value"].cummax() if direction == "maximize" else hist["value"].cummin()
    improved = hist[hist["best_so_far"].ne(hist["best_so_far"].shift())]
    s.text(f"{label} of each completed trial in order, and the best so far ({direction}). "
           f"The best improved {len(improved)} times; the trials that improved it:")
    s.table(pd.DataFrame({"trial": improved["number"], label: improved["value"].map(fmt_num),
                          "best so far": improved["best_so_far"].map(fmt_num)}), "history.csv")
    em_target = label == "exact match"
    others = pd.DataFrame([{"number": t.number, "state": t.state.name,
                            "value": _last_value(t, em_target) if t.state.name != "FAIL" else None}
                           for t in sd.trials if t.state.name in ("PRUNED", "FAIL", "RUNNING")],
                          columns=["number", "state", "value"])
    others["value"] = pd.to_numeric(others["value"], errors="coerce")
    if len(others):
        s.text("The plot also shows pruned trials at their last reported value and failed trials (no value) "
               "on the axis, so every trial of the study is on it.")
    images["history.png"] = plots.history(hist, direction, label, others)
    s.image("history.png", "optimization history")
    return s, hist


def section_intermediate(sd: StudyData, images: dict[str, bytes]) -> tuple[Section, pd.DataFrame]:
    s = Section("intermediate", "Intermediate values")
    # The trial's eval_history (exact match and eval loss of every evaluation, multi-objective
    # trials too); trial.intermediate_values (the same exact match, as reported) are the fallback.
    rows, curves, sources = [], {}, set()
    for t in sd.trials:
        h = [r for r in (t.user_attrs.get("eval_history") or []) if isinstance(r, dict)
             and _isnum(r.get("eval/exact_match")) and _isnum(r.get("step"))]
        steps = [int(r["step"]) for r in h]
        vals = [float(r["eval/exact_match"]) for r in h]
        if h:
            sources.add("eval_history")
        elif t.intermediate_values:
            iv = t.intermediate_values
            steps = sorted(iv)
            vals = [iv[k] for k in steps]
            sources.add("trial.intermediate_values")
        if not steps:
            continue
        curves[t.number] = (steps, vals, t.state.name)
        loss_by_step = {int(r["step"]): r.get("eval/loss") for r in (t.user_attrs.get("eval_history") or [])
                        if isinstance(r, dict) and _isnum(r.get("step"))}
        for st, v in zip(steps, vals):
            rows.append({"trial": t.number, "state": t.state.name, "step": int(st), "value": v,
                         "eval_loss": loss_by_step.get(int(st))})
    long = pd.DataFrame(rows, columns=["trial", "state", "step", "value", "eval_loss"])
    if long.empty:
        s.text("No trial has reported an intermediate value yet.")
        return s, long
    n_pruned = sum(1 for c in curves.values() if c[2] == "PRUNED")
    pruned_at = sd.frame["pruned_at_step"].dropna()
    n_iv = sum(1 for t in sd.trials if t.intermediate_values)
    s.text(f"Periodic exact match of {len(curves)} trials (from {' and '.join(sorted(sources))}; "
           f"{n_iv} trials reported intermediate values to the pruner); {n_pruned} were pruned"
           + (f", at steps {', '.join(f'{int(k)} ({v}x)' for k, v in pruned_at.astype(int).value_counts().sort_index().items())}"
              if len(pruned_at) else "") + ". All values: `intermediate.csv`.")
    last = long.groupby("trial")["value"].max().sort_values(ascending=False)
    show = list(last.index[:10])
    b = _baseline(sd)
    if b is not None and b.number in curves and b.number not in show:
        show.append(b.number)
    piv = long[long["trial"].isin(show)].pivot_table(index="trial", columns="step", values="value", aggfunc="last")
    piv = piv.loc[[n for n in show if n in piv.index]]
    piv.columns = [f"step {c}" for c in piv.columns]
    piv = piv.map(lambda v: fmt_num(v, 3)) if len(piv) else piv
    piv.insert(0, "state", [sd.by_number(int(n)).state.name for n in piv.index])
    s.text(f"The {len(piv)} trials with the highest values" + (" (and the baseline)" if b is not None else "") + ":")
    s.table(piv.reset_index())
    images["intermediate.png"] = plots.intermediate(curves, "exact match")
    s.image("intermediate.png", "intermediate values")
    return s, long


def _spearman(x: pd.Series, y: pd.Series) -> float:
    if x.nunique() < 2 or y.nunique() < 2:
        return float("nan")
    return float(x.rank().corr(y.rank()))


def section_importances(sd: StudyData, images: dict[str, bytes]) -> tuple[Section, pd.DataFrame]:
    s = Section("importances", "Parameter importances")
    done = [t for t in sd.trials if t.state == COMPLETE]
    col, direction, label = _target(sd)
    df = sd.frame[sd.frame["state"] == "COMPLETE"].set_index("number")
    target = df[col] if col in df else pd.Series(dtype=float)
    notes = []
    if target.dropna().nunique() < 2 and "eval_loss" in df and df["eval_loss"].dropna().nunique() >= 2:
        notes.append(f"{label} is the same for every completed trial ({fmt_num(target.dropna().iloc[0]) if len(target.dropna()) else '-'}), "
                     "so it carries no signal: importances below are for **eval loss** instead.")
        target, direction, label = df["eval_loss"], "minimize", "eval loss"
    target = target.dropna()
    varied = [p for p in sd.params if f"param_{p}" in df and df.loc[target.index, f"param_{p}"].nunique() > 1]
    imp = pd.DataFrame(columns=["parameter", "importance", "method"])
    if not varied or len(target) < 2:
        notes.append(f"Not computed: {len(target)} completed trial(s) with a target value and "
                     f"{len(varied)} varied parameter(s); importances need at least 2 of each kind of variation.")
    elif len(target) < MIN_IMPORTANCE_TRIALS:
        notes.append(f"Not computed: too few trials. {len(target)} completed trial(s) with a value; ranking "
                     f"{len(varied)} parameter(s) needs at least {MIN_IMPORTANCE_TRIALS} (with fewer, any "
                     "importance or correlation is decided by one or two points). No importance chart; the "
                     "plots of exact match against each searched parameter show what the trials say.")
    elif len(varied) == 1:
        why = f"only one parameter varies ({varied[0]}), so its fANOVA importance is 1 by definition"
        notes.append(f"Fallback: {why}; showing |Spearman rank correlation| of each parameter with {label} instead.")
        vals = []
        for p in varied:
            x = pd.to_numeric(df.loc[target.index, f"param_{p}"], errors="coerce")
            if x.isna().any():
                x = df.loc[target.index, f"param_{p}"].astype("category").cat.codes.astype(float)
            r = _spearman(x, target)
            vals.append({"parameter": p, "importance": abs(r) if _isnum(r) else 0.0,
                         "method": f"abs(Spearman) (r={r:+.2f})" if _isnum(r) else "spearman (undefined)"})
        imp = pd.DataFrame(vals).sort_values("importance", ascending=False)
    else:
        try:
            imp = _fanova(sd, target, direction, varied)
            n_used = min(len(target), MAX_IMPORTANCE_TRIALS)
            how = imp["method"].iloc[0] if len(imp) else "fANOVA"
            extra = "" if how == "fANOVA" else " (scikit-learn is not installed, so not fANOVA)"
            notes.append(f"optuna.importance.get_param_importances ({how}{extra}) on {n_used} completed trials, target {label}"
                         + (f" (the latest {MAX_IMPORTANCE_TRIALS})" if len(target) > MAX_IMPORTANCE_TRIALS else "") + ".")
        except Exception as e:  # noqa: BLE001 - report, don't fail the report
            notes.append(f"Importance evaluation failed ({type(e).__name__}: {_short(str(e), 120)}); no importances.")
    for n in notes:
        s.text(n)
    if len(imp):
        s.table(pd.DataFrame({"parameter": imp["parameter"], "importance": imp["importance"].map(lambda v: f"{v:.3f}"),
                              "method": imp["method"]}), "importances.csv")
        method = str(imp["method"].iloc[0])
        method = "|Spearman rank correlation|" if method.startswith(("abs(Spearman", "spearman")) else method
        images["importances.png"] = plots.importances(imp.reset_index(drop=True), f"Parameter importance ({label})",
                                                      method)
        s.image("importances.png", "parameter importances")
    return s, imp


def _fanova(sd: StudyData, target: pd.Series, direction: str, varied: list[str]) -> pd.DataFrame:
    """fANOVA on a throwaway in-memory study of the completed trials with `target` as value."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory"
    try:
        sub = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    numbers = list(target.index)[-MAX_IMPORTANCE_TRIALS:]
    trials = []
    for n in numbers:
        t = sd.by_number(int(n))
        ps = {p: t.params[p] for p in varied if p in t.params}
        if len(ps) != len(varied):
            continue
        trials.append(optuna.trial.create_trial(params=ps, distributions={p: t.distributions[p] for p in ps},
                                                value=float(target[n])))
    sub.add_trials(trials)
    name, ev = importance_evaluator()
    res = optuna.importance.get_param_importances(sub, evaluator=ev, params=varied)
    return pd.DataFrame([{"parameter": k, "importance": float(v), "method": name} for k, v in res.items()])


def importance_evaluator():
    """fANOVA (Optuna's default) when scikit-learn is installed, else PED-ANOVA (numpy only)."""
    try:
        import sklearn  # noqa: F401 - fANOVA's random forest
        return "fANOVA", optuna.importance.FanovaImportanceEvaluator(seed=0)
    except ImportError:
        return "PED-ANOVA", optuna.importance.PedAnovaImportanceEvaluator()


def section_feasibility(sd: StudyData) -> tuple[Section, pd.DataFrame]:
    s = Section("feasibility", "Feasibility (pruned before launch)")
    df = sd.frame
    inf = df[df["infeasible_reason"].notna()]
    s.text(f"**{len(inf)} of {len(df)} trials** were predicted not to fit the memory budget and were pruned "
           "before training (`infeasible_reason`).")
    table = pd.DataFrame({"trial": inf["number"],
                          "params": [_params_str(sd.by_number(int(n))) for n in inf["number"]],
                          "predicted MB": inf["predicted_memory_mb"].map(fmt_num),
                          "reason": inf["infeasible_reason"].map(lambda r: _short(r, 160))})
    if len(table):
        s.table(table, "infeasible.csv")
    both = df[(df["state"] == "COMPLETE")].dropna(subset=["predicted_memory_mb", "peak_memory_mb"])
    if len(both):
        ratio = (both["predicted_memory_mb"] / both["peak_memory_mb"]).median()
        s.text(f"Prediction check: on {len(both)} completed trials the predicted peak was a median "
               f"{ratio:.2f}x the measured peak memory.")
    elif not len(table):
        s.text("No trial carries a memory prediction (run with a sweep that predicts memory before launch).")
    return s, table


def section_diagnosis(sd: StudyData) -> tuple[Section, pd.DataFrame]:
    s = Section("diagnosis", "Diagnosis (training guide failure modes)")
    done = sd.frame[(sd.frame["state"] == "COMPLETE") & sd.frame["eval_loss"].notna()]
    ref = float(done["eval_loss"].min()) if len(done) else None
    rows = []
    n_hist = 0
    per_trial = diagnose_study(sd.trials, reference_eval_loss=ref)
    for t in sd.trials:
        if t.user_attrs.get("train_history") or t.user_attrs.get("eval_history"):
            n_hist += 1
        for f in per_trial[t.number]:
            rows.append({"trial": t.number, "state": t.state.name, "params": _params_str(t), "failure mode": f.title,
                         "mode": f.mode, "severity": f.severity, "step": f.step, "evidence": f.evidence,
                         "remedy (guide)": f.remedy})
    table = pd.DataFrame(rows, columns=["trial", "state", "params", "failure mode", "mode", "severity", "step",
                                        "evidence", "remedy (guide)"])
    checked = ("expert collapse, loss spikes / NaN loss (a spike at the same step in most trials is read as the "
               "data's), exploding gradients, overfitting, underfitting, out of memory")
    s.text(f"Read the metric history of {n_hist} trials (and every trial's failure/infeasible reason) for the "
           f"guide's failure modes: {checked}.")
    short = sum(1 for t in sd.trials if 0 < len(t.user_attrs.get("train_history") or []) < 3)
    if short:
        s.text(f"{short} trials have fewer than 3 train reports (e.g. short trials or pruned early): too few "
               "to judge trends (spikes, slow improvement); their NaN values, failure and infeasible "
               "reasons were still checked.")
    if table.empty:
        s.text("**No failure mode found**" + (": every history is consistent with healthy training."
                                              if not short else " in what the histories show."))
        return s, table
    summ = table.groupby("mode").agg(trials=("trial", "nunique")).reset_index()
    summ["failure mode"] = summ["mode"].map(lambda m: MODES[m][0])
    summ["example trials"] = summ["mode"].map(
        lambda m: ", ".join(str(n) for n in sorted(table[table["mode"] == m]["trial"].unique())[:8]))
    summ["remedy (guide)"] = summ["mode"].map(lambda m: MODES[m][1])
    s.text(f"{len(table)} findings in {table['trial'].nunique()} trials:")
    s.table(summ[["failure mode", "trials", "example trials", "remedy (guide)"]].sort_values("trials", ascending=False))
    s.text("Per trial, with the evidence from its history and the remedy. Remedies are read against the study: "
           "settings the trial already has are left out, and a learning-rate range is recommended only where "
           "no trial ran yet or one that ran there did better.")
    show = table.copy()
    show["step"] = show["step"].map(lambda v: str(int(v)) if _isnum(v) else "")
    s.table(show.drop(columns=["mode"]), "diagnosis.csv")
    return s, table


# ------------------------------------------------------------------ build + write

def build_report(study: optuna.Study, *, storage_url: str | None = None, figures: dict | None = None) -> Report:
    """Every section of the study report. `figures`, when given, receives the matplotlib
    figures of the per-parameter and contour plots with the data they plot (name -> (figure,
    points)), for tests and notebooks."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sd = load_study_data(study)
    timings["load"] = time.perf_counter() - t0
    images: dict[str, bytes] = {}
    csvs: dict[str, pd.DataFrame] = {"trials.csv": sd.frame}
    best = study_best_number(sd, study)

    def timed(name, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        timings[name] = time.perf_counter() - t
        return out

    front = pareto_front_2d(sd.frame, "peak_memory_mb")
    sections = [timed("summary", section_summary, sd, best, storage_url), timed("trials", section_trials, sd)]
    sec, t = timed("best", section_best, sd, best)
    sections.append(sec)
    csvs["best.csv"] = t
    sec, t = timed("promoted", section_promoted, sd)
    sections.append(sec)
    csvs["promoted.csv"] = t
    sec, t = timed("params", section_params, sd, best, images, figures)
    sections.append(sec)
    csvs["params.csv"] = t
    for key, col, label, title, img, logx in (
            ("em_vs_memory", "peak_memory_mb", "peak memory (MB)", "Exact match vs peak memory", "em_vs_memory", False),
            ("em_vs_throughput", "tokens_per_sec", "tokens/s", "Exact match vs throughput (tokens/s)", "em_vs_throughput", False)):
        sec, t = timed(key, section_vs, sd, col, label, key, title, img, front, best, images, logx)
        sections.append(sec)
        csvs[f"{img}.csv"] = t
    for key, fn, csv in (("pareto", lambda: section_pareto(sd, study, images), "pareto.csv"),
                         ("history", lambda: section_history(sd, images), "history.csv"),
                         ("intermediate", lambda: section_intermediate(sd, images), "intermediate.csv"),
                         ("importances", lambda: section_importances(sd, images), "importances.csv"),
                         ("feasibility", lambda: section_feasibility(sd), "infeasible.csv"),
                         ("diagnosis", lambda: section_diagnosis(sd), "diagnosis.csv")):
        sec, t = timed(key, fn)
        sections.append(sec)
        csvs[csv] = t
    meta = [f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `vantage-sweep report`."]
    return Report(title=f"Study `{sd.name}`", meta=meta, sections=sections, images=images, csvs=csvs,
                  timings=timings)


def _md_table(df: pd.DataFrame) -> str:
    if not len(df):
        return "(empty)"
    esc = df.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    return esc.to_markdown(index=False)


def to_markdown(report: Report) -> str:
    out = [f"# {report.title}", "", *report.meta, ""]
    out.append("Sections: " + " · ".join(f"[{s.title}](#{s.key})" for s in report.sections))
    out.append("")
    for s in report.sections:
        out += [f'<a id="{s.key}"></a>', "", f"## {s.title}", ""]
        for kind, val in s.blocks:
            if kind == "text":
                out += [val, ""]
            elif kind == "table":
                out += [_md_table(val), ""]
            elif kind == "image":
                out += [f"![{val[1]}]({val[0]})", ""]
    return "\n".join(out)


def write_report(study: optuna.Study, out_dir: str | Path, *, storage_url: str | None = None) -> Path:
    """Build the report and write report.md, report.html, the CSVs and PNGs into `out_dir`."""
    from .html import to_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(study, storage_url=storage_url)
    t = time.perf_counter()
    for name, df in report.csvs.items():
        if df is not None:
            atomic_write(out / name, df.to_csv(index=False), what="report")
    for name, png in report.images.items():
        atomic_write(out / name, png, what="report")
    atomic_write(out / "report.md", to_markdown(report), what="report")
    atomic_write(out / "report.html", to_html(report), what="report")
    report.timings["write"] = time.perf_counter() - t
    log.info("report for %s in %s (%s)", study.study_name, out,
             ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items()))
    return out
