"""Diagnosis on constructed metric histories: each guide failure mode is found, with evidence and
the guide's remedy; a healthy run yields nothing."""

import math

import pytest

from reports.diagnosis import diagnose_history

N = 20  # train reports, every 10 steps


def train_hist(loss=None, grad=None, util=None):
    rows = []
    for i in range(N):
        step = 10 * (i + 1)
        rows.append({"step": step,
                     "train/loss": loss(i) if loss else 2.0 + 5.6 * math.exp(-i / 5),
                     "train/grad_norm": grad(i) if grad else 1.2 + 0.05 * math.sin(i),
                     "train/aux_loss": 1.05,
                     "expert/utilization": util(i) if util else 0.95 + 0.03 * math.sin(i),
                     "moe/dropped_fraction": 0.04, "train/tokens_per_sec": 4000.0})
    return rows


def eval_hist(loss=None):
    return [{"step": 40 * (j + 1), "eval/loss": loss(j) if loss else 2.4 + 5.0 * math.exp(-4 * (j + 1) / 5),
             "eval/exact_match": 0.1 * j, "eval/valid_sql": 0.5, "eval/num_examples": 64} for j in range(5)]


def modes(findings):
    return sorted(f.mode for f in findings)


def only(findings, mode):
    assert modes(findings) == [mode], [(f.mode, f.evidence) for f in findings]
    f = findings[0]
    assert f.evidence and f.remedy and f.title
    return f


def test_healthy_run_has_no_findings():
    assert diagnose_history(train_hist(), eval_hist()) == []
    assert diagnose_history(train_hist(), eval_hist(), reference_eval_loss=2.4, total_steps=200,
                            params={"learning_rate": 3e-3}) == []
    assert diagnose_history([], []) == []
    assert diagnose_history(None, None) == []


def test_expert_collapse():
    f = only(diagnose_history(train_hist(util=lambda i: 0.95 if i < 8 else 0.3), eval_hist()), "expert_collapse")
    assert "30%" in f.evidence and f.step == 90
    assert "router_aux_loss_coef: 0.02" in f.remedy and "expert_dropout: 0.1" in f.remedy
    assert "expert_capacity: 1.5" in f.remedy


def test_low_utilization_below_guide_band():
    f = only(diagnose_history(train_hist(util=lambda i: 0.95 if i < 8 else 0.65), eval_hist()), "low_utilization")
    assert "80-100%" in f.evidence


def test_loss_spike():
    base = lambda i: 2.0 + 5.6 * math.exp(-i / 5)  # noqa: E731
    f = only(diagnose_history(train_hist(loss=lambda i: base(i) * (2.5 if i == 12 else 1.0)), eval_hist(),
                              params={"learning_rate": 0.01}), "loss_spike")
    assert f.step == 130
    assert "max_grad_norm: 0.5" in f.remedy and "router_z_loss_coef: 0.001" in f.remedy
    assert "0.002-0.005" in f.remedy  # the trial's own lr divided by 5..2


@pytest.mark.parametrize("where", ["train", "eval", "failure"])
def test_nan_loss(where):
    th = train_hist(loss=(lambda i: float("nan") if i == 15 else 3.0 - 0.05 * i) if where == "train" else None)
    eh = eval_hist(loss=(lambda j: float("nan") if j == 4 else 3.0 - 0.1 * j) if where == "eval" else None)
    reason = ("training diverged at step 157: loss is not finite (reduce learning_rate 2-5x, ...)"
              if where == "failure" else None)
    fs = diagnose_history(th, eh, failure_reason=reason)
    assert "nan_loss" in modes(fs)
    f = next(f for f in fs if f.mode == "nan_loss")
    assert f.severity == "error" and "Reduce the learning rate 2-5x" in f.remedy


def test_exploding_gradients():
    fs = diagnose_history(train_hist(grad=lambda i: 1.2 if i < 10 else 1.2 * 3 ** (i - 9)), eval_hist())
    assert "exploding_gradients" in modes(fs)
    f = next(f for f in fs if f.mode == "exploding_gradients")
    assert "train/grad_norm" in f.evidence and "max_grad_norm: 0.5" in f.remedy
    fs = diagnose_history(train_hist(), eval_hist(),
                          failure_reason="training diverged at step 33: gradient norm is not finite (...)")
    assert modes(fs) == ["exploding_gradients"] and fs[0].step == 33


def test_overfitting():
    # eval loss bottoms out at the 2nd evaluation and then climbs while train loss keeps falling
    f = only(diagnose_history(train_hist(), eval_hist(loss=lambda j: [4.0, 3.0, 3.3, 3.6, 3.9][j])), "overfitting")
    assert "eval/loss" in f.evidence and "train/loss" in f.evidence
    assert "weight_decay: 0.2" in f.remedy and "hidden_dropout: 0.15" in f.remedy


def test_underfitting():
    fs = diagnose_history(train_hist(loss=lambda i: 7.6 - 0.02 * i), eval_hist(loss=lambda j: 7.5 - 0.02 * j),
                          reference_eval_loss=2.5, params={"learning_rate": 1e-4})
    f = only(fs, "underfitting")
    assert "train/loss" in f.evidence and "2.5" in f.evidence
    assert "Train longer" in f.remedy or "train longer" in f.remedy
    assert "increase the learning rate" in f.remedy and "0.0002-0.0005" in f.remedy
    # the study's best trial itself is not "high" relative to the study
    assert diagnose_history(train_hist(loss=lambda i: 7.6 - 0.02 * i), eval_hist(loss=lambda j: 7.5),
                            reference_eval_loss=7.5) == []


def test_out_of_memory_and_infeasible():
    f = only(diagnose_history([], [], failure_reason="RuntimeError: [metal::malloc] Out of memory"), "out_of_memory")
    assert "batch_size" in f.remedy and "gradient_checkpointing: true" in f.remedy and "bf16" in f.remedy
    f = only(diagnose_history([], [], infeasible_reason="predicted peak memory 9.1 GiB > available 8.0 GiB"),
             "out_of_memory")
    assert "infeasible before launch" in f.evidence


def test_histories_from_json_tolerate_odd_rows():
    th = train_hist() + [{"step": 999}, "junk", {"step": None, "train/loss": 3.0}, {"train/loss": None}]
    assert diagnose_history(th, eval_hist()) == []
