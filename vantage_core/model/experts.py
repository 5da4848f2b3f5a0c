"""SwiGLU experts with two dispatch paths over the same stacked weights [E, out, in].

* ``capacity`` (fast path): tokens are placed into a dense [E, C, D] buffer (C from the
  capacity factor, first-choice assignments first) and every expert runs as one batched
  matmul; assignments past an expert's capacity are dropped (their residual passes through).
* ``gather`` (reference path): mlx-lm's SwitchGLU (``gather_mm``); never drops.

With capacity factor E/k every assignment fits, and both paths compute the same function
(tests/test_model.py checks this).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.switch_layers import SwitchGLU


def capacity_for(num_tokens: int, num_experts: int, k: int, factor: float) -> int:
    if factor <= 0:  # no limit: every assignment could land on one expert
        return num_tokens
    return max(1, min(num_tokens, math.ceil(factor * num_tokens * k / num_experts)))


class Experts(nn.Module):
    def __init__(self, hidden: int, intermediate: int, num_experts: int):
        super().__init__()
        # Attribute name kept from mlx-lm so weights load into its Mixtral unchanged.
        self.switch_mlp = SwitchGLU(hidden, intermediate, num_experts)

    def gather(self, x: mx.array, inds: mx.array, scores: mx.array) -> mx.array:
        # x: [N, D], inds/scores: [N, k]
        y = self.switch_mlp(x, inds)                      # [N, k, D]
        return (y * scores[..., None]).sum(axis=-2)

    def capacity(self, x: mx.array, inds: mx.array, scores: mx.array, factor: float,
                 dropout: float = 0.0, training: bool = False):
        N, D = x.shape
        k = inds.shape[-1]
        m = self.switch_mlp
        E = m.gate_proj.weight.shape[0]
        C = capacity_for(N, E, k, factor)
        # Assignment a = j * N + n: all first choices get priority over second choices.
        eid = inds.T.reshape(-1)                                        # [kN]
        onehot = (eid[:, None] == mx.arange(E)).astype(mx.int32)        # [kN, E]
        pos = mx.take_along_axis(mx.cumsum(onehot, axis=0), eid[:, None], axis=1)[:, 0] - 1
        keep = pos < C                                                  # [kN]
        slot = mx.where(keep, eid * C + pos, E * C)                     # E*C = drop slot
        token = mx.arange(k * N, dtype=mx.int32) % N
        # slot -> token (N = the zero row for empty slots); min() keeps it deterministic.
        slot_token = mx.full((E * C + 1,), N, dtype=mx.int32).at[slot].minimum(token)[: E * C]
        slot, slot_token = mx.stop_gradient(slot), mx.stop_gradient(slot_token)
        x_pad = mx.concatenate([x, mx.zeros((1, D), dtype=x.dtype)], axis=0)   # [N+1, D]
        xe = x_pad[slot_token].reshape(E, C, D)                                 # [E, C, D]
        g = xe @ m.gate_proj.weight.swapaxes(-1, -2)                            # [E, C, F]
        u = xe @ m.up_proj.weight.swapaxes(-1, -2)                              # [E, C, F]
        h = nn.silu(g) * u
        if training and dropout > 0:
            h = h * mx.random.bernoulli(1.0 - dropout, h.shape).astype(h.dtype) / (1.0 - dropout)
        ye = h @ m.down_proj.weight.swapaxes(-1, -2)                            # [E, C, D]
        ye = mx.concatenate([ye.reshape(E * C, D), mx.zeros((1, D), dtype=ye.dtype)], axis=0)
        y = ye[slot].reshape(k, N, D)                                           # [k, N, D]
        y = (y * scores.T[..., None]).sum(axis=0)                               # [N, D]
        dropped = 1.0 - keep.astype(mx.float32).mean()
        return y, dropped
