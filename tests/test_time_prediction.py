"""The pre-launch time prediction: FLOPs scale with the work a config asks for, and every
sampled trial stores it next to the memory prediction."""

import optuna
import pytest

from vantage_core.config import load_config
from vantage_core.model.memory import predict_time


def test_prediction_scales_with_steps_batch_and_model():
    base = load_config("tiny")
    p = predict_time(base, flops=1e12)
    assert p["total_s"] == pytest.approx(p["step_s"] * base.training.num_train_steps)
    twice_steps = predict_time(base.replace(training={"num_train_steps": 2 * base.training.num_train_steps}), flops=1e12)
    assert twice_steps["total_s"] == pytest.approx(2 * p["total_s"])
    twice_batch = predict_time(base.replace(training={"batch_size": 2 * base.training.batch_size}), flops=1e12)
    assert twice_batch["step_s"] == pytest.approx(2 * p["step_s"])
    small = predict_time(load_config("small"), flops=1e12)
    assert small["flops_per_step"] > 1000 * p["flops_per_step"]
    assert predict_time(base, flops=2e12)["step_s"] == pytest.approx(p["step_s"] / 2)


def test_feasibility_check_stores_time_and_memory_predictions():
    from studies.feasibility import check_trial
    trial = optuna.trial.FixedTrial({})
    cfg = load_config("tiny")
    check_trial(trial, cfg)
    assert trial.user_attrs["predicted_peak_memory_bytes"] > 0
    assert trial.user_attrs["predicted_time_s"] > 0
