"""Every search space with optuna.trial.FixedTrial: stable names, the config keys they set,
the baseline round trip, the guide's default ranges, and one-line errors for bad ranges."""

import math

import optuna
import pytest

from search_spaces import PARAM_KEYS, SPACES, get_space
from search_spaces.base import GUIDE_LR, LR_MARGIN
from vantage_core.config import load_config
from vantage_core.errors import SearchSpaceError

# The parameter names each space suggests: studies in storage depend on them never changing.
STABLE = {
    "lr": ["learning_rate"],
    "warmup": ["warmup_steps"],
    "aux-loss": ["router_aux_loss_coef"],
    "capacity": ["expert_capacity"],
    "joint": ["learning_rate", "warmup_steps", "router_aux_loss_coef", "expert_capacity"],
    "z-loss": ["router_z_loss_coef"],
    "weight-decay": ["weight_decay"],
    "expert-dropout": ["expert_dropout"],
    "batch-size": ["batch_size"],
    "top-k": ["num_experts_per_token"],
    "upcycle": ["upcycle_router_init_std", "upcycle_expert_noise", "upcycle_drop_fraction"],
    "finetune": ["learning_rate", "warmup_steps"],
    "pretrained": ["learning_rate", "warmup_steps", "router_aux_loss_coef", "expert_capacity",
                   "upcycle_router_init_std", "upcycle_expert_noise", "upcycle_drop_fraction"],
}


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny")


def _inside(r):
    """A value strictly inside a range (geometric middle for log ranges)."""
    if r.kind == "categorical":
        return r.choices[-1]
    if r.kind == "int":
        return int(r.high)
    return math.sqrt(r.low * r.high) if r.log else (r.low + r.high) / 2


def test_every_space_is_covered():
    assert set(SPACES) == set(STABLE)
    for required in ("lr", "warmup", "aux-loss", "capacity", "joint", "z-loss", "weight-decay",
                     "expert-dropout", "batch-size"):
        assert required in SPACES


@pytest.mark.parametrize("name", sorted(STABLE))
def test_space_names_keys_and_values(name, tiny):
    space = get_space(name)
    ranges = space.ranges(tiny)
    assert sorted(ranges) == sorted(STABLE[name])
    params = {p: _inside(r) for p, r in ranges.items()}
    cfg = space.suggest(optuna.trial.FixedTrial(params), tiny)
    d, base = cfg.to_dict(), tiny.to_dict()
    for p, v in params.items():
        sec, key = PARAM_KEYS[p]
        assert d[sec][key] == pytest.approx(v), (p, d[sec][key], v)
    assert space.searched_keys(tiny) == [".".join(PARAM_KEYS[p]) for p in ranges]
    # nothing else changed
    for sec in base:
        for key in base[sec]:
            if f"{sec}.{key}" not in space.searched_keys(tiny):
                assert d[sec][key] == base[sec][key], f"{sec}.{key}"


@pytest.mark.parametrize("name", sorted(STABLE))
def test_baseline_params_of_round_trip(name, tiny):
    space = get_space(name)
    params = space.params_of(tiny)
    assert sorted(params) == sorted(STABLE[name])
    cfg = space.suggest(optuna.trial.FixedTrial(params), tiny)
    assert cfg.to_dict() == tiny.to_dict()
    assert space.params_of(cfg) == params


@pytest.mark.parametrize("size,model", [("small", "small"), ("medium", "medium"), ("large", "large")])
def test_lr_defaults_follow_the_guide_per_size(size, model):
    cfg = load_config(model)
    r = get_space("lr").ranges(cfg)["learning_rate"]
    lo, hi = GUIDE_LR[size]
    assert r.log and r.low == pytest.approx(lo / LR_MARGIN) and r.high == pytest.approx(hi * LR_MARGIN)
    assert {"small": (3e-4, 5e-4), "medium": (1e-4, 3e-4), "large": (5e-5, 1e-4)}[size] == (lo, hi)


def test_other_default_ranges(tiny):
    n = tiny.training.num_train_steps
    w = get_space("warmup").ranges(tiny)["warmup_steps"]
    assert w.kind == "int" and w.low <= 0.01 * n and w.high >= 0.02 * n   # the guide's 1-2%, widened
    a = get_space("aux-loss").ranges(tiny)["router_aux_loss_coef"]
    assert (a.low, a.high, a.log) == (0.001, 0.05, True)
    c = get_space("capacity").ranges(tiny)["expert_capacity"]
    assert (c.low, c.high, c.log) == (1.0, 2.0, False)
    b = get_space("batch-size").ranges(load_config("medium"))["batch_size"]
    acc = load_config("medium").training.gradient_accumulation_steps
    assert {x * acc for x in b.choices} >= {32, 64}                     # effective batch 32-64


def test_yaml_override(tiny):
    r = get_space("joint").ranges(tiny, {"learning_rate": {"low": 1e-4, "high": 1e-2}, "expert_capacity": {"high": 3}})
    assert (r["learning_rate"].low, r["learning_rate"].high, r["learning_rate"].log) == (1e-4, 1e-2, True)
    assert (r["expert_capacity"].low, r["expert_capacity"].high) == (1.0, 3.0)


@pytest.mark.parametrize("over,needle", [
    ({"learning_rate": {"low": 1e-2, "high": 1e-3}}, "low=0.01 > high=0.001"),
    ({"learning_rate": {"low": 0.0}}, "log-scaled but low=0.0 <= 0"),
    ({"learning_rat": {"low": 1e-3}}, "unknown parameter 'learning_rat'"),
    ({"learning_rate": {"lo": 1e-3}}, "unknown field 'lo'"),
    ({"learning_rate": {"low": "abc"}}, "must be numbers"),
    ({"learning_rate": 3}, "must be a mapping"),
])
def test_invalid_ranges_one_line(over, needle, tiny):
    with pytest.raises(SearchSpaceError) as e:
        get_space("lr").ranges(tiny, over)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_space():
    with pytest.raises(SearchSpaceError, match="unknown sweep 'learning-rate'"):
        get_space("learning-rate")


def test_invalid_ranges_file_fails_before_any_trial(tmp_path):
    from conftest import run_cli_subprocess
    bad = tmp_path / "ranges.yaml"
    bad.write_text("learning_rate: {low: 0.01, high: 0.001}\n")
    r = run_cli_subprocess(["studies", "lr", "--model", "tiny", "--ranges", str(bad)], cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "low=0.01 > high=0.001" in lines[0], r.stderr
    assert not (tmp_path / "vantage_studies.db").exists()
