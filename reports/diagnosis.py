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

import math
import re
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from vantage_core.train import metrics as M

# Guide, "Expert Collapse": utilization < 50%; "Monitoring": should be 80-100%.
COLLAPSE_UTILIZATION = 0.5
HEALTHY_UTILIZATION = 0.8
# Underfitting: train loss improved less than this (relative) over the recorded history ...
UNDERFIT_IMPROVEMENT = 0.10
# ... and (when the study gives a reference) ends this far above the study's best eval loss.
UNDERFIT_VS_BEST = 1.25

MODES = {
    # mode: (guide heading, remedy)
    "expert_collapse": (
        "Expert Collapse",
        "Increase the load-balancing loss (`model.router_aux_loss_coef: 0.02`, was 0.01); add expert "
        "dropout (`model.expert_dropout: 0.1`); raise expert capacity (`model.expert_capacity: 1.5`)."),
    "low_utilization": (
        "Expert Utilization below 80%",
        "Utilization should be 80-100%. If it keeps falling: `model.router_aux_loss_coef: 0.02`, "
        "`model.expert_dropout: 0.1`, `model.expert_capacity: 1.5`."),
    "nan_loss": (
        "Loss Spikes / NaN Loss",
        "Reduce the learning rate 2-5x; lower warmup steps; tighten gradient clipping "
        "(`training.max_grad_norm: 0.5`, was 1.0); add router z-loss (`model.router_z_loss_coef: 0.001`)."),
    "loss_spike": (
        "Loss Spikes / NaN Loss",
        "Reduce the learning rate 2-5x; lower warmup steps; tighten gradient clipping "
        "(`training.max_grad_norm: 0.5`, was 1.0); add router z-loss (`model.router_z_loss_coef: 0.001`)."),
    "exploding_gradients": (
        "Loss Spikes / NaN Loss: gradient explosion",
        "Check gradient clipping (`training.max_grad_norm: 0.5`, was 1.0); reduce the learning rate 2-5x; "
        "add router z-loss for router stability (`model.router_z_loss_coef: 0.001`)."),
    "overfitting": (
        "Overfitting",
        "Increase dropout (`model.hidden_dropout: 0.15`, `model.expert_dropout: 0.15`); increase weight "
        "decay (`training.weight_decay: 0.2`); more augmentation (`data.augmentation_prob: 0.5`); early "
        "stopping on the validation metric. If validation loss is high but training low, lower "
        "`model.router_aux_loss_coef` to 0.005."),
    "underfitting": (
        "Underfitting",
        "Increase model size; train longer (more steps); increase the learning rate; reduce "
        "regularization (dropout, weight decay)."),
    "out_of_memory": (
        "Out of Memory (OOM)",
        "Reduce `training.batch_size` (raise `training.gradient_accumulation_steps` to keep the effective "
        "batch); enable `training.gradient_checkpointing: true`; use `training.mixed_precision: bf16`; "
        "reduce `training.max_seq_length`."),
}


@dataclass(frozen=True)
class Finding:
    mode: str            # a key of MODES
    severity: str        # "error" (the run is broken) or "warning"
    step: int | None     # first step where the evidence shows
    evidence: str        # numbers from the history
    title: str = ""
    remedy: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finding(mode: str, severity: str, step: int | None, evidence: str, remedy_extra: str = "") -> Finding:
    title, remedy = MODES[mode]
    return Finding(mode, severity, step, evidence, title, (remedy_extra + " " + remedy).strip())


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

def _core_findings(train_history, eval_history) -> list[Finding]:
    """The trainer's own detectors (vantage_core.train.diagnose: expert collapse, loss spikes,
    exploding gradient norm, overfitting), one Finding per failure mode with the first episode's
    evidence and the guide's remedy."""
    from vantage_core.train.diagnose import diagnose

    kinds = {"expert_collapse": "expert_collapse", "loss_spike": "loss_spike",
             "exploding_grad_norm": "exploding_gradients", "overfitting": "overfitting"}
    by_mode: dict[str, list] = {}
    def rows(hist):  # rows read back from JSON: keep those with a numeric step
        return [r for r in hist or () if isinstance(r, dict) and isinstance(r.get(M.STEP), (int, float))
                and not isinstance(r.get(M.STEP), bool) and math.isfinite(r[M.STEP])]

    for f in diagnose(rows(train_history), rows(eval_history)):
        mode = kinds.get(f.kind)
        if mode:
            by_mode.setdefault(mode, []).append(f)
    out = []
    for mode, fs in by_mode.items():
        more = f" ({len(fs)} episodes; later at steps {', '.join(str(f.step) for f in fs[1:4])})" if len(fs) > 1 else ""
        ev = fs[0].evidence
        if mode == "expert_collapse":
            ev += " (the guide calls utilization < 50% expert collapse)"
        severity = "error" if mode in ("expert_collapse",) or "nan" in ev.lower() or "inf" in ev.lower() else "warning"
        out.append(_finding(mode, severity, fs[0].step, f"{ev} at step {fs[0].step}{more}"))
    return out


def detect_low_utilization(train_history) -> Finding | None:
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
                        f"{recent[0][0]}-{recent[-1][0]}); the guide expects 80-100%")
    return None


def detect_nan_loss(train_history, eval_history, failure_reason: str | None = None) -> Finding | None:
    for name, hist, key in (("train/loss", train_history, M.TRAIN_LOSS), ("eval/loss", eval_history, M.EVAL_LOSS)):
        bad = [(s, v) for s, v in series(hist, key) if not math.isfinite(v)]
        if bad:
            return _finding("nan_loss", "error", bad[0][0], f"{name} is {bad[0][1]} at step {bad[0][0]}")
    reason = failure_reason or ""
    m = re.search(r"diverged at step (\d+): (.+?) is not finite", reason)
    if m and "gradient" not in m.group(2):
        return _finding("nan_loss", "error", int(m.group(1)),
                        f"the trial failed: {m.group(2)} not finite at step {m.group(1)}")
    if not m and re.search(r"\bnan\b|non-finite|not finite", reason, re.I) and "gradient" not in reason.lower():
        return _finding("nan_loss", "error", None, f"the trial failed: {reason[:160]}")
    return None


def detect_gradient_failure(failure_reason: str | None = None) -> Finding | None:
    m = re.search(r"diverged at step (\d+): gradient norm is not finite", failure_reason or "")
    if m:
        return _finding("exploding_gradients", "error", int(m.group(1)),
                        f"the trial failed: gradient norm not finite at step {m.group(1)}")
    return None


def detect_underfitting(train_history, eval_history, reference_eval_loss: float | None = None,
                        total_steps: int | None = None) -> Finding | None:
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
                    f"({_fmt(first)} -> {_fmt(last)}){high}")


def detect_oom(failure_reason: str | None, infeasible_reason: str | None = None) -> Finding | None:
    if infeasible_reason:
        return _finding("out_of_memory", "error", None, f"infeasible before launch: {infeasible_reason[:200]}")
    r = failure_reason or ""
    if re.search(r"out of memory|\boom\b|MemoryError|MemoryBudgetError|\[malloc|allocat", r, re.I):
        return _finding("out_of_memory", "error", None, f"the trial failed: {r[:200]}")
    return None


def _tailor(f: Finding, params: dict | None) -> Finding:
    """Put the trial's own learning rate into the LR advice."""
    lr = (params or {}).get("learning_rate")
    if not isinstance(lr, (int, float)) or f.mode not in ("nan_loss", "loss_spike", "exploding_gradients",
                                                          "underfitting"):
        return f
    if f.mode == "underfitting":
        extra = f"This trial's learning_rate is {lr:.3g}: try {2 * lr:.3g}-{5 * lr:.3g}."
    else:
        extra = f"This trial's learning_rate is {lr:.3g}: try {lr / 5:.3g}-{lr / 2:.3g}."
    return Finding(f.mode, f.severity, f.step, f.evidence, f.title, f"{extra} {f.remedy}")


def diagnose_history(train_history, eval_history, *, failure_reason: str | None = None,
                     infeasible_reason: str | None = None, params: dict | None = None,
                     reference_eval_loss: float | None = None, total_steps: int | None = None) -> list[Finding]:
    """Every guide failure mode evident in one trial's histories (empty for a healthy run)."""
    found = [detect_oom(failure_reason, infeasible_reason),
             detect_nan_loss(train_history, eval_history, failure_reason),
             detect_gradient_failure(failure_reason)]
    found += [f for f in _core_findings(train_history, eval_history)
              if not (f.mode == "exploding_gradients" and found[2] is not None)]
    collapsed = any(f is not None and f.mode == "expert_collapse" for f in found)
    found += [None if collapsed else detect_low_utilization(train_history),
              detect_underfitting(train_history, eval_history, reference_eval_loss, total_steps)]
    return [_tailor(f, params) for f in found if f is not None]


def diagnose_trial(trial, reference_eval_loss: float | None = None) -> list[Finding]:
    """`diagnose_history` on an Optuna FrozenTrial's user attributes."""
    ua = trial.user_attrs
    return diagnose_history(ua.get("train_history"), ua.get("eval_history"),
                            failure_reason=ua.get("failure_reason"),
                            infeasible_reason=ua.get("infeasible_reason"), params=trial.params,
                            reference_eval_loss=reference_eval_loss, total_steps=ua.get("steps"))
