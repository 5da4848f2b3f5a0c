"""What a worker needs to join a study with only --storage and --study-name: one dataclass,
written once by `vantage-sweep SWEEP` as the study's user attribute ``vantage`` and read back
by `vantage-sweep worker`, each process of ``--n-jobs N``, the subprocess runner's children and
`vantage-sweep promote`.

The stored form is the dataclass's fields as a JSON mapping (the same keys studies have always
carried, so older studies load; a key a study lacks takes the field's default, a key this code
does not know is ignored)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from search_spaces import get_space
from vantage_core.config import config_from_dict
from vantage_core.errors import VantageError

from .objective import TrialSpec

SETTINGS_ATTR = "vantage"


@dataclass
class SweepSettings:
    sweep: str
    model: str
    config_yaml: str                       # the resolved base config (every trial starts from it)
    objectives: list[str] = field(default_factory=lambda: ["exact_match"])
    base_config: dict[str, Any] | None = None   # base config minus the searched keys (fingerprint diffs)
    ranges: dict[str, Any] | None = None
    steps_per_trial: int | None = None
    data_source: str | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = 0
    runs_dir: str | None = None
    keep_checkpoints: bool = False
    tie_break: bool = True
    objective_fn: str | None = None
    max_memory: int | None = None
    heartbeat_interval: int | None = 60
    grace_period: int | None = 180

    # ---------------------------------------------------------------- storage
    def to_attr(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_attr(cls, data: dict[str, Any]) -> "SweepSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, study: optuna.Study) -> None:
        study.set_user_attr(SETTINGS_ATTR, self.to_attr())

    @classmethod
    def load(cls, study: optuna.Study) -> "SweepSettings":
        s = study.user_attrs.get(SETTINGS_ATTR)
        if not s:
            raise VantageError(f"study '{study.study_name}' has no Vantage settings (was it created by "
                               "vantage-sweep?); start it with `vantage-sweep SWEEP --study-name ...` first")
        return cls.from_attr(s)

    # ---------------------------------------------------------------- use
    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def steps(self) -> int:
        """Training steps per trial (the pruners' max resource)."""
        return self.steps_per_trial or self.spec().base.training.num_train_steps

    def spec(self, *, out: str | Path | None = None) -> TrialSpec:
        """The trial spec these settings describe; `out` replaces the folder for trial runs."""
        base = config_from_dict(yaml.safe_load(self.config_yaml), source="study settings")
        runs = Path(out) if out else Path(self.runs_dir or "sweeps/trials")
        return TrialSpec(space=get_space(self.sweep), base=base, objectives=list(self.objectives),
                         ranges=self.ranges, steps_per_trial=self.steps_per_trial, runs_dir=runs,
                         keep_checkpoints=bool(self.keep_checkpoints), tie_break=bool(self.tie_break),
                         objective_fn=self.objective_fn, max_memory=self.max_memory)


def load_settings(study: optuna.Study) -> SweepSettings:
    return SweepSettings.load(study)


def save_settings(study: optuna.Study, settings: SweepSettings) -> None:
    settings.save(study)
