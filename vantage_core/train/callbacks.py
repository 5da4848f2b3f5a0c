"""Callback protocol of the core trainer and the always-on JSONL sink.

`on_train_report(report)` gets the keys in `metrics.TRAIN_REPORT_KEYS` every
`logging_steps`; `on_eval_report(report)` gets `metrics.EVAL_REPORT_KEYS` every
`eval_steps`. A callback may raise to stop training (studies/ raises optuna.TrialPruned);
the exception propagates out of `train` after the trainer has flushed its sinks.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigError


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


def _scalars(report: dict[str, Any]):
    for k, v in report.items():
        if k == "step" or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            yield k, float(v)


class TensorBoardSink(BaseCallback):
    """TensorBoard event files (tensorboardX) under `logdir` (the trainer's `<output>/logs`):
    every numeric metric as a scalar under its guide name, tokens per expert as a histogram."""

    def __init__(self, logdir: str | Path):
        try:   # imported when a sink is made: a run without TensorBoard never loads it
            from tensorboardX import SummaryWriter
        except ImportError:  # pragma: no cover - a declared dependency
            raise ConfigError("TensorBoard logging needs tensorboardX (pip install tensorboardX)") from None
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(logdir=str(self.logdir), flush_secs=5)

    def _write(self, report):
        step = int(report.get("step", 0))
        for k, v in _scalars(report):
            self.writer.add_scalar(k, v, step)
        tpe = report.get("expert/tokens_per_expert")
        if isinstance(tpe, (list, tuple)) and tpe:
            self.writer.add_histogram("expert/tokens_per_expert", np.repeat(np.arange(len(tpe)), tpe), step)

    def on_train_report(self, report):
        self._write(report)

    def on_eval_report(self, report):
        self._write(report)

    def close(self):
        self.writer.flush()
        self.writer.close()


class WandbSink(BaseCallback):
    """Weights & Biases run (imported lazily; `WANDB_MODE=offline` works with no network)."""

    def __init__(self, project: str, run_name: str | None = None, *, config: dict | None = None,
                 dir: str | Path | None = None):
        try:   # an optional extra, heavy to import
            import wandb
        except ImportError:
            raise ConfigError("--wandb_project needs wandb (pip install 'vantage[wandb]')") from None
        kw = {"project": project, "name": run_name, "config": config or {}, "reinit": True}
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
            kw["dir"] = str(dir)
        self.run = wandb.init(**kw)

    def _log(self, report):
        data = dict(_scalars(report))
        tpe = report.get("expert/tokens_per_expert")
        if isinstance(tpe, (list, tuple)):
            for i, c in enumerate(tpe):
                data[f"expert/tokens_per_expert/{i}"] = c
        self.run.log(data, step=int(report.get("step", 0)))

    def on_train_report(self, report):
        self._log(report)

    def on_eval_report(self, report):
        self._log(report)

    def close(self):
        self.run.finish()


class ProgressBar(BaseCallback):
    """Rich progress bar with loss, learning rate and tokens/s; off when stderr is not a TTY
    (or `enabled=False`, e.g. inside sweeps)."""

    def __init__(self, total_steps: int, *, start_step: int = 0, enabled: bool | None = None,
                 console=None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.progress = None
        if not self.enabled:
            return
        # rich is loaded only for a live bar (sweep trials run with it off)
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), transient=False, console=console)
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, info="")
        self.progress.start()

    def on_train_report(self, report):
        if self.progress is None:
            return
        info = (f"loss {report.get('train/loss', float('nan')):.4f}  "
                f"lr {report.get('train/learning_rate', float('nan')):.2e}  "
                f"{report.get('train/tokens_per_sec', 0.0):,.0f} tok/s")
        self.progress.update(self.task, completed=int(report.get("step", 0)), info=info)

    def close(self):
        if self.progress is not None:
            self.progress.stop()
