"""Config loading gives what the pre-redesign `_coerce`/`validate` gave: the same one-line error
(the first one, when a config has several) or the same resolved values, for 600 recorded
configurations (tests/fixtures/config_cases.json, by pre_redesign/make_config_cases.py)."""

import json
from pathlib import Path

import pytest

from vantage_core.config import config_from_dict
from vantage_core.errors import ConfigError

CASES = json.loads((Path(__file__).parent / "fixtures" / "config_cases.json").read_text())["cases"]
# Choices added after the recording (issue 16's lean-memory keys): the recorded error lists the
# allowed values of its day, so it gains the new ones at its end and changes in nothing else.
ADDED_CHOICES = {"training.optimizer": ", adafactor"}


def _expected(error: str) -> str:
    for key, added in ADDED_CHOICES.items():
        if f": {key}: " in error and " is not one of " in error:
            return error + added
    return error


@pytest.mark.parametrize("start", range(0, len(CASES), 100))
def test_recorded_configs_give_the_same_error_or_values(start):
    for case in CASES[start: start + 100]:
        if "error" in case:
            with pytest.raises(ConfigError) as e:
                config_from_dict(case["input"], "run.yaml")
            assert str(e.value) == _expected(case["error"]), case["input"]
        else:
            cfg = config_from_dict(case["input"], "run.yaml").to_dict()
            got = {s: {k: cfg[s][k] for k in kv} for s, kv in case["input"].items()}
            assert got == case["resolved"], case["input"]
            assert all(type(got[s][k]) is type(v) for s, kv in case["resolved"].items() for k, v in kv.items())
