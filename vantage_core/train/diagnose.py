"""The training guide's troubleshooting signals, as pure functions over metric histories.

`diagnose(train_history, eval_history) -> list[Finding]` runs every detector; each detector
takes the histories the trainer reports (lists of dicts keyed by the names in
`metrics.py`, each with a "step") and returns one Finding per episode (the step where the
symptom started). `DiagnoseCallback` runs them live and logs each new finding once, as a
warning carrying the guide's remedy; `reports/` reuses the same functions after the fact.

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
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from . import metrics as M

log = logging.getLogger("vantage.diagnose")

REMEDIES = {
    "expert_collapse": ("Expert collapse: increase model.router_aux_loss_coef (e.g. 0.02), add "
                        "model.expert_dropout: 0.1, or raise model.expert_capacity (e.g. 1.5)"),
    "loss_spike": ("Loss spike: reduce training.learning_rate 2-5x, lower warmup_steps, set "
                   "training.max_grad_norm: 0.5, add model.router_z_loss_coef: 0.001"),
    "exploding_grad_norm": ("Exploding gradient norm: reduce training.learning_rate 2-5x, set "
                            "training.max_grad_norm: 0.5, add model.router_z_loss_coef: 0.001"),
    "overfitting": ("Overfitting: increase model.hidden_dropout/expert_dropout (e.g. 0.15), "
                    "training.weight_decay (e.g. 0.2), data.augmentation_prob (e.g. 0.5), or stop "
                    "early on the validation metric (checkpoint-best)"),
}


@dataclass(frozen=True)
class Finding:
    kind: str
    step: int
    evidence: str
    remedy: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"step {self.step}: {self.evidence}. {self.remedy}"


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
            out.append(Finding("expert_collapse", step,
                               f"expert/utilization {u:.0%} < {threshold:.0%}", REMEDIES["expert_collapse"]))
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
            out.append(Finding(kind, step, describe(v, med), REMEDIES[kind]))
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
            out.append(Finding("overfitting", step,
                               f"eval/loss {v:.4g} up from its best {best:.4g} (step {best_step}) while "
                               f"train/loss fell {tr_best:.4g} -> {tr_now:.4g}", REMEDIES["overfitting"]))
            inside = True
    return out


def diagnose(train_history: Sequence[dict], eval_history: Sequence[dict] = ()) -> list[Finding]:
    """Every detector's findings, in step order."""
    found = (expert_collapse(train_history) + loss_spikes(train_history)
             + exploding_grad_norm(train_history) + overfitting(train_history, eval_history))
    return sorted(found, key=lambda f: (f.step, f.kind))


class DiagnoseCallback:
    """Runs `diagnose` on the live histories; logs each new finding once (a warning)."""

    def __init__(self, logger: logging.Logger | None = None):
        self.train: list[dict] = []
        self.eval: list[dict] = []
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, int]] = set()
        self.log = logger or log

    def _check(self):
        for f in diagnose(self.train, self.eval):
            if (f.kind, f.step) not in self._seen:
                self._seen.add((f.kind, f.step))
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
