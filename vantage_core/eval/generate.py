"""Batched decoding with a KV cache: greedy and beam search, stopping at the end token."""

from __future__ import annotations

import mlx.core as mx

from ..model.attention import KVCache

NEG = -1e9


def _prefill_mask(valid: mx.array) -> mx.array:
    # valid: [B, L] bool (left padding). Each query sees earlier real keys and itself; the
    # diagonal keeps pad rows finite (an all-masked row would give NaN).
    L = valid.shape[1]
    causal = mx.tril(mx.ones((L, L), dtype=mx.bool_))
    allowed = (causal[None] & valid[:, None, :]) | mx.eye(L, dtype=mx.bool_)[None]
    return mx.where(allowed, 0.0, NEG)[:, None, :, :]  # [B, 1, L, L]


def _left_pad(prompts: list[list[int]], pad_id: int):
    L = max(len(p) for p in prompts)
    toks = [[pad_id] * (L - len(p)) + p for p in prompts]
    valid = [[False] * (L - len(p)) + [True] * len(p) for p in prompts]
    return mx.array(toks, dtype=mx.int32), mx.array(valid)


def generate_greedy(model, prompts: list[list[int]], *, pad_id: int, end_id: int,
                    max_new_tokens: int = 128, batch_size: int = 32) -> list[list[int]]:
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for s in range(0, len(order), batch_size):
        idx = order[s: s + batch_size]
        toks, valid = _left_pad([prompts[i] for i in idx], pad_id)
        B = toks.shape[0]
        cache = [KVCache() for _ in model.layers]
        L = toks.shape[1]
        last = mx.arange(B) * L + (L - 1)
        logits, _ = model(toks, mask=_prefill_mask(valid).astype(mx.float32), cache=cache, positions=last)
        nxt = mx.argmax(logits, axis=-1)
        key_valid = valid
        done = [False] * B
        seqs: list[list[int]] = [[] for _ in range(B)]
        for _ in range(max_new_tokens):
            mx.eval(nxt)
            ids = nxt.tolist()
            for b, t in enumerate(ids):
                if not done[b]:
                    if t == end_id:
                        done[b] = True
                    else:
                        seqs[b].append(t)
            if all(done):
                break
            key_valid = mx.concatenate([key_valid, mx.ones((B, 1), dtype=mx.bool_)], axis=1)
            mask = mx.where(key_valid, 0.0, NEG)[:, None, None, :].astype(mx.float32)
            logits, _ = model(nxt[:, None], mask=mask, cache=cache)
            nxt = mx.argmax(logits[:, -1, :], axis=-1)
        for b, i in enumerate(idx):
            out[i] = seqs[b]
    return out


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
