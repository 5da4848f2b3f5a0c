"""Property: any configuration is either refused with a clear one-line validation error
(VantageError), or builds a model that runs one real training step (compiled or not, any
precision, checkpointing, capacity or gather MoE) with a finite loss and gradient norm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vantage_core.config import config_from_dict
from vantage_core.errors import VantageError

finite = dict(allow_nan=False, allow_infinity=False)

MODEL = {
    "hidden_size": st.sampled_from([0, -8, 8, 12, 16, 32]),
    "num_layers": st.integers(-1, 2),
    "num_experts": st.integers(-1, 5),
    "num_experts_per_token": st.integers(-1, 5),
    "expert_capacity": st.one_of(st.just(0.0), st.floats(-1.0, 3.0, **finite)),
    "router_aux_loss_coef": st.floats(-0.1, 0.1, **finite),
    "router_z_loss_coef": st.floats(-0.01, 0.01, **finite),
    "expert_dropout": st.floats(-0.2, 1.2, **finite),
    "hidden_dropout": st.floats(0.0, 0.5, **finite),
    "num_attention_heads": st.sampled_from([0, 1, 2, 3, 4]),
    "num_key_value_heads": st.sampled_from([0, 1, 2, 4]),
    "intermediate_size": st.integers(-1, 48),
    "vocab_size": st.sampled_from([0, 40, 64, 130]),
    "max_position_embeddings": st.sampled_from([8, 64, 128]),
    "tie_word_embeddings": st.sampled_from([True, False, "yes"]),
    "moe_impl": st.sampled_from(["capacity", "gather", "dense"]),
}
TRAINING = {
    "batch_size": st.integers(-1, 3),
    "gradient_accumulation_steps": st.integers(0, 2),
    "learning_rate": st.one_of(st.floats(-1e-3, 1e-2, **finite), st.just("fast"), st.just("3e-4")),
    "warmup_steps": st.integers(-2, 4),
    "max_grad_norm": st.floats(-1.0, 2.0, **finite),
    "mixed_precision": st.sampled_from(["fp32", "bf16", "fp16", "fp8"]),
    "gradient_checkpointing": st.booleans(),
    "activation_checkpointing": st.booleans(),
    "max_seq_length": st.sampled_from([0, 8, 16, 48, 200]),
    "compile": st.booleans(),
    "num_train_steps": st.integers(-1, 10),
}
SECTIONS = st.fixed_dictionaries({}, optional={
    "model": st.fixed_dictionaries({}, optional=MODEL),
    "training": st.fixed_dictionaries({}, optional=TRAINING),
    "eval": st.fixed_dictionaries({}, optional={"max_new_tokens": st.integers(-1, 8)}),
    "data": st.fixed_dictionaries({}, optional={"validation_fraction": st.floats(-0.5, 1.5, **finite)}),
})


@st.composite
def near_valid(draw):
    """Shapes that fit together (so that many examples reach the training step), other keys random."""
    heads = draw(st.sampled_from([1, 2, 4]))
    experts = draw(st.integers(1, 4))
    model = {"hidden_size": heads * draw(st.sampled_from([2, 4, 8])), "num_attention_heads": heads,
             "num_key_value_heads": draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0])),
             "num_layers": draw(st.integers(1, 2)), "num_experts": experts,
             "num_experts_per_token": draw(st.integers(1, experts)),
             "expert_capacity": draw(st.one_of(st.just(0.0), st.floats(0.01, 3.0, **finite))),
             "intermediate_size": draw(st.integers(1, 32)), "vocab_size": draw(st.sampled_from([40, 130])),
             "max_position_embeddings": 64, "moe_impl": draw(st.sampled_from(["capacity", "gather"])),
             "tie_word_embeddings": draw(st.booleans()),
             "expert_dropout": draw(st.floats(0.0, 0.9, **finite)), "hidden_dropout": draw(st.floats(0.0, 0.5, **finite))}
    training = {"batch_size": draw(st.integers(1, 3)), "gradient_accumulation_steps": draw(st.integers(1, 2)),
                "mixed_precision": draw(st.sampled_from(["fp32", "bf16", "fp16"])),
                "gradient_checkpointing": draw(st.booleans()), "activation_checkpointing": draw(st.booleans()),
                "max_seq_length": draw(st.sampled_from([8, 16, 48])), "compile": draw(st.booleans()),
                "learning_rate": draw(st.floats(1e-5, 1e-1, **finite)),
                "max_grad_norm": draw(st.floats(0.0, 2.0, **finite))}
    extra = draw(st.fixed_dictionaries({}, optional={k: MODEL[k] for k in ("expert_capacity", "num_experts_per_token",
                                                                             "hidden_size", "vocab_size")}))
    model.update(extra)                    # sometimes one key breaks the fit again
    return {"model": model, "training": training}


# now and then an unknown key or a wrong-shaped section
CONFIGS = st.one_of(near_valid(), near_valid(), SECTIONS,
                    SECTIONS.map(lambda d: {**d, "model": {**d.get("model", {}), "hiden_size": 8}}),
                    st.just({"model": [1, 2]}), st.just({"optimizer": {}}))


def one_training_step(cfg) -> tuple[float, float]:
    import mlx.core as mx

    from vantage_core.data.prepare import Encoded
    from vantage_core.train.optim import make_optimizer
    from vantage_core.model import build_model
    from vantage_core.train.trainer import make_batch, make_train_step

    t = cfg.training
    rng = np.random.RandomState(0)
    seqs = []
    for _ in range(t.batch_size):
        n = int(rng.randint(6, 40))
        seqs.append(Encoded(ids=[int(x) for x in rng.randint(1, cfg.model.vocab_size, size=n)], sql_start=n // 2))
    model = build_model(cfg)
    optimizer = make_optimizer(t)
    micro, apply, step = make_train_step(model, optimizer, cfg)
    inp, pos, tgt, w, _ = make_batch(seqs, t.max_seq_length, 0)
    loss, aux, norm = step(inp, pos, tgt, w)
    mx.eval(loss, norm, model.parameters())
    return float(loss.item()), float(norm.item())


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(CONFIGS)
def test_random_config_is_refused_clearly_or_trains_one_step(data):
    try:
        cfg = config_from_dict(data, source="<random>")
    except VantageError as e:
        msg = str(e)
        assert msg and "\n" not in msg and msg.startswith("<random>"), msg
        return
    try:
        loss, norm = one_training_step(cfg)
    except VantageError as e:              # refused when the model is built (device-dependent limits)
        assert "\n" not in str(e) and "model.moe_impl" in str(e), str(e)
        return
    assert math.isfinite(loss) and loss >= 0, (data, loss)
    assert math.isfinite(norm), (data, norm)


@pytest.mark.parametrize("capacity,ok", [(0.0, True), (0.01, True), (-0.5, False)])
def test_expert_capacity_zero_means_no_limit_negative_is_an_error(capacity, ok):
    data = {"model": {"hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1, "num_experts": 2,
                      "num_experts_per_token": 1, "expert_capacity": capacity, "intermediate_size": 16,
                      "vocab_size": 40, "max_position_embeddings": 64},
            "training": {"batch_size": 2, "max_seq_length": 32, "compile": False}}
    if not ok:
        with pytest.raises(VantageError, match="expert_capacity"):
            config_from_dict(data)
        return
    loss, norm = one_training_step(config_from_dict(data))
    assert math.isfinite(loss) and math.isfinite(norm)
