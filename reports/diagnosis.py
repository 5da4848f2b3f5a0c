"""The training guide's failure modes, read from a trial's stored metric history.

Pure functions over what a trial stores (``train_history``: ``train/loss``,
``train/grad_norm``, ``expert/utilization``, ...; ``eval_history``: ``eval/loss``, ...) plus
its ``failure_reason``/``infeasible_reason``. Expert collapse, loss spikes, exploding gradient
norm and overfitting come from the trainer's own detectors (vantage_core.train.diagnose, the
same ones that warn live during training); this module adds what only a finished trial
shows: NaN/diverged runs, underfitting, low (not yet collapsed) expert utilization and
out-of-memory / infeasible trials. Each `Finding` carries the evidence (numbers, steps) and
the guide's remedy (TRAINING_GUIDE.md, "Troubleshooting" and "Hyperparameter Tuning").
A healthy run yields no findings.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import statistics
from dataclasses import dataclass, replace
from typing import Iterable

from vantage_core.train import metrics as M
from vantage_core.train.diagnose import REMEDIES, Finding, finding, loss_spikes, remedy_text

__all__ = ["Finding", "MODES", "REMEDIES", "diagnose_history", "diagnose_trial", "diagnose_study", "StudyContext"]

# Guide, "Expert Collapse": utilization < 50%; "Monitoring": should be 80-100%.
COLLAPSE_UTILIZATION = 0.5
HEALTHY_UTILIZATION = 0.8
# Underfitting: train loss improved less than this (relative) over the recorded history ...
UNDERFIT_IMPROVEMENT = 0.10
# ... and (when the study gives a reference) ends this far above the study's best eval loss.
UNDERFIT_VS_BEST = 1.25

# The remedies table and the Finding class are the trainer's own (vantage_core.train.diagnose):
# one table for the live warnings and this report. A report finding's `kind` is its mode.
MODES = {m: (r.title, remedy_text(m)) for m, r in REMEDIES.items()}   # mode: (guide heading, generic remedy)


def _finding(mode: str, severity: str, step: int | None, evidence: str, remedy_extra: str = "",
             config: dict | None = None, lr: str | None = None) -> Finding:
    return finding(mode, step, evidence, severity=severity, config=config, lr=lr, extra=remedy_extra)


def _num(v) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(v)
    return None


def series(history: Iterable[dict] | None, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of `key` in a history, in order; non-finite values kept."""
    out = []
    for i, row in enumerate(history or ()):
        if not isinstance(row, dict):
            continue
        v = _num(row.get(key))
        if v is None:
            continue
        step = row.get(M.STEP)
        out.append((int(step) if isinstance(step, (int, float)) and math.isfinite(step) else i, v))
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


# ---------------------------------------------------------------- detectors (pure)

def _rows(hist):
    """Rows read back from JSON: keep those with a numeric step."""
    return [r for r in hist or () if isinstance(r, dict) and isinstance(r.get(M.STEP), (int, float))
            and not isinstance(r.get(M.STEP), bool) and math.isfinite(r[M.STEP])]


def spike_steps(train_history) -> list[int]:
    """Steps where the trainer's loss-spike detector starts an episode."""
    return [f.step for f in loss_spikes(_rows(train_history))]


def _core_findings(train_history, eval_history, config: dict | None = None,
                   shared_spikes: dict[int, str] | None = None) -> list[Finding]:
    """The trainer's own detectors (vantage_core.train.diagnose: expert collapse, loss spikes,
    exploding gradient norm, overfitting), one Finding per failure mode with the first episode's
    evidence and the guide's remedy. A spike at a step in `shared_spikes` (step -> how many
    trials spiked there) is the data's, not this trial's: a `data_spike` finding."""
    from vantage_core.train.diagnose import diagnose

    by_mode: dict[str, list] = {}
    shared = shared_spikes or {}
    for f in diagnose(_rows(train_history), _rows(eval_history)):
        mode = f.mode
        if mode == "loss_spike" and f.step in shared:
            mode = "data_spike"
        if mode in REMEDIES:
            by_mode.setdefault(mode, []).append(f)
    out = []
    for mode, fs in by_mode.items():
        more = f" ({len(fs)} episodes; later at steps {', '.join(str(f.step) for f in fs[1:4])})" if len(fs) > 1 else ""
        ev = fs[0].evidence
        if mode == "expert_collapse":
            ev += " (the guide calls utilization < 50% expert collapse)"
        if mode == "data_spike":
            ev += f" at step {fs[0].step}{more}; " + "; ".join(f"step {f.step}: {shared[f.step]}" for f in fs[:3])
        else:
            ev += f" at step {fs[0].step}{more}"
        severity = "error" if mode in ("expert_collapse",) or "nan" in ev.lower() or "inf" in ev.lower() else "warning"
        out.append(_finding(mode, severity, fs[0].step, ev, config=config))
    return out


def detect_low_utilization(train_history, config: dict | None = None) -> Finding | None:
    """Below the guide's healthy 80-100% but not (yet) collapsed (< 50%)."""
    util = [(s, v) for s, v in series(train_history, M.EXPERT_UTILIZATION) if math.isfinite(v)]
    if not util:
        return None
    recent = util[len(util) // 2:] if len(util) >= 4 else util[-2:]
    level = statistics.median(v for _, v in recent)
    if COLLAPSE_UTILIZATION <= level < HEALTHY_UTILIZATION:
        first_low = next((s for s, v in util if v < HEALTHY_UTILIZATION), None)
        return _finding("low_utilization", "warning", first_low,
                        f"expert/utilization {level:.0%} (median of the last {len(recent)} report(s), steps "
                        f"{recent[0][0]}-{recent[-1][0]}); the guide expects 80-100%", config=config)
    return None


def detect_nan_loss(train_history, eval_history, failure_reason: str | None = None,
                    config: dict | None = None) -> Finding | None:
    for name, hist, key in (("train/loss", train_history, M.TRAIN_LOSS), ("eval/loss", eval_history, M.EVAL_LOSS)):
        bad = [(s, v) for s, v in series(hist, key) if not math.isfinite(v)]
        if bad:
            return _finding("nan_loss", "error", bad[0][0], f"{name} is {bad[0][1]} at step {bad[0][0]}",
                            config=config)
    reason = failure_reason or ""
    m = re.search(r"diverged at step (\d+): (.+?) is not finite", reason)
    if m and "gradient" not in m.group(2):
        return _finding("nan_loss", "error", int(m.group(1)),
                        f"the trial failed: {m.group(2)} not finite at step {m.group(1)}", config=config)
    if not m and re.search(r"\bnan\b|non-finite|not finite", reason, re.I) and "gradient" not in reason.lower():
        return _finding("nan_loss", "error", None, f"the trial failed: {reason[:160]}", config=config)
    return None


def detect_gradient_failure(failure_reason: str | None = None, config: dict | None = None) -> Finding | None:
    m = re.search(r"diverged at step (\d+): gradient norm is not finite", failure_reason or "")
    if m:
        return _finding("exploding_gradients", "error", int(m.group(1)),
                        f"the trial failed: gradient norm not finite at step {m.group(1)}", config=config)
    return None


def detect_underfitting(train_history, eval_history, reference_eval_loss: float | None = None,
                        total_steps: int | None = None, config: dict | None = None) -> Finding | None:
    tr = [(s, v) for s, v in series(train_history, M.TRAIN_LOSS) if math.isfinite(v)]
    if len(tr) < 3:
        return None
    last_step = tr[-1][0]
    if tr[0][0] > 0.25 * max(last_step, total_steps or 0):
        return None  # the recorded history misses the start of training: "slow" is not measurable
    k = max(1, len(tr) // 5)
    first = statistics.mean(v for _, v in tr[:k])
    last = statistics.mean(v for _, v in tr[-k:])
    if first <= 0:
        return None
    gain = (first - last) / first
    if gain >= UNDERFIT_IMPROVEMENT:
        return None
    ev = [(s, v) for s, v in series(eval_history, M.EVAL_LOSS) if math.isfinite(v)]
    high = ""
    if reference_eval_loss is not None and ev:
        if ev[-1][1] < UNDERFIT_VS_BEST * reference_eval_loss:
            return None
        high = f"; final eval/loss {_fmt(ev[-1][1])} vs the study's best {_fmt(reference_eval_loss)}"
    elif ev:
        high = f"; final eval/loss {_fmt(ev[-1][1])}"
    return _finding("underfitting", "warning", tr[-1][0],
                    f"train/loss only {gain:+.0%} over steps {tr[0][0]}-{tr[-1][0]} "
                    f"({_fmt(first)} -> {_fmt(last)}){high}", config=config)


def detect_oom(failure_reason: str | None, infeasible_reason: str | None = None,
               config: dict | None = None) -> Finding | None:
    if infeasible_reason:
        return _finding("out_of_memory", "error", None, f"infeasible before launch: {infeasible_reason[:200]}",
                        config=config)
    r = failure_reason or ""
    if re.search(r"out of memory|\boom\b|MemoryError|MemoryBudgetError|\[malloc|allocat", r, re.I):
        return _finding("out_of_memory", "error", None, f"the trial failed: {r[:200]}", config=config)
    return None


# ---------------------------------------------------------------- the study as context

LR_MODES_DOWN = ("nan_loss", "loss_spike", "exploding_gradients")
LR_MODES_UP = ("underfitting",)


@dataclass(frozen=True)
class TrialOutcome:
    """What the study says about one trial, for advice that must not contradict it."""
    number: int
    learning_rate: float | None
    state: str
    exact_match: float | None
    note: str                 # e.g. "pruned at step 100 on the eval-loss tie-break (exact match 0, ...)"


@dataclass
class StudyContext:
    """The other trials (their learning rates and outcomes) and the loss spikes several trials
    share at the same step; `diagnose_history` uses it so its advice agrees with the study."""
    outcomes: list[TrialOutcome]
    shared_spikes: dict[int, str]

    def in_range(self, lo: float, hi: float, exclude: int | None = None) -> list[TrialOutcome]:
        return [o for o in self.outcomes if o.number != exclude and o.learning_rate is not None
                and lo <= o.learning_rate <= hi]


class _StepValues:
    """Every COMPLETE/PRUNED trial's intermediate value at each step, sorted once, so the median
    of the others at a step (one trial left out) costs a bisect, not a pass over the study."""

    def __init__(self, trials):
        self.by_step: dict[int, list[float]] = {}
        for o in trials:
            if o.state.name in ("COMPLETE", "PRUNED"):
                for st, v in (o.intermediate_values or {}).items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        self.by_step.setdefault(st, []).append(float(v))
        for vals in self.by_step.values():
            vals.sort()

    def median_without(self, step: int, v: float, exclude_self: bool) -> float | None:
        vals = self.by_step.get(step, [])
        n = len(vals) - (1 if exclude_self else 0)
        if n <= 0:
            return None
        i = bisect.bisect_left(vals, v) if exclude_self else None

        def at(k):   # k-th smallest of the others
            return vals[k + 1] if i is not None and k >= i else vals[k]
        return at(n // 2) if n % 2 else (at(n // 2 - 1) + at(n // 2)) / 2


def pruned_on_tie_break(t, trials, _values: _StepValues | None = None) -> tuple[bool, str]:
    """Whether the pruner stopped pruned trial `t` on the eval-loss tie-break: its exact match at
    the pruning step was not below the median of the other trials' at that step (on exact match
    alone it would have gone on), so the loss decided. Returns (decided by the tie-break, note)."""
    iv = t.intermediate_values or {}
    if not iv:
        return False, ("pruned before launch (infeasible)" if t.user_attrs.get("infeasible_reason")
                       else "pruned before its first evaluation")
    step = t.user_attrs.get("pruned_at_step")
    step = step if step in iv else max(iv)
    v = float(iv[step])
    values = _values or _StepValues(trials)
    mine = t.state.name in ("COMPLETE", "PRUNED") and math.isfinite(v)
    med = values.median_without(step, v, exclude_self=mine)
    if med is None:
        return False, f"pruned at step {step} (exact match {_fmt(v)})"
    if v >= med:
        return True, (f"pruned at step {step} on the eval-loss tie-break (its exact match {_fmt(v)} equalled the "
                      f"others' median {_fmt(med)}, so its eval loss decided)")
    return False, f"pruned at step {step} (exact match {_fmt(v)} below the others' median {_fmt(med)})"


def study_context(trials) -> StudyContext:
    outcomes = []
    spikes: dict[int, list[tuple[int, float | None]]] = {}
    covering: dict[int, int] = {}
    values = _StepValues(trials)
    for t in trials:
        lr = t.params.get("learning_rate")
        if lr is None:
            tr = config_of(t).get("training")
            lr = tr.get("learning_rate") if isinstance(tr, dict) else None
        lr = float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None
        em = t.user_attrs.get("exact_match")
        em = float(em) if isinstance(em, (int, float)) and not isinstance(em, bool) else None
        st = t.state.name
        if st == "COMPLETE":
            note = f"completed with exact match {_fmt(em) if em is not None else '-'}"
        elif st == "PRUNED":
            note = pruned_on_tie_break(t, trials, values)[1]
        elif st == "FAIL":
            note = "failed" + (f" ({t.user_attrs['failure_reason'][:60]})" if t.user_attrs.get("failure_reason") else "")
        else:
            note = st.lower()
        outcomes.append(TrialOutcome(t.number, lr, st, em, note))
        rows = [r for r in _rows(t.user_attrs.get("train_history")) if _num(r.get(M.TRAIN_LOSS)) is not None]
        steps = [int(r[M.STEP]) for r in rows]
        for i, stp in enumerate(steps):
            if i >= 5:                       # the detector needs 5 reports before a step to judge it
                covering[stp] = covering.get(stp, 0) + 1
        for stp in spike_steps(rows):
            spikes.setdefault(stp, []).append((t.number, lr))
    shared = {}
    for stp, who in spikes.items():
        n_cover = covering.get(stp, len(who))
        if len(who) >= 2 and len(who) >= 0.75 * n_cover:
            lrs = sorted(lr for _, lr in who if lr is not None)
            span = (f", learning rates {_fmt(lrs[0])}-{_fmt(lrs[-1])}" if len(lrs) >= 2 and lrs[0] != lrs[-1] else "")
            shared[stp] = (f"{len(who)} of the {n_cover} trials whose history reaches it spike there{span}")
    return StudyContext(outcomes, shared)


def config_of(t) -> dict:
    """The trial's config (user attribute `config`, YAML) as a nested dict; {} if absent."""
    raw = t.user_attrs.get("config") if hasattr(t, "user_attrs") else None
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    return _parse_config(raw)


@functools.lru_cache(maxsize=4096)
def _parse_config(raw: str) -> dict:
    try:
        import yaml
        d = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception:  # noqa: BLE001 - an unreadable config only loses the "already set" filter
        return {}
    return d if isinstance(d, dict) else {}


def _lr_advice(mode: str, lr: float, own_em: float | None, ctx: StudyContext | None,
               number: int | None) -> str:
    """The learning-rate advice for one trial, consistent with what the study already ran: a
    range is recommended only if no trial ran there yet, or one that did there did better."""
    down = mode in LR_MODES_DOWN
    lo, hi = (lr / 5, lr / 2) if down else (2 * lr, 5 * lr)
    verb = "Reduce" if down else "Increase"
    base = f"This trial's learning_rate is {lr:.3g}: "
    if ctx is None:
        return base + f"try {lo:.3g}-{hi:.3g}"
    there = ctx.in_range(lo, hi, exclude=number)
    if not there:
        return base + f"try {lo:.3g}-{hi:.3g} (no trial of this study ran there yet)"
    better = [o for o in there if o.state == "COMPLETE" and o.exact_match is not None
              and (own_em is None or o.exact_match > own_em)]
    seen = "; ".join(f"trial {o.number} (learning_rate {o.learning_rate:.3g}) {o.note}" for o in there[:4])
    if better:
        b = max(better, key=lambda o: o.exact_match)
        return base + (f"try {lo:.3g}-{hi:.3g}: trial {b.number} (learning_rate {b.learning_rate:.3g}) completed there "
                       f"with exact match {_fmt(b.exact_match)}")
    return base + (f"the study already ran {lo:.3g}-{hi:.3g} and nothing there did better ({seen}), so this "
                   f"report does not recommend that range; {verb.lower()} the learning rate only with more "
                   f"evidence (e.g. a longer trial there)")


def _tailor(f: Finding, params: dict | None, ctx: StudyContext | None = None, number: int | None = None,
            own_em: float | None = None, config: dict | None = None) -> Finding:
    """Put the trial's own learning rate, and what the study already ran near it, into the LR advice."""
    lr = (params or {}).get("learning_rate")
    if lr is None and config:
        lr = config.get("training", {}).get("learning_rate") if isinstance(config.get("training"), dict) else None
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or f.mode not in LR_MODES_DOWN + LR_MODES_UP:
        return f
    advice = _lr_advice(f.mode, float(lr), own_em, ctx, number)
    if ctx is None:   # no study: the trial's own numbers before the guide's generic remedy
        return replace(f, remedy=f"{advice}. {f.remedy}")
    return replace(f, remedy=remedy_text(f.mode, config, lr=advice))


def diagnose_history(train_history, eval_history, *, failure_reason: str | None = None,
                     infeasible_reason: str | None = None, params: dict | None = None,
                     reference_eval_loss: float | None = None, total_steps: int | None = None,
                     config: dict | None = None, context: StudyContext | None = None,
                     number: int | None = None, exact_match: float | None = None) -> list[Finding]:
    """Every guide failure mode evident in one trial's histories (empty for a healthy run).

    `config` (the trial's config as a nested dict) leaves out remedies it already follows;
    `context` (the rest of the study, `study_context`) keeps the advice from contradicting the
    study: a spike at a step most trials share is the data's, and a learning-rate range the
    study already ran without doing better is not recommended."""
    found = [detect_oom(failure_reason, infeasible_reason, config),
             detect_nan_loss(train_history, eval_history, failure_reason, config),
             detect_gradient_failure(failure_reason, config)]
    found += [f for f in _core_findings(train_history, eval_history, config,
                                        context.shared_spikes if context else None)
              if not (f.mode == "exploding_gradients" and found[2] is not None)]
    collapsed = any(f is not None and f.mode == "expert_collapse" for f in found)
    found += [None if collapsed else detect_low_utilization(train_history, config),
              detect_underfitting(train_history, eval_history, reference_eval_loss, total_steps, config)]
    return [_tailor(f, params, context, number, exact_match, config) for f in found if f is not None]


def diagnose_trial(trial, reference_eval_loss: float | None = None,
                   context: StudyContext | None = None) -> list[Finding]:
    """`diagnose_history` on an Optuna FrozenTrial's user attributes (and its stored config)."""
    ua = trial.user_attrs
    em = ua.get("exact_match")
    return diagnose_history(ua.get("train_history"), ua.get("eval_history"),
                            failure_reason=ua.get("failure_reason"),
                            infeasible_reason=ua.get("infeasible_reason"), params=trial.params,
                            reference_eval_loss=reference_eval_loss, total_steps=ua.get("steps"),
                            config=config_of(trial) or None, context=context, number=trial.number,
                            exact_match=float(em) if isinstance(em, (int, float)) and not isinstance(em, bool) else None)


def diagnose_study(trials, reference_eval_loss: float | None = None) -> dict[int, list[Finding]]:
    """Every trial's findings, each read against the rest of the study (`study_context`)."""
    ctx = study_context(trials)
    return {t.number: diagnose_trial(t, reference_eval_loss, ctx) for t in trials}
