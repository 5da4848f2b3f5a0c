"""The training guide's troubleshooting signals, as pure functions over metric histories.

`diagnose(train_history, eval_history) -> list[Finding]` runs every detector; each detector
takes the histories the trainer reports (lists of dicts keyed by the names in
`metrics.py`, each with a "step") and returns one Finding per episode (the step where the
symptom started). `DiagnoseCallback` runs them live and logs each new finding once, as a
warning carrying the guide's remedy; `reports/` reuses the same functions, the same `Finding`
class and the same remedies table (`REMEDIES`, `remedy_text`) after the fact.

Detectors (thresholds are keyword arguments):
* expert_collapse: `expert/utilization` < 0.5 (guide: "Expert utilization < 50%").
* loss_spike: `train/loss` > spike_factor x the median of the previous `window` reports.
* exploding_grad_norm: `train/grad_norm` non-finite or > factor x the median of the
  previous `window` reports (and above `min_norm`).
* overfitting: `eval/loss` rose by > rel_tol over its best while `train/loss` kept
  falling (guide: "Low train loss, high validation loss").
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from . import metrics as M

log = logging.getLogger("vantage.diagnose")

# ------------------------------------------------------------------ the remedies table
# One table for the live warnings (DiagnoseCallback) and the study report (reports/diagnosis.py):
# each failure mode's guide heading (TRAINING_GUIDE.md, "Troubleshooting"), a short label for a
# log line, and its remedy as actions. An action that changes a config key names the key and the
# value it recommends; `remedy_text(mode, config)` leaves out an action whose key the run already
# has at that value (or beyond it, for "raise"/"lower"), and says what the key was.


@dataclass(frozen=True)
class Action:
    text: str                 # "{was}" is replaced by ", was <current value>" when the config is known
    key: str | None = None    # dotted config key ("training.max_grad_norm")
    value: Any = None         # the value the text recommends
    op: str = "set"           # "set": recommend == value; "raise": >= value; "lower": <= value


@dataclass(frozen=True)
class Remedy:
    title: str                # the guide's heading
    label: str                # short name, for a log line
    actions: tuple[Action, ...]
    lead: str = ""            # a sentence before the actions


def _a(text, key=None, value=None, op="set"):
    return Action(text, key, value, op)


LR_DOWN = _a("Reduce the learning rate 2-5x", "training.learning_rate")
LR_UP = _a("increase the learning rate", "training.learning_rate")
_MOE = (_a("Increase the load-balancing loss (`model.router_aux_loss_coef: 0.02`{was})", "model.router_aux_loss_coef", 0.02, "raise"),
        _a("add expert dropout (`model.expert_dropout: 0.1`{was})", "model.expert_dropout", 0.1, "raise"),
        _a("raise expert capacity (`model.expert_capacity: 1.5`{was})", "model.expert_capacity", 1.5, "raise"))
_SPIKE = (LR_DOWN, _a("lower warmup steps"),
          _a("tighten gradient clipping (`training.max_grad_norm: 0.5`{was})", "training.max_grad_norm", 0.5, "lower"),
          _a("add router z-loss (`model.router_z_loss_coef: 0.001`{was})", "model.router_z_loss_coef", 0.001, "raise"))

REMEDIES: dict[str, Remedy] = {
    "expert_collapse": Remedy("Expert Collapse", "Expert collapse", _MOE),
    "low_utilization": Remedy("Expert Utilization below 80%", "Low expert utilization", _MOE,
                              lead="Utilization should be 80-100%. If it keeps falling:"),
    "nan_loss": Remedy("Loss Spikes / NaN Loss", "NaN loss", _SPIKE),
    "loss_spike": Remedy("Loss Spikes / NaN Loss", "Loss spike", _SPIKE),
    "data_spike": Remedy(
        "Loss Spikes: the same step across trials (a data batch)", "Loss spike at the same step across trials",
        (_a("Look at the batch of that step: every trial sees the same batches in the same order "
            "(`training.seed`), so a spike at one step in every trial, whatever its learning rate, comes from "
            "the data (unusually long, mislabeled or duplicated examples), not from the learning rate; do not "
            "lower the learning rate for it"),
         _a("to confirm, rerun one trial with another `training.seed`: the spike should move with the batch")),
        lead="A batch, not the learning rate:"),
    "exploding_gradients": Remedy(
        "Loss Spikes / NaN Loss: gradient explosion", "Exploding gradient norm",
        (_a("Check gradient clipping (`training.max_grad_norm: 0.5`{was})", "training.max_grad_norm", 0.5, "lower"),
         _a("reduce the learning rate 2-5x", "training.learning_rate"),
         _a("add router z-loss for router stability (`model.router_z_loss_coef: 0.001`{was})",
            "model.router_z_loss_coef", 0.001, "raise"))),
    "overfitting": Remedy(
        "Overfitting", "Overfitting",
        (_a("Increase dropout (`model.hidden_dropout: 0.15`{was})", "model.hidden_dropout", 0.15, "raise"),
         _a("increase expert dropout (`model.expert_dropout: 0.15`{was})", "model.expert_dropout", 0.15, "raise"),
         _a("increase weight decay (`training.weight_decay: 0.2`{was})", "training.weight_decay", 0.2, "raise"),
         _a("more augmentation (`data.augmentation_prob: 0.5`{was})", "data.augmentation_prob", 0.5, "raise"),
         _a("early stopping on the validation metric (checkpoint-best)"),
         _a("if validation loss is high but training low, lower `model.router_aux_loss_coef` to 0.005{was}",
            "model.router_aux_loss_coef", 0.005, "lower"))),
    "underfitting": Remedy(
        "Underfitting", "Underfitting",
        (_a("Increase model size"), _a("train longer (more steps)"), LR_UP,
         _a("reduce regularization (dropout, weight decay)"))),
    "out_of_memory": Remedy(
        "Out of Memory (OOM)", "Out of memory",
        (_a("Reduce `training.batch_size` (raise `training.gradient_accumulation_steps` to keep the effective batch)"),
         _a("enable `training.gradient_checkpointing: true`", "training.gradient_checkpointing", True),
         _a("use `training.mixed_precision: bf16`{was}", "training.mixed_precision", "bf16"),
         _a("reduce `training.max_seq_length`"))),
}

# A detector's kind -> the failure mode (key of REMEDIES) it is evidence of.
MODE_OF_KIND = {"exploding_grad_norm": "exploding_gradients"}


def config_value(config: dict | None, key: str) -> Any:
    """`config["training"]["max_grad_norm"]` for key "training.max_grad_norm"; None when unknown."""
    cur: Any = config
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _already(action: Action, current: Any) -> bool:
    """The run already has what `action` recommends."""
    if current is None or action.value is None:
        return False
    if isinstance(action.value, (bool, str)) or action.op == "set":
        return current == action.value
    if not isinstance(current, (int, float)) or isinstance(current, bool):
        return False
    return current >= action.value if action.op == "raise" else current <= action.value


def remedy_text(mode: str, config: dict | None = None, *, lr: str | None = None) -> str:
    """The remedy of `mode` as one paragraph. With the run's `config` (nested dict), actions the
    run already follows are left out and the others say what the key was. `lr` replaces the
    generic learning-rate action (the report's study-aware advice); "" drops it."""
    r = REMEDIES[mode]
    parts = [lr] if lr else []          # the trial's own learning-rate advice comes first
    for act in r.actions:
        if act.key == "training.learning_rate" and lr is not None:
            continue
        cur = config_value(config, act.key) if act.key else None
        if _already(act, cur):
            continue
        shown = f"{cur:.3g}" if isinstance(cur, float) else cur
        was = f", was {shown}" if cur is not None and act.value is not None else ""
        parts.append(act.text.replace("{was}", was))
    if not parts:
        return f"{r.lead} the run already has every setting the guide suggests.".strip()
    parts = parts[:1] + [p if p.startswith(("This", "`")) else p[0].lower() + p[1:] for p in parts[1:]]
    body = "; ".join(parts)
    body = (body[0].lower() if r.lead and not body.startswith("This") else body[0].upper()) + body[1:]
    return (f"{r.lead} {body}." if r.lead else f"{body}.").replace("..", ".")


@dataclass(frozen=True)
class Finding:
    """One failure mode seen in a run's metric history: what (kind: the detector or failure
    mode), where (step), the numbers (evidence) and the guide's remedy. The same class for the
    live warnings and the study report."""
    kind: str
    step: int | None
    evidence: str
    remedy: str = ""
    severity: str = "warning"   # "error" (the run is broken) or "warning"
    title: str = ""             # the guide's heading

    @property
    def mode(self) -> str:
        """The failure mode (key of REMEDIES) this finding is evidence of."""
        return MODE_OF_KIND.get(self.kind, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mode": self.mode}

    def __str__(self) -> str:
        label = REMEDIES[self.mode].label if self.mode in REMEDIES else self.kind
        return f"step {self.step}: {label}: {self.evidence}. {self.remedy}"


def finding(kind: str, step: int | None, evidence: str, *, severity: str = "warning",
            config: dict | None = None, lr: str | None = None, extra: str = "") -> Finding:
    """A Finding with the remedies table's title and remedy for `kind`'s failure mode."""
    mode = MODE_OF_KIND.get(kind, kind)
    return Finding(kind, step, evidence, (extra + " " + remedy_text(mode, config, lr=lr)).strip(), severity,
                   REMEDIES[mode].title)


def _series(history: Sequence[dict], key: str) -> list[tuple[int, float]]:
    out = []
    for h in history:
        v = h.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append((int(h.get(M.STEP, len(out))), float(v)))
    return out


def expert_collapse(train_history: Sequence[dict], *, threshold: float = 0.5) -> list[Finding]:
    out, inside = [], False
    for step, u in _series(train_history, M.EXPERT_UTILIZATION):
        if u < threshold and not inside:
            out.append(finding("expert_collapse", step, f"expert/utilization {u:.0%} < {threshold:.0%}",
                               severity="error"))
        inside = u < threshold
    return out


def _rolling(series, window, min_points, test, kind, describe):
    out, inside = [], False
    for i, (step, v) in enumerate(series):
        prev = [x for _, x in series[max(0, i - window): i] if math.isfinite(x)]
        if len(prev) < min_points:
            continue
        med = statistics.median(prev)
        hit = test(v, med)
        if hit and not inside:
            out.append(finding(kind, step, describe(v, med)))
        inside = hit
    return out


def loss_spikes(train_history: Sequence[dict], *, spike_factor: float = 1.5, window: int = 10,
                min_points: int = 5) -> list[Finding]:
    return _rolling(_series(train_history, M.TRAIN_LOSS), window, min_points,
                    lambda v, med: not math.isfinite(v) or v > spike_factor * med,
                    "loss_spike", lambda v, med: f"train/loss {v:.4g} vs recent median {med:.4g}")


def exploding_grad_norm(train_history: Sequence[dict], *, factor: float = 5.0, window: int = 10,
                        min_points: int = 5, min_norm: float = 1.0) -> list[Finding]:
    return _rolling(_series(train_history, M.TRAIN_GRAD_NORM), window, min_points,
                    lambda v, med: not math.isfinite(v) or (v > factor * med and v > min_norm),
                    "exploding_grad_norm",
                    lambda v, med: f"train/grad_norm {v:.4g} vs recent median {med:.4g}")


def overfitting(train_history: Sequence[dict], eval_history: Sequence[dict], *,
                rel_tol: float = 0.05, patience: int = 2) -> list[Finding]:
    """Eval loss above (1 + rel_tol) x its best for `patience` consecutive evaluations while
    the train loss at those steps is below the train loss at the best evaluation."""
    evals = _series(eval_history, M.EVAL_LOSS)
    train = _series(train_history, M.TRAIN_LOSS)

    def train_at(step):
        before = [v for s, v in train if s <= step]
        return before[-1] if before else None

    out, best, best_step, bad, inside = [], math.inf, None, 0, False
    for step, v in evals:
        if v < best:
            best, best_step, bad, inside = v, step, 0, False
            continue
        tr_now, tr_best = train_at(step), train_at(best_step)
        rising = v > best * (1 + rel_tol) and tr_now is not None and tr_best is not None and tr_now < tr_best
        bad = bad + 1 if rising else 0
        if bad >= patience and not inside:
            out.append(finding("overfitting", step,
                               f"eval/loss {v:.4g} up from its best {best:.4g} (step {best_step}) while "
                               f"train/loss fell {tr_best:.4g} -> {tr_now:.4g}"))
            inside = True
    return out


def diagnose(train_history: Sequence[dict], eval_history: Sequence[dict] = ()) -> list[Finding]:
    """Every detector's findings, in step order."""
    found = (expert_collapse(train_history) + loss_spikes(train_history)
             + exploding_grad_norm(train_history) + overfitting(train_history, eval_history))
    return sorted(found, key=lambda f: (f.step, f.kind))


class DiagnoseCallback:
    """Runs `diagnose` on the live histories; logs each new finding once (a warning)."""

    def __init__(self, logger: logging.Logger | None = None, config: dict | None = None):
        self.config = config          # the run's config as a nested dict: remedies skip what it already has
        self.train: list[dict] = []
        self.eval: list[dict] = []
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, int]] = set()
        self.log = logger or log

    def _check(self):
        for f in diagnose(self.train, self.eval):
            if (f.kind, f.step) not in self._seen:
                self._seen.add((f.kind, f.step))
                if self.config:
                    f = replace(f, remedy=remedy_text(f.mode, self.config))
                self.findings.append(f)
                self.log.warning("%s", f)

    def on_train_report(self, report: dict[str, Any]) -> None:
        self.train.append({k: report.get(k) for k in (M.STEP, M.TRAIN_LOSS, M.TRAIN_GRAD_NORM,
                                                       M.EXPERT_UTILIZATION)})
        self._check()

    def on_eval_report(self, report: dict[str, Any]) -> None:
        self.eval.append({k: report.get(k) for k in (M.STEP, M.EVAL_LOSS)})
        self._check()

    def close(self) -> None:
        pass
