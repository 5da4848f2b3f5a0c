"""The MoE fast path (dense [E, C, D] capacity dispatch, hand-written gradients, fast exp on
CPU) against the reference path (mlx-lm SwitchGLU / gather_mm) on the same weights."""

from __future__ import annotations

from vantage_core.blas import load_openblas

load_openblas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from vantage_core.model import fastmath  # noqa: E402
from vantage_core.model.experts import Experts, capacity_for  # noqa: E402

N, D, F, E = 48, 16, 24, 4


def _setup(k, seed=0):
    mx.random.seed(seed)
    ex = Experts(D, F, E)
    x = mx.random.normal((N, D))
    logits = mx.random.normal((N, E))
    inds = mx.argpartition(-logits, kth=k - 1, axis=-1)[:, :k]
    scores = mx.softmax(mx.take_along_axis(logits, inds, axis=-1), axis=-1)
    return ex, x, inds, scores


def _close(a, b, tol=2e-5):
    a, b = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max()), np.abs(a - b).max()


@pytest.mark.parametrize("k", [1, 2])
def test_no_drop_capacity_equals_gather_forward_and_gradients(k):
    ex, x, inds, scores = _setup(k)
    factor = E / k                       # C = N: nothing can be dropped
    y_fast, dropped = ex.capacity(x, inds, scores, factor)
    y_ref = ex.gather(x, inds, scores)
    assert float(dropped.item()) == 0.0
    _close(y_fast, y_ref)

    w = mx.random.normal((N, D))         # a generic cotangent

    def loss(params, x, scores, fast):
        ex.update(params)
        y = ex.capacity(x, inds, scores, factor)[0] if fast else ex.gather(x, inds, scores)
        return (y * w).sum()

    params = ex.trainable_parameters()
    g_fast = mx.grad(loss, argnums=(0, 1, 2))(params, x, scores, True)
    g_ref = mx.grad(loss, argnums=(0, 1, 2))(params, x, scores, False)
    for (name, a), (_, b) in zip(tree_flatten(g_fast[0]), tree_flatten(g_ref[0])):
        _close(a, b)
    _close(g_fast[1], g_ref[1])          # d/dx through dispatch and combine
    _close(g_fast[2], g_ref[2])          # d/dscores (the router's gradient)

    # Compiled (as in the trainer) gives the same.
    gc = mx.compile(mx.grad(lambda x: (ex.capacity(x, inds, scores, factor)[0] * w).sum()))(x)
    _close(gc, g_ref[1])


def test_capacity_drops_on_crafted_routing():
    # Every token's first choice is expert 0: with factor 1.0 expert 0 takes C = N*k/E
    # assignments and drops the rest; with 2.0 (= E/k) nothing is dropped.
    k = 2
    ex, x, _, _ = _setup(k)
    inds = mx.array(np.stack([np.zeros(N, np.int32), 1 + np.arange(N, dtype=np.int32) % (E - 1)], 1))
    scores = mx.full((N, k), 0.5)
    C = capacity_for(N, E, k, 1.0)
    assert C == N * k // E
    y1, d1 = ex.capacity(x, inds, scores, 1.0)
    assert abs(float(d1.item()) - (N - C) / (k * N)) < 1e-6
    # The first C tokens keep their first choice; the others lose it (priority by token order).
    y_ref = ex.gather(x, inds, scores)
    second_only = ex.gather(x, inds[:, 1:], mx.full((N, 1), 0.5))
    _close(y1[:C], y_ref[:C])
    _close(y1[C:], second_only[C:])
    y2, d2 = ex.capacity(x, inds, scores, 2.0)
    assert float(d2.item()) == 0.0
    _close(y2, y_ref)


def test_fastmath_matches_mlx():
    mx.random.seed(3)
    x = mx.random.uniform(-87.0, 88.0, (20000,))
    ref = np.exp(np.array(x, dtype=np.float64))
    assert (np.abs(np.array(fastmath.exp_poly(x), dtype=np.float64) - ref) / ref).max() < 2e-7
    assert float(fastmath.exp_poly(mx.array([-1e4])).item()) == 0.0

    logits, t = mx.random.normal((32, 50)) * 4, mx.random.randint(0, 50, (32,))
    f_fast = lambda z: (fastmath.cross_entropy(z, t) * mx.arange(32)).sum()  # noqa: E731
    f_ref = lambda z: (nn.losses.cross_entropy(z, t, reduction="none") * mx.arange(32)).sum()  # noqa: E731
    _close(f_fast(logits), f_ref(logits), 1e-6)
    _close(mx.grad(f_fast)(logits), mx.grad(f_ref)(logits), 1e-6)

    g, u, w = mx.random.normal((8, 12)) * 3, mx.random.normal((8, 12)), mx.random.normal((8, 12))
    h_fast = lambda g, u: (fastmath.swiglu(g, u) * w).sum()  # noqa: E731
    h_ref = lambda g, u: (nn.silu(g) * u * w).sum()  # noqa: E731
    for a, b in zip(mx.grad(h_fast, argnums=(0, 1))(g, u), mx.grad(h_ref, argnums=(0, 1))(g, u)):
        _close(a, b, 1e-5)

    s = mx.random.normal((3, 5, 7)) * 3
    s_fast = lambda s: (fastmath.softmax_lastdim(s) * w[:3, :7, None].reshape(3, 1, 7)).sum()  # noqa: E731
    s_ref = lambda s: (mx.softmax(s, axis=-1) * w[:3, :7, None].reshape(3, 1, 7)).sum()  # noqa: E731
    _close(mx.grad(s_fast)(s), mx.grad(s_ref)(s), 1e-6)


def test_gpu_form_matches_reference(monkeypatch):
    # The GPU branch (mx.sigmoid in the SwiGLU VJP, MLX's fused CE) computes the same function
    # and gradients; exercised here on the CPU.
    k = 2
    ex, x, inds, scores = _setup(k, seed=5)
    w = mx.random.normal((N, D))

    def loss(params, x):
        ex.update(params)
        return (ex.capacity(x, inds, scores, E / k)[0] * w).sum()

    params = ex.trainable_parameters()
    ref = mx.grad(loss, argnums=(0, 1))(params, x)
    monkeypatch.setattr(fastmath, "on_cpu", lambda: False)
    gpu = mx.grad(loss, argnums=(0, 1))(params, x)
    for (_, a), (_, b) in zip(tree_flatten(gpu[0]), tree_flatten(ref[0])):
        _close(a, b)
    _close(gpu[1], ref[1])
    logits, t = mx.random.normal((16, 40)), mx.random.randint(0, 40, (16,))
    _close(mx.grad(lambda z: fastmath.cross_entropy(z, t).sum())(logits),
           mx.grad(lambda z: nn.losses.cross_entropy(z, t).sum())(logits), 1e-6)


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("skewed", [False, True])
def test_sorted_exact_path_equals_gather_forward_and_gradients(k, skewed):
    """The sorted per-expert path (exact sizes, no capacity) is the gather reference's function,
    also when an expert gets no token at all (skewed: experts 0 and 1 only)."""
    ex, x, inds, scores = _setup(k, seed=3)
    if skewed:
        inds = mx.array(np.stack([np.arange(N) % 2, 1 - np.arange(N) % 2][:k], 1).astype(np.int32))
    w = mx.random.normal((N, D))
    E = ex.switch_mlp.gate_proj.weight.shape[0]
    counts = mx.array(np.bincount(np.array(inds).reshape(-1), minlength=E))   # as the router reports

    def loss(params, x, scores, fast):
        ex.update(params)
        y = ex.sorted_exact(x, inds, scores, counts) if fast else ex.gather(x, inds, scores)
        return (y * w).sum()

    _close(ex.sorted_exact(x, inds, scores, counts), ex.gather(x, inds, scores))
    params = ex.trainable_parameters()
    g_fast = mx.grad(loss, argnums=(0, 1, 2))(params, x, scores, True)
    g_ref = mx.grad(loss, argnums=(0, 1, 2))(params, x, scores, False)
    for (name, a), (_, b) in zip(tree_flatten(g_fast[0]), tree_flatten(g_ref[0])):
        _close(a, b)
    _close(g_fast[1], g_ref[1])
    _close(g_fast[2], g_ref[2])
    if skewed:   # experts 2 and 3 saw no token: exactly zero gradient
        assert float(mx.abs(g_fast[0]["switch_mlp"]["gate_proj"]["weight"][2:]).max()) == 0.0


def test_sorted_training_steps_match_no_drop_capacity():
    """Three optimizer steps of the tiny model: moe_impl sorted (uncompiled MoE, exact sizes)
    follows the same loss curve as the compiled capacity path at a no-drop factor E/k."""
    from trainer_fixtures import tiny_cfg, tiny_data
    from vantage_core.model import MoETransformer
    from vantage_core.train.optim import make_optimizer
    from vantage_core.train.trainer import make_batch, make_train_step
    d = tiny_data()
    inp, pos, tgt, w, _ = make_batch(d.train[:8], 128, d.tokenizer.pad_id)
    curves = {}
    for impl in ("capacity", "sorted"):
        cfg = tiny_cfg(model={"moe_impl": impl, "expert_capacity": 2.0, "hidden_dropout": 0.0,
                              "expert_dropout": 0.0}, training={"batch_size": 8})
        mx.random.seed(0)
        model = MoETransformer(cfg.model)
        if impl == "capacity":
            weights = tree_flatten(model.parameters())
        else:
            model.load_weights(weights)
        model.train()
        opt = make_optimizer(cfg.training)
        _, _, step = make_train_step(model, opt, cfg)
        losses = []
        for _ in range(3):
            loss, _, _ = step(inp, pos, tgt, w)
            mx.eval(loss, model.parameters(), opt.state)
            losses.append(float(loss.item()))
        curves[impl] = losses
    assert curves["capacity"][2] < curves["capacity"][0]      # it trains
    np.testing.assert_allclose(curves["sorted"], curves["capacity"], rtol=1e-4)
