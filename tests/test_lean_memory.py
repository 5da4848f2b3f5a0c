"""Lean-memory keys (training.optimizer adafactor, optimizer_state_dtype, master_weights,
gradient_checkpointing, gradient accumulation): each lowers the predicted AND the measured
(mx.get_peak_memory, CPU) peak, training with it lowers the loss, predicted and measured
agree within MEASURED_TOLERANCE, bad values are one-line errors naming the YAML path."""

import gc
import math

import mlx.core as mx
import numpy as np
import pytest

from trainer_fixtures import batch, tiny_cfg, tiny_data
from vantage_core.config import load_config
from vantage_core.errors import ConfigError
from vantage_core.model import build_model
from vantage_core.model.memory import adafactor_state_elements, predict_memory
from vantage_core.train.optim import LeanAdafactor, LeanAdamW, make_optimizer, stochastic_round
from vantage_core.train.trainer import make_train_step, padded_length, to_master_dtype, train

# Measured peak / predicted peak on the CPU, for every configuration below (docs/training.md).
MEASURED_TOLERANCE = (0.7, 1.3)

# States dominate here (7.7M parameters, batch 2): what the optimizer keys change.
MID = {"hidden_size": 256, "intermediate_size": 512, "num_experts": 8, "num_layers": 2}
# Activations dominate here (tiny model, 8 x 384 tokens): what checkpointing changes.
ACTS = {"num_layers": 4}


def _cfg(model, **training):
    return tiny_cfg(training={"batch_size": 2, "learning_rate": 3e-3, "warmup_steps": 0,
                              "lr_scheduler_type": "constant", **training}, model=model)


def measure(cfg, steps=3, seed=0):
    """(measured peak bytes, losses) of `steps` optimizer steps on one fixed batch, through
    the trainer's own step (make_train_step), the model in its training.master_weights dtype.
    The peak is counted above what the process held before (arrays other tests keep alive)."""
    gc.collect()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.random.seed(seed)
    model = build_model(cfg)
    to_master_dtype(model, cfg)
    model.train()
    opt = make_optimizer(cfg.training)
    _, _, step = make_train_step(model, opt, cfg)
    inp, pos, tgt, w, _ = batch(cfg.training.batch_size)
    mx.clear_cache()
    mx.reset_peak_memory()
    losses = []
    for _ in range(steps):
        loss, _, norm = step(inp, pos, tgt, w)
        mx.eval(model.parameters(), opt.state, loss, norm)
        losses.append(loss.item())
    return int(mx.get_peak_memory()) - base, losses, int(inp.shape[1])


@pytest.mark.parametrize("key,value,fragment", [
    ("optimizer", "sgd", "training.optimizer: 'sgd' is not one of adamw, adafactor"),
    ("optimizer_state_dtype", "float16", "training.optimizer_state_dtype: 'float16' is not one of"),
    ("master_weights", "int8", "training.master_weights: 'int8' is not one of"),
])
def test_bad_value_is_one_line_error_naming_the_yaml_path(tmp_path, key, value, fragment):
    f = tmp_path / "c.yaml"
    f.write_text(f"training:\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert msg.startswith(str(f)) and fragment in msg and "\n" not in msg


def test_bf16_master_weights_need_bf16_compute(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("training:\n  master_weights: bfloat16\n  mixed_precision: fp32\n")
    with pytest.raises(ConfigError, match=r"c.yaml: training.master_weights: bfloat16 needs training.mixed_precision: bf16"):
        load_config(f)


def test_optimizer_classes_and_state_dtypes():
    t = load_config("tiny", {"training": {"optimizer": "adafactor", "learning_rate": 1e-3,
                                          "warmup_steps": 0, "lr_scheduler_type": "constant"}}).training
    opt = make_optimizer(t)
    assert isinstance(opt, LeanAdafactor)
    # The configured rate is the step size: no relative step, no RMS parameter scaling.
    assert (opt.relative_step, opt.scale_parameter, opt.beta_1) == (False, False, None)
    assert float(opt.learning_rate) == pytest.approx(1e-3)
    t2 = load_config("tiny", {"training": {"optimizer_state_dtype": "bfloat16"}}).training
    opt2 = make_optimizer(t2)
    assert isinstance(opt2, LeanAdamW) and opt2.bias_correction
    p = {"w": mx.zeros((4, 3))}
    opt2.init(p)
    assert opt2.state["w"]["m"].dtype == mx.bfloat16 and opt2.state["w"]["v"].dtype == mx.bfloat16
    opt.init(p)
    assert opt.state["w"]["exp_avg_sq_row"].shape == (4,) and opt.state["w"]["exp_avg_sq_col"].shape == (3,)


def test_bf16_state_adamw_matches_float32_adamw_first_steps():
    # Same math in float32; only the stored moments round to bf16 (8 mantissa bits).
    t32 = load_config("tiny", {"training": {"warmup_steps": 0, "lr_scheduler_type": "constant"}}).training
    t16 = load_config("tiny", {"training": {"warmup_steps": 0, "lr_scheduler_type": "constant",
                                            "optimizer_state_dtype": "bfloat16"}}).training
    mx.random.seed(1)
    w0, gs = mx.random.normal((64, 32)), [mx.random.normal((64, 32)) for _ in range(5)]
    out = {}
    for name, t in (("f32", t32), ("bf16", t16)):
        opt, p = make_optimizer(t), {"w": w0}
        for g in gs:
            p = opt.apply_gradients({"w": g}, p)
        out[name] = np.array(p["w"] - w0)
    step = np.abs(out["f32"]).mean()
    assert step > 1e-4                                   # the weights moved
    assert np.abs(out["f32"] - out["bf16"]).max() < 0.05 * np.abs(out["f32"]).max()


def test_stochastic_rounding_is_unbiased_where_nearest_loses_the_update():
    x = mx.full((200_000,), 1.0 + 2.0 ** -11, dtype=mx.float32)   # 1/16 of a bf16 ulp above 1
    assert float(x.astype(mx.bfloat16).astype(mx.float32).max()) == 1.0   # nearest: update gone
    mx.random.seed(0)
    r = stochastic_round(x).astype(mx.float32)
    vals = set(np.unique(np.array(r)).tolist())
    assert vals == {1.0, 1.0 + 2.0 ** -7}                 # the two bf16 neighbours only
    up = float((np.array(r, dtype=np.float64) > 1.0).mean())   # float64: a float32 sum would round
    assert up == pytest.approx(1 / 16, abs=0.003)            # E[round(x)] = x


def _loss_curve(master, stochastic, steps=40, lr=2e-5):
    cfg = tiny_cfg(training={"batch_size": 4, "learning_rate": lr, "warmup_steps": 0, "weight_decay": 0.0,
                             "lr_scheduler_type": "constant", "mixed_precision": "bf16",
                             "master_weights": master, "max_grad_norm": 0.0})
    mx.random.seed(0)
    model = build_model(cfg)
    to_master_dtype(model, cfg)
    model.train()
    opt = make_optimizer(cfg.training, stochastic_rounding=stochastic)
    _, _, step = make_train_step(model, opt, cfg)
    inp, pos, tgt, w, _ = batch(4)
    out = []
    for _ in range(steps):
        loss, _, _ = step(inp, pos, tgt, w)
        mx.eval(model.parameters(), opt.state, loss)
        out.append(loss.item())
    return np.array(out)


def test_bf16_weights_with_stochastic_rounding_track_float32_masters():
    # A small learning rate (Adam steps ~2e-5, under half a bf16 ulp of most weights): with
    # round-to-nearest bf16 weights most updates vanish; stochastic rounding keeps them.
    f32 = _loss_curve("float32", True)
    sr = _loss_curve("bfloat16", True)
    rn = _loss_curve("bfloat16", False)
    d32, dsr, drn = f32[0] - f32[-1], sr[0] - sr[-1], rn[0] - rn[-1]
    assert d32 > 0.05                                     # float32 masters learn
    assert abs(dsr - d32) < 0.25 * d32                    # stochastic rounding tracks them (stated: 25%)
    assert np.abs(sr - f32).max() < 0.25 * d32 + 0.02
    assert drn < 0.5 * d32                                # nearest rounding loses most of the descent


def test_adafactor_state_count_matches_the_model():
    cfg = _cfg(MID, optimizer="adafactor")
    model = build_model(cfg)
    opt = make_optimizer(cfg.training)
    opt.init(model.trainable_parameters())
    from mlx.utils import tree_flatten
    n = sum(v.size for k, v in tree_flatten(opt.state) if isinstance(v, mx.array) and k.count(".") > 0
            and k.split(".")[-1].startswith("exp_avg"))
    assert n == adafactor_state_elements(cfg.model)


BASE = {"MID": (MID, {}), "ACTS": (ACTS, {"batch_size": 8})}
LEAN = [
    ("MID", {"optimizer_state_dtype": "bfloat16"}),
    ("MID", {"optimizer": "adafactor"}),
    ("MID", {"master_weights": "bfloat16", "mixed_precision": "bf16"}),
    ("ACTS", {"gradient_checkpointing": True}),
]


_BASE_RUNS: dict = {}


def _base_run(which):
    if which not in _BASE_RUNS:
        model, tr = BASE[which]
        cfg = _cfg(model, **tr)
        _BASE_RUNS[which] = (cfg, *measure(cfg))
    return _BASE_RUNS[which]


@pytest.mark.parametrize("which,key", LEAN, ids=lambda x: x if isinstance(x, str) else ",".join(x))
def test_key_lowers_predicted_and_measured_peak_and_trains(which, key):
    base_cfg, base_peak, base_losses, L = _base_run(which)
    cfg = _cfg(BASE[which][0], **{**BASE[which][1], **key})
    peak, losses, L2 = measure(cfg)
    assert L2 == L
    p_base, p = predict_memory(base_cfg, seq_length=L)["peak"], predict_memory(cfg, seq_length=L)["peak"]
    print(f"{which} {key}: predicted {p_base / 2**20:.1f} -> {p / 2**20:.1f} MiB, "
          f"measured {base_peak / 2**20:.1f} -> {peak / 2**20:.1f} MiB")
    assert p < 0.95 * p_base                              # predicted saving
    assert peak < 0.95 * base_peak                        # measured saving
    lo, hi = MEASURED_TOLERANCE
    assert lo < peak / p < hi and lo < base_peak / p_base < hi
    assert losses[-1] < losses[0] - 0.1                   # it trains
    assert all(math.isfinite(x) for x in losses)


def test_accumulation_keeps_one_micro_batch_and_the_predictor_counts_its_buffer():
    # batch 8 in one pass vs 2 x 4 accumulated: a quarter of the activations, one extra gradient buffer.
    d = tiny_data()
    runs = {}
    for name, tr in (("one", {"batch_size": 8}), ("accum", {"batch_size": 2, "gradient_accumulation_steps": 4})):
        cfg = _cfg(ACTS, num_train_steps=3, logging_steps=1, **tr)
        gc.collect()
        base = mx.get_active_memory()        # what other tests keep alive in this process
        r = train(cfg, d, check_memory=False)
        seq = padded_length(d, cfg.training.max_seq_length, cfg.training.pad_to_multiple_of)
        runs[name] = (predict_memory(cfg, seq_length=seq), r, r.peak_memory_bytes - base)
    (p1, r1, m1), (pa, ra, ma) = runs["one"], runs["accum"]
    print(f"batch 8: predicted {p1['peak'] / 2**20:.1f} MiB, measured {m1 / 2**20:.1f} MiB; "
          f"2 x 4 accumulated: predicted {pa['peak'] / 2**20:.1f} MiB, measured {ma / 2**20:.1f} MiB")
    assert pa["gradients"] == 2 * p1["gradients"]
    assert pa["activations"] < p1["activations"] / 3
    assert pa["peak"] < p1["peak"] and ma < m1
    lo, hi = MEASURED_TOLERANCE
    for p, _, m in runs.values():
        assert lo < m / p["peak"] < hi
    assert ra.train_history[-1]["train/loss"] < ra.train_history[0]["train/loss"]


@pytest.mark.parametrize("key,part", [
    ({"optimizer_state_dtype": "bfloat16"}, "optimizer"),
    ({"optimizer": "adafactor"}, "optimizer"),
    ({"master_weights": "bfloat16"}, "weights"),
    ({"master_weights": "bfloat16"}, "gradients"),
])
def test_medium_prediction_per_key(key, part):
    base = load_config("medium")
    lean = load_config("medium", {"training": key})
    assert predict_memory(lean)[part] < 0.55 * predict_memory(base)[part]


def test_medium_lean_config_in_the_guides_band():
    p = predict_memory(load_config("configs/medium_lean.yaml"))
    assert 95 * 2**30 <= p["peak"] <= 110 * 2**30
    assert predict_memory(load_config("medium"))["peak"] > 2 * 95 * 2**30


def test_train_refusal_names_the_lean_keys_with_their_peaks():
    from vantage_core.errors import MemoryBudgetError
    from vantage_core.model.memory import check_fits
    cfg = load_config("medium")
    with pytest.raises(MemoryBudgetError) as e:
        check_fits(cfg, limit_bytes=128 * 2**30)
    ada = predict_memory(cfg.replace(training={"optimizer": "adafactor"}))["peak"]
    assert f"training.optimizer=adafactor ({ada / 2**30:.1f} GiB)" in str(e.value)
    assert "training.optimizer_state_dtype=bfloat16" in str(e.value) and "\n" not in str(e.value)
