"""The learning-rate schedule gives the value the pre-redesign code gave at every step
(tests/fixtures/lr_schedules.json, written by tests/fixtures/pre_redesign/make_fixtures.py)."""

import json
from pathlib import Path

import mlx.core as mx
import pytest

from vantage_core.config import load_config
from vantage_core.train.optim import lr_at, make_optimizer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "lr_schedules.json").read_text())["schedules"]
# float32 arithmetic in another order (mlx.optimizers' formulas): each value is the recorded
# one to within 2 float32 ulps of the peak rate (measured: at most 1.5e-7 x peak; about 70% bit-equal).
ULPS_OF_PEAK = 2 * 1.1920929e-07


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_schedule_value_at_every_step_is_unchanged(name):
    rec = FIXTURE[name]
    t = load_config(None, {"training": rec["training"]} if rec["training"] else None).training
    got = [float(lr_at(s, t).item()) for s in rec["steps"]]
    assert got == pytest.approx(rec["lr"], rel=0, abs=ULPS_OF_PEAK * t.learning_rate)


@pytest.mark.parametrize("name", sorted(FIXTURE))
def test_optimizer_uses_the_same_rate_at_each_update(name):
    rec = FIXTURE[name]
    t = load_config(None, {"training": rec["training"]} if rec["training"] else None).training
    opt = make_optimizer(t)
    p = {"w": mx.zeros((2,))}
    opt.init(p)
    used = []
    for _ in rec["optimizer_lr_before_each_update"]:
        used.append(float(opt.learning_rate.item()))
        p = opt.apply_gradients({"w": mx.ones((2,))}, p)
        mx.eval(p, opt.state)
    assert used == pytest.approx(rec["optimizer_lr_before_each_update"], rel=0, abs=ULPS_OF_PEAK * t.learning_rate)
