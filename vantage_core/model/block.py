"""One decoder layer: pre-norm attention, then a sparse MoE feed-forward (Mixtral layout)."""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from ..config import ModelConfig
from . import rng
from .attention import Attention, KVCache
from .experts import Experts
from .router import route


def checkpointed(module: nn.Module, fn):
    """`fn(x)` recomputed in the backward pass (mx.checkpoint) with the module's parameters
    passed explicitly, so their gradients flow (a closure over them would get zero), and a
    fixed dropout key, so the recomputation draws the same masks (vantage_core.model.rng)."""
    def inner(params, key, x):
        module.update(params)
        with rng.fixed_key(mx.stop_gradient(key)):
            return fn(x)

    ck = mx.checkpoint(inner)

    def wrapped(x):
        return ck(module.trainable_parameters(), rng.new_key(), x)
    return wrapped


class SparseMoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.k = cfg.num_experts_per_token
        self.capacity_factor = cfg.expert_capacity
        self.impl = cfg.moe_impl
        self.expert_dropout = cfg.expert_dropout
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = Experts(cfg.hidden_size, cfg.intermediate_size, cfg.num_experts)

    def __call__(self, x: mx.array):
        B, L, D = x.shape
        flat = x.reshape(-1, D)                                  # [N, D]
        r = route(self.gate, flat, self.k)
        # Capacity and expert dropout are training-time; inference never drops (Mixtral), and
        # gather_mm wastes no compute on empty capacity slots.
        if self.impl == "capacity" and self.training:
            y, dropped = self.experts.capacity(flat, r.inds, r.scores, self.capacity_factor,
                                               self.expert_dropout, self.training)
        elif self.impl == "sorted" and self.training:
            y, dropped = self.experts.sorted_exact(flat, r.inds, r.scores, r.counts, self.expert_dropout,
                                                   self.training), mx.array(0.0)
        else:
            y, dropped = self.experts.gather(flat, r.inds, r.scores), mx.array(0.0)
        stats = {"aux_loss": r.aux_loss, "z_loss": r.z_loss, "dropped": dropped, "counts": r.counts}
        return y.reshape(B, L, D), stats


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        # Attribute names follow mlx-lm's Mixtral (block_sparse_moe.gate / .switch_mlp).
        self.block_sparse_moe = SparseMoE(cfg)
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.hidden_dropout = cfg.hidden_dropout
        self.checkpoint_moe = False

    def _drop(self, x: mx.array) -> mx.array:
        if self.training and self.hidden_dropout > 0:
            p = self.hidden_dropout
            return x * rng.bernoulli(1.0 - p, x.shape).astype(x.dtype) / (1.0 - p)
        return x

    def __call__(self, x: mx.array, mask=None, cache: Optional[KVCache] = None):
        h = x + self._drop(self.self_attn(self.input_layernorm(x), mask, cache))
        moe = self.block_sparse_moe
        if self.checkpoint_moe and self.training and cache is None:
            y, stats = checkpointed(moe, moe)(self.post_attention_layernorm(h))
        else:
            y, stats = moe(self.post_attention_layernorm(h))
        return h + self._drop(y), stats
