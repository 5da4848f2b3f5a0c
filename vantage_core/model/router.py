"""Top-k softmax router with the Switch load-balancing loss and the router z-loss."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn


@dataclass
class Routing:
    inds: mx.array     # [N, k] expert ids (no gradient)
    scores: mx.array   # [N, k] gate weights, softmax over the selected logits (Mixtral)
    aux_loss: mx.array  # scalar, 1.0 when perfectly balanced
    z_loss: mx.array    # scalar
    counts: mx.array    # [E] assignments per expert before capacity


def route(gate: nn.Linear, x: mx.array, k: int) -> Routing:
    # x: [N, D]
    logits = gate(x).astype(mx.float32)                                # [N, E]
    E = logits.shape[-1]
    inds = mx.stop_gradient(mx.argpartition(-logits, kth=k - 1, axis=-1)[:, :k])  # [N, k]
    scores = mx.softmax(mx.take_along_axis(logits, inds, axis=-1), axis=-1, precise=True)
    probs = mx.softmax(logits, axis=-1, precise=True)                  # [N, E]
    onehot = (inds[..., None] == mx.arange(E)).astype(mx.float32)      # [N, k, E]
    counts = mx.stop_gradient(onehot.sum(axis=(0, 1)))                 # [E]
    frac = counts / (x.shape[0] * k)
    # Switch Transformer: E * sum_e f_e * P_e; gradient flows through P_e only.
    aux = E * mx.sum(frac * probs.mean(axis=0))
    z = mx.mean(mx.square(mx.logsumexp(logits, axis=-1)))
    return Routing(inds, scores.astype(x.dtype), aux, z, counts)
