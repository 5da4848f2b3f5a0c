"""SwiGLU experts with two dispatch paths over the same stacked weights [E, out, in].

* ``capacity`` (fast path): tokens are placed into a dense [E, C, D] buffer (C from the
  capacity factor, first-choice assignments first) and every expert runs as one batched
  matmul; assignments past an expert's capacity are dropped (their residual passes through).
* ``gather`` (reference path): mlx-lm's SwitchGLU (``gather_mm``); never drops.

With capacity factor E/k every assignment fits, and both paths compute the same function
(tests/test_moe_fastpath.py checks this, forward and gradients).
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.switch_layers import SwitchGLU

from . import fastmath

from . import rng


def capacity_for(num_tokens: int, num_experts: int, k: int, factor: float) -> int:
    if factor <= 0:  # no limit: every assignment could land on one expert
        return num_tokens
    return max(1, min(num_tokens, math.ceil(factor * num_tokens * k / num_experts)))


class Experts(nn.Module):
    # True: the capacity path's dispatch/combine/SiLU through MLX's own autograd (scatter-add
    # gradients, exact sigmoid) instead of the hand-written VJPs; kept for measurement.
    plain_autograd = False

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
        slot, slot_assign, keep = _assign_slots(inds, E, C)
        dispatch, combine, act = ((_dispatch_fwd, _combine_fwd, lambda g, u: nn.silu(g) * u)
                                  if self.plain_autograd else (_dispatch, _combine, fastmath.swiglu))
        xe = dispatch(x, slot, slot_assign).reshape(E, C, D)                   # [E, C, D]
        g = xe @ m.gate_proj.weight.swapaxes(-1, -2)                            # [E, C, F]
        u = xe @ m.up_proj.weight.swapaxes(-1, -2)                              # [E, C, F]
        h = act(g, u)
        if training and dropout > 0:
            h = h * rng.bernoulli(1.0 - dropout, h.shape).astype(h.dtype) / (1.0 - dropout)
        ye = h @ m.down_proj.weight.swapaxes(-1, -2)                            # [E, C, D]
        y = combine(ye.reshape(E * C, D), scores.T.astype(ye.dtype), slot, slot_assign)  # [N, D]
        dropped = (~keep).astype(mx.float32).mean()   # exact 0 when nothing drops
        return y, dropped


def _assign_slots(inds: mx.array, E: int, C: int):
    """Slots of the dense [E, C] buffer. Assignment a = j * N + n (token n's j-th choice; all
    first choices rank before second choices). Returns slot [k, N] (E*C = dropped),
    slot_assign [E*C] (the assignment in each slot, k*N = empty) and keep [k*N]."""
    N, k = inds.shape
    eid = inds.T.reshape(-1)                                                    # [kN]
    onehot = (eid[:, None] == mx.arange(E, dtype=eid.dtype)).astype(mx.int32)   # [kN, E]
    pos = mx.take_along_axis(mx.cumsum(onehot, axis=0), eid[:, None], axis=1)[:, 0] - 1
    keep = pos < C
    slot = mx.where(keep, eid.astype(mx.int32) * C + pos, E * C)               # [kN]
    # Slots are unique, so this scatter has no conflicts (the drop slot E*C is cut off).
    slot_assign = mx.full((E * C + 1,), k * N, dtype=mx.int32).at[slot].minimum(
        mx.arange(k * N, dtype=mx.int32))[: E * C]
    return (mx.stop_gradient(slot.reshape(k, N)), mx.stop_gradient(slot_assign),
            mx.stop_gradient(keep))


def _pad_row(a: mx.array) -> mx.array:
    return mx.concatenate([a, mx.zeros((1,) + a.shape[1:], dtype=a.dtype)], axis=0)


# Dispatch and combine are gathers in both directions: their gradients are gathers too (each
# slot holds at most one assignment), never scatter-adds (atomics on the GPU).
def _dispatch_fwd(x, slot, slot_assign):
    # x [N, D] -> xe [E*C, D]: row of the token in each slot (zeros for empty slots).
    N = x.shape[0]
    kN = slot.size
    tok = mx.where(slot_assign < kN, slot_assign % N, N)
    return _pad_row(x)[tok]


_dispatch = mx.custom_function(_dispatch_fwd)


@_dispatch.vjp
def _dispatch_vjp(primals, cotangent, output):
    x, slot, slot_assign = primals
    dx = _pad_row(cotangent)[slot].sum(axis=0)                                 # [N, D]
    return dx.astype(x.dtype), mx.zeros_like(slot), mx.zeros_like(slot_assign)


def _combine_fwd(ye, scores_t, slot, slot_assign):
    # ye [E*C, D], scores_t [k, N] -> y [N, D] = sum_j scores[n, j] * ye[slot[j, n]]
    yk = _pad_row(ye)[slot]                                                     # [k, N, D]
    return (yk * scores_t[..., None]).sum(axis=0)


_combine = mx.custom_function(_combine_fwd)


@_combine.vjp
def _combine_vjp(primals, cotangent, output):
    ye, scores_t, slot, slot_assign = primals
    k, N = slot.shape
    dy = cotangent                                                              # [N, D]
    tok = mx.where(slot_assign < k * N, slot_assign % N, N)                     # [E*C]
    s_slot = _pad_row(scores_t.reshape(-1))[slot_assign]                        # [E*C] (0 if empty)
    dye = _pad_row(dy)[tok] * s_slot[:, None]                                   # [E*C, D]
    yk = _pad_row(ye)[slot]                                                     # [k, N, D]
    dscores = (yk * dy[None]).sum(axis=-1)                                      # [k, N]
    return (dye.astype(ye.dtype), dscores.astype(scores_t.dtype), mx.zeros_like(slot),
            mx.zeros_like(slot_assign))
