"""SwiGLU experts with two dispatch paths over the same stacked weights [E, out, in].

* ``capacity`` (fast path): tokens are placed into a dense [E, C, D] buffer (C from the
  capacity factor, first-choice assignments first) and every expert runs as one batched
  matmul; assignments past an expert's capacity are dropped (their residual passes through).
* ``gather`` (reference path): mlx-lm's SwitchGLU (``gather_mm``); never drops.
* ``sorted`` (exact path): assignments sorted by expert, then one matmul per expert on
  exactly its own rows (sizes read back from the device once per layer, as PyTorch MoE
  loops do); never drops and computes no empty slots, but its shapes change every step, so
  the training step is not wrapped in mx.compile.

With capacity factor E/k every assignment fits, and both paths compute the same function
(tests/test_moe_fastpath.py checks this, forward and gradients).
"""

from __future__ import annotations

import itertools
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


    def sorted_exact(self, x: mx.array, inds: mx.array, scores: mx.array, counts: mx.array,
                     dropout: float = 0.0, training: bool = False) -> mx.array:
        N, D = x.shape
        k = inds.shape[-1]
        m = self.switch_mlp
        E = m.gate_proj.weight.shape[0]
        flat = mx.stop_gradient(inds.reshape(-1))                               # [Nk], a = n*k + j
        order = mx.argsort(flat).astype(mx.int32)                               # [Nk] sorted by expert
        inv = mx.argsort(order).astype(mx.int32)                                # [Nk]
        sizes = counts.astype(mx.int32).tolist()    # the router's [E] counts; host sync (one per layer)
        xs = _permute_in(x, order, inv)                                         # [Nk, D]
        cuts = list(itertools.accumulate(sizes))[:-1]
        parts = mx.split(xs, cuts, axis=0) if cuts else [xs]
        wg = mx.split(m.gate_proj.weight, E, axis=0)                            # E x [1, F, D]
        wu = mx.split(m.up_proj.weight, E, axis=0)
        wd = mx.split(m.down_proj.weight, E, axis=0)                            # E x [1, D, F]
        ys = []
        for e, xe in enumerate(parts):                                          # xe: [n_e, D]
            if sizes[e] == 0:
                continue
            h = fastmath.swiglu(xe @ wg[e][0].T, xe @ wu[e][0].T)               # [n_e, F]
            if training and dropout > 0:
                h = h * rng.bernoulli(1.0 - dropout, h.shape).astype(h.dtype) / (1.0 - dropout)
            ys.append(h @ wd[e][0].T)                                           # [n_e, D]
        ys = mx.concatenate(ys, axis=0) if len(ys) > 1 else ys[0]               # [Nk, D]
        yk = _permute_out(ys, order, inv).reshape(N, k, D)
        return (yk * scores[..., None].astype(yk.dtype)).sum(axis=1)            # [N, D]


# Sorting permutations: each assignment row a = n*k + j is x[n]; `order` lists assignments by
# expert and `inv` is its inverse. Both directions and their gradients are plain gathers (no
# scatter-add atomics on the GPU).
def _permute_in_fwd(x, order, inv):
    k = order.size // x.shape[0]
    return x[order // k]                                                        # [Nk, D]


_permute_in = mx.custom_function(_permute_in_fwd)


@_permute_in.vjp
def _permute_in_vjp(primals, cotangent, output):
    x, order, inv = primals
    N, D = x.shape
    dx = cotangent[inv].reshape(N, -1, D).sum(axis=1)                            # [N, D]
    return dx.astype(x.dtype), mx.zeros_like(order), mx.zeros_like(inv)


def _permute_out_fwd(ys, order, inv):
    return ys[inv]                                                              # [Nk, D], row a


_permute_out = mx.custom_function(_permute_out_fwd)


@_permute_out.vjp
def _permute_out_vjp(primals, cotangent, output):
    ys, order, inv = primals
    return cotangent[order].astype(ys.dtype), mx.zeros_like(order), mx.zeros_like(inv)


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
