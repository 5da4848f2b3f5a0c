"""Dropout masks that a checkpointed (recomputed) region draws identically both times.

Inside `fixed_key(key)`, `bernoulli` derives its keys from `key` instead of MLX's global
random state, so the backward-pass recomputation of an `mx.checkpoint` region sees the same
masks as the forward pass (with the global state it would draw new ones and the gradient
would belong to a different mask)."""

from __future__ import annotations

from contextlib import contextmanager

import mlx.core as mx

_KEYS: list = []


def bernoulli(p: float, shape) -> mx.array:
    if _KEYS:
        k, nxt = mx.random.split(_KEYS[-1])
        _KEYS[-1] = nxt
        return mx.random.bernoulli(p, shape, key=k)
    return mx.random.bernoulli(p, shape)


def new_key() -> mx.array:
    """A key drawn from the global random state."""
    return mx.random.randint(0, 2**31 - 1, (2,)).astype(mx.uint32)


@contextmanager
def fixed_key(key: mx.array):
    _KEYS.append(key)
    try:
        yield
    finally:
        _KEYS.pop()
