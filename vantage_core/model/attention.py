"""Grouped-query self-attention with RoPE and an optional KV cache (Mixtral layout)."""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from ..config import ModelConfig


class KVCache:
    """Append-only per-layer cache; `offset` is the number of positions already cached."""

    def __init__(self):
        self.keys: Optional[mx.array] = None
        self.values: Optional[mx.array] = None
        self.offset = 0

    def update_and_fetch(self, k: mx.array, v: mx.array):
        # k, v: [B, kv_heads, L, head_dim]
        if self.keys is None:
            self.keys, self.values = k, v
        else:
            self.keys = mx.concatenate([self.keys, k], axis=2)
            self.values = mx.concatenate([self.values, v], axis=2)
        self.offset += k.shape[2]
        return self.keys, self.values

    def select(self, rows: mx.array):
        """Keep/reorder batch rows (beam search)."""
        self.keys = self.keys[rows]
        self.values = self.values[rows]


class StaticKVCache:
    """Preallocated per-layer cache with fixed shapes for decoding: keys/values buffers
    [B, kv_heads, max_len, head_dim] are allocated on the first write (the prefill, with its
    batch size and dtype) and written in place after that, so every decode step sees the same
    shapes (one compiled graph per batch instead of new shapes each token).

    `offset` (the position of the next write, also RoPE's offset) is either
      * a Python int (the prefill): the keys are written at [offset, offset + L) and the filled
        prefix [:offset + L] is returned, the same keys/values the growing `KVCache` returns; or
      * an `mx.array` scalar (a decode step, e.g. inside `mx.compile`): the keys are written
        there with `mx.slice_update` and the whole buffers are returned, so the caller's mask
        must hide the positions past `offset` (and any padding).
    """

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.keys: Optional[mx.array] = None
        self.values: Optional[mx.array] = None
        self.offset = 0

    @classmethod
    def wrap(cls, keys: mx.array, values: mx.array, offset) -> "StaticKVCache":
        """A cache over existing buffers (e.g. a compiled step's inputs) writing at `offset`."""
        c = cls(keys.shape[2])
        c.keys, c.values, c.offset = keys, values, offset
        return c

    def update_and_fetch(self, k: mx.array, v: mx.array):
        # k, v: [B, kv_heads, L, head_dim]
        B, H, L, D = k.shape
        if self.keys is None:
            self.keys = mx.zeros((B, H, self.max_len, D), dtype=k.dtype)
            self.values = mx.zeros((B, H, self.max_len, v.shape[-1]), dtype=v.dtype)
        if isinstance(self.offset, int):
            start, end = self.offset, self.offset + L
            if end > self.max_len:
                raise ValueError(f"StaticKVCache: writing positions {start}..{end - 1} past max_len {self.max_len}")
            self.keys[:, :, start:end, :] = k
            self.values[:, :, start:end, :] = v
            self.offset = end
            return self.keys[:, :, :end, :], self.values[:, :, :end, :]
        start = self.offset.reshape(1).astype(mx.int32)
        self.keys = mx.slice_update(self.keys, k.astype(self.keys.dtype), start, axes=(2,))
        self.values = mx.slice_update(self.values, v.astype(self.values.dtype), start, axes=(2,))
        self.offset = self.offset + L
        return self.keys, self.values

    def select(self, rows: mx.array):
        """Keep/reorder batch rows (beam search)."""
        self.keys = self.keys[rows]
        self.values = self.values[rows]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.hidden_size
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = d // self.n_heads
        self.scale = self.head_dim ** -0.5
        # Names match mlx-lm / HF Mixtral so checkpoints export without renaming.
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        self.rope = nn.RoPE(self.head_dim, traditional=False, base=cfg.rope_theta)

    def __call__(self, x: mx.array, mask=None, cache: Optional[KVCache] = None) -> mx.array:
        B, L, _ = x.shape  # x: [B, L, D]
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)  # [B, H, L, hd]
        k = self.k_proj(x).reshape(B, L, self.n_kv, -1).transpose(0, 2, 1, 3)     # [B, KV, L, hd]
        v = self.v_proj(x).reshape(B, L, self.n_kv, -1).transpose(0, 2, 1, 3)
        if cache is not None:
            q = self.rope(q, offset=cache.offset)
            k = self.rope(k, offset=cache.offset)
            k, v = cache.update_and_fetch(k, v)
        else:
            q = self.rope(q)
            k = self.rope(k)
        # mask: "causal" for training, or an additive [B, 1, L, S] array for padded decoding.
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))
