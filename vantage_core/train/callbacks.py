"""Callback protocol of the core trainer and the always-on JSONL sink.

`on_train_report(report)` gets the keys in `metrics.TRAIN_REPORT_KEYS` every
`logging_steps`; `on_eval_report(report)` gets `metrics.EVAL_REPORT_KEYS` every
`eval_steps`. A callback may raise to stop training (studies/ raises optuna.TrialPruned);
the exception propagates out of `train` after the trainer has flushed its sinks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Callback(Protocol):
    def on_train_report(self, report: dict[str, Any]) -> None: ...
    def on_eval_report(self, report: dict[str, Any]) -> None: ...


class BaseCallback:
    def on_train_report(self, report: dict[str, Any]) -> None:
        pass

    def on_eval_report(self, report: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class JSONLSink(BaseCallback):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.path, "a", encoding="utf-8")

    def _write(self, kind, report):
        self.f.write(json.dumps({"kind": kind, **{k: _jsonable(v) for k, v in report.items()}}) + "\n")
        self.f.flush()

    def on_train_report(self, report):
        self._write("train", report)

    def on_eval_report(self, report):
        self._write("eval", report)

    def close(self):
        self.f.close()


class HistoryRecorder(BaseCallback):
    """Keeps every report in memory (the trainer returns it in TrainResult)."""

    def __init__(self):
        self.train: list[dict] = []
        self.eval: list[dict] = []

    def on_train_report(self, report):
        self.train.append(dict(report))

    def on_eval_report(self, report):
        self.eval.append(dict(report))
