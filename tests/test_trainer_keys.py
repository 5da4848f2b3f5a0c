"""Each model/training key has its observable effect (tiny model, direct forward/backward)."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from trainer_fixtures import batch, max_abs_diff, tiny_cfg, tiny_data
from vantage_core.model import MoETransformer
from vantage_core.train.optim import lr_at
from vantage_core.model import build_model
from vantage_core.train.trainer import (compute_precision, loss_fn, make_batch, make_train_step,
                                        value_and_grad_mp)
from vantage_core.train.optim import make_optimizer


def _model(cfg, seed=0):
    mx.random.seed(seed)
    m = build_model(cfg)
    m.train()
    return m


def test_capacity_1_drops_tokens_and_2_does_not():
    inp, *_ = batch(8)
    drops = {}
    for cap in (1.0, 2.0):
        cfg = tiny_cfg(model={"expert_capacity": cap})
        m = _model(cfg)
        _, st = m(inp)
        drops[cap] = float(st["dropped"])
    # 4 experts, top-2: factor 2.0 = E/k gives every expert room for all its assignments.
    assert drops[1.0] > 0.01
    assert drops[2.0] == 0.0


def test_aux_loss_coefficient_changes_loss_and_router_gradient():
    inp, pos, tgt, w, _ = batch(4)
    res = {}
    for coef in (0.0, 0.01):
        cfg = tiny_cfg(model={"router_aux_loss_coef": coef, "router_z_loss_coef": 0.0})
        m = _model(cfg)
        (loss, (ce, aux, *_)), g = nn.value_and_grad(m, lambda mm, *a: loss_fn(mm, cfg, *a))(m, inp, pos, tgt, w)
        res[coef] = (float(loss), float(ce), float(aux), g["model"]["layers"][0]["block_sparse_moe"]["gate"]["weight"])
    assert res[0.0][1] == pytest.approx(res[0.01][1])            # same LM loss
    assert res[0.01][0] - res[0.0][0] == pytest.approx(0.01 * res[0.01][2], rel=1e-4)
    assert res[0.01][2] >= 1.0 - 1e-4                              # Switch aux loss >= 1
    assert float(mx.abs(res[0.01][3] - res[0.0][3]).max()) > 1e-7   # router gradient changes


def _equal_target_batches(n_total):
    """n_total training sequences with the same number of SQL target tokens (so the mean
    over 4 micro-batches equals the mean over the whole batch)."""
    d = tiny_data()
    by_len = {}
    for i, s in enumerate(d.train):
        by_len.setdefault(len(s.ids) - max(0, s.sql_start - 1), []).append(i)
    idx = max(by_len.values(), key=len)[:n_total]
    assert len(idx) == n_total
    return [d.train[i] for i in idx]


def test_accumulation_4x2_equals_batch_8():
    # No capacity limit and no aux/z loss: those depend on the batch composition by design.
    cfg8 = tiny_cfg(model={"expert_capacity": 0.0, "router_aux_loss_coef": 0.0, "router_z_loss_coef": 0.0},
                    training={"batch_size": 8, "compile": False})
    cfg2 = cfg8.replace(training={"batch_size": 2, "gradient_accumulation_steps": 4})
    seqs = _equal_target_batches(8)
    pad = tiny_data().tokenizer.pad_id
    results = []
    for cfg, chunks in ((cfg8, [seqs]), (cfg2, [seqs[i:i + 2] for i in range(0, 8, 2)])):
        m = _model(cfg)
        opt = make_optimizer(cfg.training)
        micro, apply, _ = make_train_step(m, opt, cfg)
        acc = None
        for ch in chunks:
            inp, pos, tgt, w, _ = make_batch(ch, 384, pad)
            _, _, g = micro(inp, pos, tgt, w, mx.array(1.0 / len(chunks)))
            acc = g if acc is None else tree_map(mx.add, acc, g)
        mx.eval(acc)
        apply(acc)
        mx.eval(m.parameters())
        results.append((acc, m.parameters()))
    assert max_abs_diff(results[0][0], results[1][0]) < 1e-5      # same gradient
    # Same update: AdamW's first step is lr * g / (|g| + eps) per element, so elements whose
    # gradient is ~eps amplify float rounding; 1% of lr is far below any real difference.
    assert max_abs_diff(results[0][1], results[1][1]) < 0.01 * cfg8.training.learning_rate


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_lr_schedules(kind):
    cfg = tiny_cfg(training={"lr_scheduler_type": kind, "learning_rate": 1e-3, "warmup_steps": 10,
                             "num_train_steps": 110, "min_lr_ratio": 0.1})
    t = cfg.training
    lr = [float(lr_at(s, t)) for s in range(110)]
    assert lr[0] == pytest.approx(1e-4)                  # linear warmup from peak/warmup
    assert lr[9] == pytest.approx(1e-3)                  # warmup peak
    assert max(lr) == pytest.approx(1e-3)
    if kind == "constant":
        assert lr[-1] == pytest.approx(1e-3)
    else:
        assert float(lr_at(110, t)) == pytest.approx(1e-4)   # min_lr_ratio floor
        assert min(lr) >= 1e-4 - 1e-12
        mid = lr[60]                                         # half way through the decay
        assert mid == pytest.approx(5.5e-4, rel=1e-3)        # cosine and linear agree at 1/2
        q = lr[35]                                           # a quarter of the way
        expect = 1e-4 + 9e-4 * (0.5 * (1 + math.cos(math.pi * 0.25)) if kind == "cosine" else 0.75)
        assert q == pytest.approx(expect, rel=1e-3)


def _peak_and_grads(cfg, inp, pos, tgt, w, seed=0):
    m = _model(cfg, seed)
    mx.eval(m.parameters())
    fn = value_and_grad_mp(m, cfg)
    mx.synchronize() if hasattr(mx, "synchronize") else None
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    (loss, _), g = fn(m, inp, pos, tgt, w)
    mx.eval(loss, g)
    return mx.get_peak_memory() - base, float(loss), g


def test_gradient_checkpointing_lowers_peak_memory_at_equal_loss():
    d = tiny_data()
    inp, pos, tgt, w, _ = make_batch(d.train[:16], 384, d.tokenizer.pad_id)
    peaks = {}
    for name, tr in (("none", {}), ("layers", {"gradient_checkpointing": True}),
                     ("moe", {"activation_checkpointing": True})):
        peaks[name] = _peak_and_grads(tiny_cfg(training=tr), inp, pos, tgt, w)
    p0, l0, g0 = peaks["none"]
    for name in ("layers", "moe"):
        p, l, g = peaks[name]
        assert l == pytest.approx(l0, rel=1e-6)
        assert max_abs_diff(g, g0) < 1e-5
        assert p < 0.93 * p0, (name, p, p0)   # measured: 104 -> 92 (layers), 90 (moe) MiB
    print({k: v[0] / 2**20 for k, v in peaks.items()})


def test_checkpointing_recomputes_the_same_dropout_masks():
    d = tiny_data()
    inp, pos, tgt, w, _ = make_batch(d.train[:4], 384, d.tokenizer.pad_id)
    drop = {"hidden_dropout": 0.2, "expert_dropout": 0.2}
    import vantage_core.model.block as B

    for tr in ({"gradient_checkpointing": True}, {"activation_checkpointing": True}):
        cfg = tiny_cfg(model=drop, training=tr)
        mx.random.seed(3)
        _, l1, g1 = _peak_and_grads(cfg, inp, pos, tgt, w)
        real = B.mx.checkpoint
        try:
            B.mx.checkpoint = lambda f: f       # same computation without the recomputation
            mx.random.seed(3)
            _, l2, g2 = _peak_and_grads(cfg, inp, pos, tgt, w)
        finally:
            B.mx.checkpoint = real
        assert l1 == pytest.approx(l2, rel=1e-6)
        assert max_abs_diff(g1, g2) < 1e-5


@pytest.mark.parametrize("key", ["expert_dropout", "hidden_dropout"])
def test_dropout_changes_training_outputs_not_evaluation(key):
    inp, *_ = batch(4)
    cfg0 = tiny_cfg()
    cfg = tiny_cfg(model={key: 0.3})
    m0, m = _model(cfg0), _model(cfg)
    m.update(m0.parameters())
    mx.random.seed(1)
    train_a = m(inp)[0]
    train_b = m(inp)[0]
    train_ref = m0(inp)[0]
    assert float(mx.abs(train_a - train_b).max()) > 1e-4       # masks differ call to call
    assert float(mx.abs(train_a - train_ref).max()) > 1e-4
    m.eval(), m0.eval()
    assert float(mx.abs(m(inp)[0] - m0(inp)[0]).max()) == 0.0   # evaluation: no dropout


@pytest.mark.parametrize("prec,dtype", [("bf16", mx.bfloat16), ("fp16", mx.float16), ("fp32", mx.float32)])
def test_mixed_precision_changes_compute_dtype(prec, dtype):
    inp, pos, tgt, w, _ = batch(4)
    cfg = tiny_cfg(training={"mixed_precision": prec})
    m = _model(cfg)
    with compute_precision(m, cfg):
        logits, _ = m(inp, positions=pos)
        h = m.model.embed_tokens(inp)
    assert logits.dtype == dtype and h.dtype == dtype
    # Master weights, gradients (hence AdamW state) stay fp32.
    assert all(p.dtype == mx.float32 for _, p in tree_flatten(m.parameters()))
    (loss, _), g = value_and_grad_mp(m, cfg)(m, inp, pos, tgt, w)
    assert all(x.dtype == mx.float32 for _, x in tree_flatten(g))
    ref_cfg = tiny_cfg()
    (ref, _), _ = value_and_grad_mp(m, ref_cfg)(m, inp, pos, tgt, w)
    assert float(loss) == pytest.approx(float(ref), rel=2e-2)
    if prec != "fp32":
        assert float(loss) != float(ref)
