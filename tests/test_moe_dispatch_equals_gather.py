"""Every expert dispatch path computes the gather reference's function (mlx-lm SwitchGLU),
forward and gradients, for random routing, routing that leaves experts without a token, and
a step where one expert receives every token (the bench's skewed case, at its extreme)."""

from __future__ import annotations

from vantage_core.blas import load_openblas

load_openblas()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from vantage_core.model.experts import Experts  # noqa: E402

N, D, F, E = 40, 12, 20, 4


def _routing(kind: str, k: int, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "random":
        logits = rng.normal(size=(N, E))
        inds = np.argsort(-logits, axis=1)[:, :k]
    elif kind == "empty-experts":            # experts 2 and 3 get nothing
        inds = np.stack([np.arange(N) % 2, 1 - np.arange(N) % 2][:k], 1)
    elif kind == "one-expert-all":           # expert 0 is in every token's choices
        second = 1 + np.arange(N) % (E - 1)
        inds = np.stack([np.zeros(N, dtype=int), second][:k], 1)
    else:
        raise ValueError(kind)
    raw = rng.normal(size=(N, k))
    scores = np.exp(raw) / np.exp(raw).sum(1, keepdims=True)
    return mx.array(inds.astype(np.int32)), mx.array(scores.astype(np.float32))


def _run(ex, path, x, inds, scores):
    k = inds.shape[1]
    if path == "capacity":
        ex.plain_autograd = False
        return ex.capacity(x, inds, scores, E / k)[0]
    if path == "capacity-plain-autograd":
        ex.plain_autograd = True
        try:
            return ex.capacity(x, inds, scores, E / k)[0]
        finally:
            ex.plain_autograd = False
    if path == "sorted":
        counts = mx.array(np.bincount(np.array(inds).reshape(-1), minlength=E))
        return ex.sorted_exact(x, inds, scores, counts)
    return ex.gather(x, inds, scores)


def _close(a, b, tol=3e-5):
    a, b = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max()), np.abs(a - b).max()


@pytest.mark.parametrize("path", ["capacity", "capacity-plain-autograd", "sorted"])
@pytest.mark.parametrize("routing", ["random", "empty-experts", "one-expert-all"])
@pytest.mark.parametrize("k", [1, 2])
def test_dispatch_path_equals_gather_reference(path, routing, k):
    mx.random.seed(7)
    ex = Experts(D, F, E)
    x = mx.random.normal((N, D))
    inds, scores = _routing(routing, k, seed=11)
    w = mx.random.normal((N, D))                         # a generic cotangent

    y, y_ref = _run(ex, path, x, inds, scores), _run(ex, "gather", x, inds, scores)
    _close(y, y_ref)

    def loss(params, x, scores, p):
        ex.update(params)
        return (_run(ex, p, x, inds, scores) * w).sum()

    params = ex.trainable_parameters()
    g = mx.grad(loss, argnums=(0, 1, 2))(params, x, scores, path)
    g_ref = mx.grad(loss, argnums=(0, 1, 2))(params, x, scores, "gather")
    for (name, a), (_, b) in zip(tree_flatten(g[0]), tree_flatten(g_ref[0])):
        _close(a, b)
    _close(g[1], g_ref[1])                               # d/dx
    _close(g[2], g_ref[2])                               # d/dscores: the router's gradient
    counts = np.bincount(np.array(inds).reshape(-1), minlength=E)
    gate_grad = np.array(g[0]["switch_mlp"]["gate_proj"]["weight"])
    for e in range(E):   # an expert without tokens gets exactly zero gradient, the others not
        assert (np.abs(gate_grad[e]).max() == 0.0) == (counts[e] == 0), (e, counts)
    if routing == "one-expert-all":
        assert counts[0] == N
