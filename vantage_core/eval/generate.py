"""Batched decoding with a KV cache: greedy and beam search, stopping at the end token.

Two cache paths give the same tokens:

* static (default): each batch preallocates [B, kv_heads, L_max, head_dim] key/value buffers
  (`StaticKVCache`, L_max = padded prompt + max_new_tokens rounded up to CACHE_ROUND) and each
  decode step writes one position in place, with the mask built from the position. Every step
  of a batch has the same shapes, so the one-token step (model forward + argmax, or + the beam
  candidates' top-k) is wrapped in `mx.compile` and is traced once per batch shape; on the
  CUDA backend this also lets MLX reuse its CUDA graph instead of building one per token.
* growing (`static_cache=False`): the cache grows by concatenation each step (new shapes every
  token); kept as the reference.

On the CPU both give the same tokens (tests/test_generate_static.py). The static path attends
over the padded length, so float sums can differ in the last bits; on an NVIDIA GPU, where
float32 matmuls run in TF32 unless MLX_ENABLE_TF32=0, near-tied logits (an untrained model)
can then pick another token.

`static_cache` / `compiled` default (None) to VANTAGE_DECODE: `compiled` (default), `static`
(static cache, no mx.compile) or `growing`.
"""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np

from ..errors import ConfigError
from ..model.attention import KVCache, StaticKVCache

NEG = -1e9
# Prompt tokens per prefill call. MLX's CUDA backend fails to launch attention over a
# [128, 1, 640, 640] padding mask (cudaGraphAddKernelNode: invalid argument, seen on an H100
# with MLX 0.32.4) while 32 x 640 runs, so long prompts are decoded in smaller batches.
MAX_PREFILL_TOKENS = 16384


def _rows_for(prompts: list[list[int]], order: list[int], start: int, batch_size: int) -> list[int]:
    """The next batch of prompt indices: at most `batch_size`, and at most
    MAX_PREFILL_TOKENS padded prompt tokens (prompts are sorted by length)."""
    rows = []
    for i in order[start: start + batch_size]:
        L = len(prompts[i])   # sorted ascending: the newest row is the longest
        if rows and (len(rows) + 1) * L > MAX_PREFILL_TOKENS:
            break
        rows.append(i)
    return rows


def _prefill_mask(valid: mx.array) -> mx.array:
    # valid: [B, L] bool (left padding). Each query sees earlier real keys and itself; the
    # diagonal keeps pad rows finite (an all-masked row would give NaN).
    L = valid.shape[1]
    causal = mx.tril(mx.ones((L, L), dtype=mx.bool_))
    allowed = (causal[None] & valid[:, None, :]) | mx.eye(L, dtype=mx.bool_)[None]
    return mx.where(allowed, 0.0, NEG)[:, None, :, :]  # [B, 1, L, L]


# L_max is rounded up to a multiple of this, so batches of similar prompt lengths share shapes
# (and compiled graphs); the extra positions are masked and cost little attention work.
CACHE_ROUND = 64
_DECODE_MODES = {"compiled": (True, True), "static": (True, False), "growing": (False, False)}


def _decode_mode(static_cache, compiled) -> tuple[bool, bool]:
    env = os.environ.get("VANTAGE_DECODE", "compiled").strip().lower() or "compiled"
    if env not in _DECODE_MODES:
        raise ConfigError(f"VANTAGE_DECODE={env!r}: choose one of {', '.join(_DECODE_MODES)}")
    s_env, c_env = _DECODE_MODES[env]
    static_cache = s_env if static_cache is None else bool(static_cache)
    compiled = c_env if compiled is None else bool(compiled)
    return static_cache, static_cache and compiled


def _cache_len(prompt_len: int, max_new_tokens: int) -> int:
    n = prompt_len + max(1, max_new_tokens)
    return -(-n // CACHE_ROUND) * CACHE_ROUND


def _decode_mask(valid_full: mx.array, pos: mx.array) -> mx.array:
    """Additive mask of a one-token decode step over the static cache: valid_full [B, L_max]
    (False at left padding), pos the query's position; keys past pos are hidden."""
    allowed = valid_full & (mx.arange(valid_full.shape[1]) <= pos)[None, :]
    return mx.where(allowed, 0.0, NEG)[:, None, None, :].astype(mx.float32)   # [B, 1, 1, L_max]


def _static_forward(model, tokens, pos, valid_full, keys, values):
    """One token per row through the model over the static cache: (logits [B, V], keys, values)."""
    caches = [StaticKVCache.wrap(k, v, pos) for k, v in zip(keys, values)]
    logits, _ = model(tokens[:, None], mask=_decode_mask(valid_full, pos), cache=caches)
    return logits[:, -1, :], [c.keys for c in caches], [c.values for c in caches]


def _log_softmax(logits: mx.array) -> mx.array:
    logp = logits.astype(mx.float32)
    return logp - mx.logsumexp(logp, axis=-1, keepdims=True)


def _beam_top(scores: mx.array, logp: mx.array, K: int):
    """scores [B, K] (running beam scores) + logp [B*K, V] -> the 2K best (beam, token)
    candidates of each prompt as flat indices into [K*V], and their scores (unsorted)."""
    B = scores.shape[0]
    V = logp.shape[-1]
    tot = scores[:, :, None] + logp.reshape(B, K, V)
    flat = tot.reshape(B, K * V)
    k2 = min(2 * K, K * V)
    top = mx.argpartition(-flat, kth=k2 - 1, axis=-1)[:, :k2]
    return top, mx.take_along_axis(flat, top, axis=-1)


def _per_model(model, key, build):
    """One compiled decode step per model and kind, kept on the model: every evaluation of a
    training run reuses the traces of earlier ones (a retrace costs seconds per shape on the
    GPU). Safe because the step reads the weights at each call (inputs=model.state)."""
    steps = model.__dict__.setdefault("_vantage_decode_steps", {})
    if key not in steps:
        steps[key] = build()
    return steps[key]


def _greedy_step_fn(model, compiled: bool):
    def step(tokens, pos, valid_full, keys, values):
        logits, keys, values = _static_forward(model, tokens, pos, valid_full, keys, values)
        return mx.argmax(logits, axis=-1), pos + 1, keys, values
    # inputs=model.state: the weights are read at each call (not baked in as constants), so a
    # model trained between evaluations is decoded with its current weights.
    return mx.compile(step, inputs=model.state) if compiled else step


def _beam_step_fn(model, K: int, compiled: bool):
    def step(tokens, rows, scores, pos, valid_full, keys, values):
        keys = [k[rows] for k in keys]          # reorder the beams' caches (fixed [B*K] rows)
        values = [v[rows] for v in values]
        logits, keys, values = _static_forward(model, tokens, pos, valid_full, keys, values)
        top, top_scores = _beam_top(scores, _log_softmax(logits), K)
        return top, top_scores, pos + 1, keys, values
    return mx.compile(step, inputs=model.state) if compiled else step


def _left_pad(prompts: list[list[int]], pad_id: int):
    L = max(len(p) for p in prompts)
    toks = [[pad_id] * (L - len(p)) + p for p in prompts]
    valid = [[False] * (L - len(p)) + [True] * len(p) for p in prompts]
    return mx.array(toks, dtype=mx.int32), mx.array(valid)


def generate_greedy(model, prompts: list[list[int]], *, pad_id: int, end_id: int,
                    max_new_tokens: int = 128, batch_size: int = 32,
                    static_cache: bool | None = None, compiled: bool | None = None) -> list[list[int]]:
    """Greedy decoding of many prompts in left-padded batches (sorted by length, at most
    `batch_size` prompts and MAX_PREFILL_TOKENS padded prompt tokens each). `static_cache` and
    `compiled` pick the cache path (module docstring)."""
    static_cache, compiled = _decode_mode(static_cache, compiled)
    model.eval()
    step_fn = _per_model(model, ("greedy", compiled), lambda: _greedy_step_fn(model, compiled)) \
        if static_cache else None
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    s = 0
    while s < len(order):
        idx = _rows_for(prompts, order, s, batch_size)
        s += len(idx)
        toks, valid = _left_pad([prompts[i] for i in idx], pad_id)
        decode = _greedy_static if static_cache else _greedy_growing
        seqs = decode(model, toks, valid, end_id, max_new_tokens, step_fn)
        for b, i in enumerate(idx):
            out[i] = seqs[b]
    return out


def _take_tokens(ids: list[int], end_id: int, done: list[bool], seqs: list[list[int]]) -> bool:
    """Append one step's tokens to the open rows; True when every row has ended."""
    for b, t in enumerate(ids):
        if not done[b]:
            if t == end_id:
                done[b] = True
            else:
                seqs[b].append(t)
    return all(done)


def _greedy_growing(model, toks, valid, end_id, max_new_tokens, _step_fn=None) -> list[list[int]]:
    B, L = toks.shape
    cache = [KVCache() for _ in model.layers]
    last = mx.arange(B) * L + (L - 1)
    logits, _ = model(toks, mask=_prefill_mask(valid).astype(mx.float32), cache=cache, positions=last)
    nxt = mx.argmax(logits, axis=-1)
    key_valid = valid
    done = [False] * B
    seqs: list[list[int]] = [[] for _ in range(B)]
    for _ in range(max_new_tokens):
        mx.eval(nxt)
        if _take_tokens(nxt.tolist(), end_id, done, seqs):
            break
        key_valid = mx.concatenate([key_valid, mx.ones((B, 1), dtype=mx.bool_)], axis=1)
        mask = mx.where(key_valid, 0.0, NEG)[:, None, None, :].astype(mx.float32)
        logits, _ = model(nxt[:, None], mask=mask, cache=cache)
        nxt = mx.argmax(logits[:, -1, :], axis=-1)
    return seqs


def _greedy_static(model, toks, valid, end_id, max_new_tokens, step_fn) -> list[list[int]]:
    B, L = toks.shape
    L_max = _cache_len(L, max_new_tokens)
    cache = [StaticKVCache(L_max) for _ in model.layers]
    last = mx.arange(B) * L + (L - 1)
    logits, _ = model(toks, mask=_prefill_mask(valid).astype(mx.float32), cache=cache, positions=last)
    nxt = mx.argmax(logits, axis=-1)
    keys, values = [c.keys for c in cache], [c.values for c in cache]
    valid_full = mx.concatenate([valid, mx.ones((B, L_max - L), dtype=mx.bool_)], axis=1)
    pos = mx.array(L, dtype=mx.int32)
    mx.async_eval(nxt, keys, values)
    done = [False] * B
    seqs: list[list[int]] = [[] for _ in range(B)]
    for t in range(max_new_tokens):
        # Queue the next step before reading this one's tokens, so the device works while the
        # host does the bookkeeping (a step past the last end is computed and dropped).
        last = t + 1 == max_new_tokens       # the last token needs no forward
        if not last:
            nxt_next, pos, keys, values = step_fn(nxt, pos, valid_full, keys, values)
            mx.async_eval(nxt_next, pos)
        if _take_tokens(nxt.tolist(), end_id, done, seqs) or last:
            break
        nxt = nxt_next
    return seqs


def generate_beam(model, prompt: list[int], *, end_id: int, num_beams: int = 4,
                  max_new_tokens: int = 128, length_penalty: float = 1.0) -> list[tuple[list[int], float]]:
    """Beam search for one prompt; returns finished candidates best first as (ids, score)."""
    model.eval()
    cache = [KVCache() for _ in model.layers]
    toks = mx.array([prompt], dtype=mx.int32)
    logits, _ = model(toks, mask="causal", cache=cache, positions=mx.array([len(prompt) - 1]))
    logp = mx.log(mx.softmax(logits.astype(mx.float32), axis=-1))  # [1, V]
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for step in range(max_new_tokens):
        V = logp.shape[-1]
        totals = mx.array([b[1] for b in beams])[:, None] + logp            # [nb, V]
        flat = totals.reshape(-1)
        k = min(2 * num_beams, flat.size)
        top = mx.argpartition(-flat, kth=k - 1)[:k]
        mx.eval(top, flat)
        cand = sorted(((float(flat[i].item()), int(i)) for i in top.tolist()), reverse=True)
        new_beams, rows, toks_next = [], [], []
        for score, i in cand:
            b, t = divmod(i, V)
            if t == end_id:
                seq = beams[b][0]
                finished.append((seq, score / max(1, len(seq) + 1) ** length_penalty))
            else:
                new_beams.append((beams[b][0] + [t], score))
                rows.append(b)
                toks_next.append(t)
            if len(new_beams) == num_beams:
                break
        best_open = max((s / max(1, len(q)) ** length_penalty for q, s in new_beams), default=-1e30)
        if len(finished) >= num_beams and max(f[1] for f in finished) >= best_open:
            break
        if not new_beams:
            break
        sel = mx.array(rows, dtype=mx.int32)
        for c in cache:
            c.select(sel)
        beams = new_beams
        logits, _ = model(mx.array(toks_next, dtype=mx.int32)[:, None], mask=None, cache=cache)
        logp = mx.log(mx.softmax(logits[:, -1, :].astype(mx.float32), axis=-1))
    if not finished:
        finished = [(q, s / max(1, len(q)) ** length_penalty) for q, s in beams]
    return sorted(finished, key=lambda x: -x[1])[:num_beams]


def generate_beam_batched(model, prompts: list[list[int]], *, pad_id: int, end_id: int, num_beams: int = 4,
                          max_new_tokens: int = 128, batch_size: int = 16,
                          length_penalty: float = 1.0, static_cache: bool | None = None,
                          compiled: bool | None = None) -> list[list[tuple[list[int], float]]]:
    """Beam search over many prompts at once: B prompts x K beams share one KV-cached batch.
    Returns, per prompt, its finished candidates best first as (ids, length-normalized score).
    `static_cache` and `compiled` pick the cache path (module docstring)."""
    static_cache, compiled = _decode_mode(static_cache, compiled)
    model.eval()
    K = num_beams
    step_fn = _per_model(model, ("beam", K, compiled), lambda: _beam_step_fn(model, K, compiled)) \
        if static_cache else None
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[tuple[list[int], float]]] = [[] for _ in prompts]
    s = 0
    while s < len(order):
        idx = _rows_for(prompts, order, s, batch_size)
        s += len(idx)
        toks, valid = _left_pad([prompts[i] for i in idx], pad_id)
        B, L = toks.shape
        rows = mx.repeat(mx.arange(B), K)                 # every prompt's cache copied to K beams
        prefill_mask = _prefill_mask(valid).astype(mx.float32)
        if static_cache:
            L_max = _cache_len(L, max_new_tokens)
            cache = [StaticKVCache(L_max) for _ in model.layers]
            logits, _ = model(toks, mask=prefill_mask, cache=cache, positions=mx.arange(B) * L + (L - 1))
            keys = [c.keys[rows] for c in cache]
            values = [c.values[rows] for c in cache]
            valid_full = mx.concatenate([valid, mx.ones((B, L_max - L), dtype=mx.bool_)], axis=1)[rows]
            state = {"pos": mx.array(L, dtype=mx.int32), "keys": keys, "values": values}

            def advance(new_toks, sel, scores_np):
                top, top_scores, state["pos"], state["keys"], state["values"] = step_fn(
                    new_toks, sel, mx.array(scores_np.astype(np.float32)), state["pos"], valid_full,
                    state["keys"], state["values"])
                return top, top_scores
        else:
            cache = [KVCache() for _ in model.layers]
            logits, _ = model(toks, mask=prefill_mask, cache=cache, positions=mx.arange(B) * L + (L - 1))
            for c in cache:
                c.select(rows)
            state = {"key_valid": valid[rows]}

            def advance(new_toks, sel, scores_np):
                for c in cache:
                    c.select(sel)
                state["key_valid"] = key_valid = mx.concatenate(
                    [state["key_valid"][sel], mx.ones((B * K, 1), dtype=mx.bool_)], axis=1)
                mask = mx.where(key_valid, 0.0, NEG)[:, None, None, :].astype(mx.float32)
                logits, _ = model(new_toks[:, None], mask=mask, cache=cache)
                return _beam_top(mx.array(scores_np.astype(np.float32)), _log_softmax(logits[:, -1, :]), K)
        logp = mx.repeat(_log_softmax(logits), K, axis=0)  # [B*K, V]
        V = logp.shape[-1]
        scores = np.full((B, K), -np.inf, dtype=np.float64)
        scores[:, 0] = 0.0                                 # all beams start identical: expand one
        top, top_scores = _beam_top(mx.array(scores.astype(np.float32)), logp, K)
        seqs = [[[] for _ in range(K)] for _ in range(B)]
        finished: list[list[tuple[list[int], float]]] = [[] for _ in range(B)]
        done = np.zeros(B, dtype=bool)
        for step in range(max_new_tokens):
            top_np, sc_np = np.array(top), np.array(top_scores)
            new_rows, new_toks = [], []
            new_scores = np.full((B, K), -np.inf)
            new_seqs = [[[] for _ in range(K)] for _ in range(B)]
            for b in range(B):
                cand = sorted(zip(sc_np[b].tolist(), top_np[b].tolist()), reverse=True)
                n = 0
                for sc, flat_i in cand:
                    if n == K:      # candidates below the K-th open beam are not considered
                        break
                    if not np.isfinite(sc):
                        continue
                    beam, t = divmod(int(flat_i), V)
                    seq = seqs[b][beam]
                    if t == end_id:
                        if not done[b]:
                            finished[b].append((seq, sc / max(1, len(seq) + 1) ** length_penalty))
                        continue
                    new_rows.append(b * K + beam)
                    new_toks.append(t)
                    new_scores[b, n] = sc
                    new_seqs[b][n] = seq + [t]
                    n += 1
                while n < K:                                 # keep shapes fixed: dead beams
                    new_rows.append(b * K)
                    new_toks.append(pad_id)
                    n += 1
                if not done[b] and len(finished[b]) >= K:
                    best_open = max((new_scores[b, j] / max(1, len(new_seqs[b][j])) ** length_penalty
                                     for j in range(K) if np.isfinite(new_scores[b, j])), default=-np.inf)
                    if max(f[1] for f in finished[b]) >= best_open:
                        done[b] = True
            scores, seqs = new_scores, new_seqs
            scores[done] = -np.inf
            if done.all() or step + 1 == max_new_tokens:   # the last step's candidates go unused
                break
            top, top_scores = advance(mx.array(new_toks, dtype=mx.int32), mx.array(new_rows, dtype=mx.int32),
                                      scores)
        for b, i in enumerate(idx):
            fin = finished[b]
            if not fin:   # nothing ended within max_new_tokens: return the open beams
                fin = [(seqs[b][j], scores[b, j] / max(1, len(seqs[b][j])) ** length_penalty)
                       for j in range(K) if np.isfinite(scores[b, j])]
            results[i] = sorted(fin, key=lambda x: -x[1])[:K]
    return results
