"""bench/moe_profile.py's experiment, causal attention with the fused forward and a chunked,
recomputing backward, has the gradients of `mx.fast.scaled_dot_product_attention`, so its
timing row measures the same function."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.moe_profile import causal_attention_chunked_backward  # noqa: E402


@pytest.mark.parametrize("B,H,KV,L,hd,chunk", [
    (2, 4, 2, 70, 8, 16),     # GQA, ragged last chunk
    (1, 2, 2, 33, 4, 33),     # one chunk, no GQA
    (1, 6, 2, 64, 8, 7),      # chunk not dividing L, 3 query heads per KV head
    (1, 2, 1, 1, 8, 4),       # a single position
])
def test_chunked_backward_matches_fused_attention(B, H, KV, L, hd, chunk):
    mx.random.seed(0)
    q, k, v = (mx.random.normal(s) for s in ((B, H, L, hd), (B, KV, L, hd), (B, KV, L, hd)))
    w = mx.random.normal((B, H, L, hd))

    def ref(q, k, v):
        return (mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask="causal") * w).sum()

    def new(q, k, v):
        return (causal_attention_chunked_backward(q, k, v, 0.3, chunk) * w).sum()

    assert float(ref(q, k, v)) == pytest.approx(float(new(q, k, v)), rel=1e-6)
    for a, b in zip(mx.grad(new, argnums=(0, 1, 2))(q, k, v), mx.grad(ref, argnums=(0, 1, 2))(q, k, v)):
        a, b = np.array(a), np.array(b)
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max())


def test_chunked_backward_is_causal():
    """A change to the last position's key/value moves no earlier output, and its gradient
    reaches only the last query row."""
    mx.random.seed(1)
    q, k, v = (mx.random.normal((1, 2, 9, 4)) for _ in range(3))

    def last_row_loss(q, k, v):
        return causal_attention_chunked_backward(q, k, v, 0.5, 4)[:, :, :-1].sum()

    dq, dk, dv = mx.grad(last_row_loss, argnums=(0, 1, 2))(q, k, v)
    assert float(mx.abs(dk[:, :, -1]).max()) == 0.0 and float(mx.abs(dv[:, :, -1]).max()) == 0.0
    assert float(mx.abs(dq[:, :, :-1]).max()) > 0.0
