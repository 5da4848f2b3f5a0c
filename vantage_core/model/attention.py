"""Grouped-query self-attention with RoPE and an optional KV cache (Mixtral layout)."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def _chunked_causal_sdpa(scale: float, chunk: int):
    @mx.custom_function
    def attend(q, k, v):
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask="causal")

    @attend.vjp
    def attend_vjp(primals, d_out, out):
        q, k, v = primals                                  # q: [B, H, L, hd]; k, v: [B, KV, L, hd]
        B, H, L, hd = q.shape
        rep = H // k.shape[1]
        kr = mx.repeat(k, rep, axis=1) if rep > 1 else k   # [B, H, L, hd]
        vr = mx.repeat(v, rep, axis=1) if rep > 1 else v
        do32 = d_out.astype(mx.float32)
        delta = (do32 * out.astype(mx.float32)).sum(axis=-1, keepdims=True)   # [B, H, L, 1]
        dq_parts, dk, dv = [], mx.zeros(kr.shape, mx.float32), mx.zeros(vr.shape, mx.float32)
        for s in range(0, L, chunk):
            e = min(L, s + chunk)                          # rows s..e-1 see keys 0..e-1
            qc, kc, vc = q[:, :, s:e], kr[:, :, :e], vr[:, :, :e]
            sc = (qc @ kc.swapaxes(-1, -2)).astype(mx.float32) * scale        # [B, H, c, e]
            rows = mx.arange(s, e)[:, None]
            sc = mx.where(mx.arange(e)[None, :] > rows, -mx.inf, sc)
            p = mx.softmax(sc, axis=-1, precise=True)                          # [B, H, c, e]
            doc = do32[:, :, s:e]
            dp = doc @ vc.astype(mx.float32).swapaxes(-1, -2)                  # [B, H, c, e]
            ds = p * (dp - delta[:, :, s:e]) * scale
            dq_parts.append(ds @ kc.astype(mx.float32))                        # [B, H, c, hd]
            pad = [(0, 0), (0, 0), (0, L - e), (0, 0)]
            dv = dv + mx.pad(p.swapaxes(-1, -2) @ doc, pad)                    # [B, H, L, hd]
            dk = dk + mx.pad(ds.swapaxes(-1, -2) @ qc.astype(mx.float32), pad)
        dq = mx.concatenate(dq_parts, axis=2)
        if rep > 1:                                        # sum the query heads sharing a KV head
            dk = dk.reshape(B, -1, rep, L, hd).sum(axis=2)
            dv = dv.reshape(B, -1, rep, L, hd).sum(axis=2)
        return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)

    return attend


def causal_attention_chunked_backward(q: mx.array, k: mx.array, v: mx.array, scale: float,
                                      chunk: int = 256) -> mx.array:
    """Causal attention: forward by `mx.fast.scaled_dot_product_attention`, backward recomputing
    the probabilities `chunk` query rows at a time over only the keys those rows see, so at
    most [B, H, chunk, L] float32 scores are alive in the backward pass (an unfused backward
    holds [B, H, L, L]). q: [B, H, L, hd]; k, v: [B, KV, L, hd] -> [B, H, L, hd]."""
    return _chunked_causal_sdpa(float(scale), int(chunk))(q, k, v)
