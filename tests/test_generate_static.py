"""The static (preallocated, fixed-shape) KV cache and the compiled decode step give the same
tokens as the growing cache: greedy and batched beam search on a tiny random model, prompts of
different lengths, end-token stops, several batch shapes and the MAX_PREFILL_TOKENS split."""

import random

import mlx.core as mx
import pytest

from vantage_core.config import load_config
from vantage_core.eval import generate as G
from vantage_core.eval.generate import generate_beam_batched, generate_greedy
from vantage_core.model.attention import KVCache, StaticKVCache
from vantage_core.model.transformer import MoETransformer

PAD = 0
LENGTHS = (3, 7, 12, 12, 20, 5, 31, 9, 1, 16)
PATHS = [(True, False), (True, True)]          # (static_cache, compiled) against the growing cache


@pytest.fixture(scope="module")
def tiny():
    mx.random.seed(0)
    cfg = load_config("tiny")                 # 2 layers, 4 experts, hidden 64
    model = MoETransformer(cfg.model)
    mx.eval(model.parameters())
    model.eval()
    rnd = random.Random(0)
    prompts = [[rnd.randrange(3, cfg.model.vocab_size) for _ in range(n)] for n in LENGTHS]
    return model, prompts


def _end_token(outs, min_stops=2):
    """A token the growing path emits early in several rows, so those rows stop there while the
    others run to max_new_tokens (a random model never picks a fixed end id on its own)."""
    counts = {}
    for o in outs:
        for t in set(o[1:10]):
            counts[t] = counts.get(t, 0) + 1
    tok, n = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))
    assert n >= min_stops
    return tok


@pytest.mark.parametrize("batch_size", [3, 16])
def test_greedy_static_matches_growing(tiny, batch_size):
    model, prompts = tiny
    kw = dict(pad_id=PAD, max_new_tokens=24, batch_size=batch_size)
    free = generate_greedy(model, prompts, end_id=1, static_cache=False, **kw)
    end = _end_token(free)
    ref = generate_greedy(model, prompts, end_id=end, static_cache=False, **kw)
    assert sum(len(o) < 24 for o in ref) >= 2 and any(len(o) == 24 for o in ref)   # stops and runs
    for static, compiled in PATHS:
        assert generate_greedy(model, prompts, end_id=end, static_cache=static, compiled=compiled, **kw) == ref
        assert generate_greedy(model, prompts, end_id=1, static_cache=static, compiled=compiled, **kw) == free


@pytest.mark.parametrize("max_new", [0, 1, 2, 64])
def test_greedy_static_edge_lengths(tiny, max_new):
    """Few new tokens, and L_max exactly at a CACHE_ROUND boundary or past one."""
    model, prompts = tiny
    kw = dict(pad_id=PAD, end_id=1, max_new_tokens=max_new, batch_size=4)
    ref = generate_greedy(model, prompts, static_cache=False, **kw)
    assert generate_greedy(model, prompts, static_cache=True, compiled=True, **kw) == ref


def test_greedy_static_respects_prefill_token_cap(tiny, monkeypatch):
    model, prompts = tiny
    kw = dict(pad_id=PAD, end_id=1, max_new_tokens=12, batch_size=16)
    ref = generate_greedy(model, prompts, static_cache=False, **kw)
    seen = []
    real = G._rows_for
    monkeypatch.setattr(G, "MAX_PREFILL_TOKENS", 40)
    monkeypatch.setattr(G, "_rows_for", lambda *a: seen.append(real(*a)) or seen[-1])
    assert generate_greedy(model, prompts, static_cache=True, compiled=True, **kw) == ref
    assert len(seen) > 2
    for rows in seen:
        assert len(rows) == 1 or len(rows) * max(len(prompts[i]) for i in rows) <= 40


@pytest.mark.parametrize("beams", [1, 3])
def test_beam_static_matches_growing(tiny, beams):
    model, prompts = tiny
    kw = dict(pad_id=PAD, num_beams=beams, max_new_tokens=20, batch_size=3)
    free = generate_greedy(model, prompts, pad_id=PAD, end_id=1, max_new_tokens=20, static_cache=False)
    end = _end_token(free)
    ref = generate_beam_batched(model, prompts, end_id=end, static_cache=False, **kw)
    assert any(len(c[0][0]) < 20 for c in ref)            # some prompts finished at the end token
    for static, compiled in PATHS:
        got = generate_beam_batched(model, prompts, end_id=end, static_cache=static, compiled=compiled, **kw)
        assert [[ids for ids, _ in c] for c in got] == [[ids for ids, _ in c] for c in ref]
        for c, r in zip(got, ref):
            assert [s for _, s in c] == pytest.approx([s for _, s in r], abs=1e-4)


def test_compiled_step_uses_current_weights(tiny):
    """Weights changed between calls (training between evaluations) are used, not the ones
    the compiled step first saw."""
    model, prompts = tiny
    kw = dict(pad_id=PAD, end_id=1, max_new_tokens=10, batch_size=4)
    before = generate_greedy(model, prompts, static_cache=True, compiled=True, **kw)
    w = model.model.layers[0].self_attn.o_proj.weight
    model.model.layers[0].self_attn.o_proj.weight = w * 3.0
    try:
        changed = generate_greedy(model, prompts, static_cache=True, compiled=True, **kw)
        assert changed == generate_greedy(model, prompts, static_cache=False, **kw)
        assert changed != before
    finally:
        model.model.layers[0].self_attn.o_proj.weight = w


def test_decode_mode_env(tiny, monkeypatch):
    model, prompts = tiny
    kw = dict(pad_id=PAD, end_id=1, max_new_tokens=6, batch_size=4)
    ref = generate_greedy(model, prompts, static_cache=False, **kw)
    for mode in ("growing", "static", "compiled"):
        monkeypatch.setenv("VANTAGE_DECODE", mode)
        assert G._decode_mode(None, None) == G._DECODE_MODES[mode]
        assert generate_greedy(model, prompts, **kw) == ref
    monkeypatch.setenv("VANTAGE_DECODE", "fast")
    from vantage_core.errors import ConfigError
    with pytest.raises(ConfigError, match="VANTAGE_DECODE='fast': choose one of"):
        generate_greedy(model, prompts, **kw)


def test_cache_len_rounds_up():
    assert G._cache_len(10, 20) == G.CACHE_ROUND
    assert G._cache_len(G.CACHE_ROUND, 0) == 2 * G.CACHE_ROUND
    assert G._cache_len(600, 160) % G.CACHE_ROUND == 0 and G._cache_len(600, 160) >= 760


def test_static_kv_cache_writes_in_place():
    mx.random.seed(1)
    B, H, D = 2, 2, 8
    k0, v0 = mx.random.normal((B, H, 5, D)), mx.random.normal((B, H, 5, D))
    grow, static = KVCache(), StaticKVCache(16)
    gk, gv = grow.update_and_fetch(k0, v0)
    sk, sv = static.update_and_fetch(k0, v0)                  # prefill: int offset, filled prefix
    assert sk.shape == (B, H, 5, D) and mx.array_equal(sk, gk) and mx.array_equal(sv, gv)
    assert static.offset == 5 and static.keys.shape == (B, H, 16, D)
    k1, v1 = mx.random.normal((B, H, 1, D)), mx.random.normal((B, H, 1, D))
    step = StaticKVCache.wrap(static.keys, static.values, mx.array(5, dtype=mx.int32))
    fk, fv = step.update_and_fetch(k1, v1)                    # decode: array offset, whole buffer
    assert fk.shape == (B, H, 16, D) and step.offset.item() == 6
    gk, gv = grow.update_and_fetch(k1, v1)
    assert mx.array_equal(fk[:, :, :6], gk) and mx.array_equal(fv[:, :, :6], gv)
    assert mx.all(fk[:, :, 6:] == 0).item()
    with pytest.raises(ValueError, match="max_len"):
        StaticKVCache(4).update_and_fetch(k0, v0)


def test_compiled_step_is_built_once_per_model_and_sees_new_weights(tiny, monkeypatch):
    """Evaluations during training reuse one compiled decode step per model (no retrace per
    evaluation), and that step decodes with the weights the model holds at call time."""
    model, prompts = tiny
    built = []
    real = G.mx.compile
    monkeypatch.setattr(G.mx, "compile", lambda f, **kw: built.append(f) or real(f, **kw))
    fresh = MoETransformer(load_config("tiny").model)
    fresh.update(model.parameters())
    kw = dict(pad_id=PAD, end_id=-1, max_new_tokens=5, static_cache=True, compiled=True)
    a = generate_greedy(fresh, prompts[:4], **kw)
    assert generate_greedy(fresh, prompts[:4], **kw) == a
    generate_beam_batched(fresh, prompts[:2], num_beams=2, **kw)
    generate_beam_batched(fresh, prompts[:2], num_beams=2, **kw)
    assert len(built) == 2                      # one greedy step, one beam-2 step
    fresh.lm_head.weight = -fresh.lm_head.weight        # what a training step does: new arrays
    b = generate_greedy(fresh, prompts[:4], **kw)
    assert b != a
    assert b == generate_greedy(fresh, prompts[:4], **{**kw, "static_cache": False, "compiled": False})
    assert len(built) == 2
