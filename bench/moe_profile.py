"""Where one MoE training step's time goes: each part of Vantage's step timed on its own.

    python bench/moe_profile.py --device gpu --preset mixtral-gpu
    python bench/moe_profile.py --device cpu --preset tiny --steps 3

Same shapes and weights as bench/moe_step.py (its presets). Every part is forward + backward
(the update for the optimizer rows), compiled with mx.compile as the trainer compiles its
step, timed as the median of --steps calls each ended by mx.eval, after --warmup calls:

  full step        make_train_step's compiled step (loss, aux losses, clip, AdamW)
  attention x L    pre-norm + attention + residual, all layers, [B, L, D] in and out
  attention manual the same with q@k^T / softmax / @v written out (is SDPA's backward fused?)
  moe x L (...)    pre-norm + router + experts + residual, all layers, per dispatch path
  router x L       the gate matmul, top-k, softmax, aux and z losses alone
  lm head + CE     final norm, [N, D] @ [D, V], cross entropy (fused vs chunked)
  embedding        token lookup and its scatter-add gradient
  adamw update     optimizer.update over every parameter with given gradients (compiled alone)
  clip             global grad norm + scaling over every gradient

The parts overlap (the full step is not their sum: the compiled step fuses across them);
the table says which part is worth cutting. Last line: `parts_sum_ms=X full_step_ms=Y`.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten, tree_map  # noqa: E402

from bench.moe_step import DTYPES, PRESETS, vantage_config  # noqa: E402

_log = None


def say(*a):
    line = " ".join(str(x) for x in a)
    print(line, flush=True)
    if _log:
        _log.write(line + "\n")
        _log.flush()


def timeit(fn, args, steps, warmup):
    for _ in range(warmup):
        mx.eval(fn(*args))
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        mx.eval(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def manual_attention(attn, x):
    B, L, _ = x.shape
    q = attn.q_proj(x).reshape(B, L, attn.n_heads, -1).transpose(0, 2, 1, 3)
    k = attn.k_proj(x).reshape(B, L, attn.n_kv, -1).transpose(0, 2, 1, 3)
    v = attn.v_proj(x).reshape(B, L, attn.n_kv, -1).transpose(0, 2, 1, 3)
    q, k = attn.rope(q), attn.rope(k)
    rep = attn.n_heads // attn.n_kv
    k, v = mx.repeat(k, rep, axis=1), mx.repeat(v, rep, axis=1)
    s = (q * attn.scale) @ k.swapaxes(-1, -2)                                  # [B, H, L, L]
    s = s + mx.triu(mx.full((L, L), -1e9, dtype=s.dtype), k=1)
    out = mx.softmax(s.astype(mx.float32), axis=-1).astype(v.dtype) @ v        # [B, H, L, hd]
    return attn.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


# An experiment, measured and dropped (docs/performance.md, round two): slower and no smaller
# than MLX's own SDPA backward on the H200.

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


def main(argv=None):
    global _log
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="MLX device")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="shape (bench/moe_step.py's presets)")
    p.add_argument("--steps", type=int, default=10, help="timed calls per part (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per part first (compilation)")
    p.add_argument("--log", default=None, help="also append the output here (default $OUT/profile.log)")
    a = p.parse_args(argv)
    log_path = a.log or (os.path.join(os.environ["OUT"], "profile.log") if os.environ.get("OUT") else None)
    if log_path:
        _log = open(log_path, "a")
    mx.set_default_device(mx.gpu if a.device == "gpu" else mx.cpu)
    sh = PRESETS[a.preset]
    dt = DTYPES[sh["dtype"]]
    B, L, D, V = sh["batch"], sh["seq"], sh["hidden"], sh["vocab"]
    say(f"# bench/moe_profile.py device={mx.default_device()} mlx={mx.__version__} preset={a.preset} {sh}")

    from vantage_core.model import MoETransformer
    from vantage_core.model.fastmath import cross_entropy
    from vantage_core.train.optim import make_optimizer
    from vantage_core.train.trainer import chunked_cross_entropy, make_train_step

    rows = []

    def part(name, fn, args, n_layers=1):
        mx.clear_cache()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        try:
            ms = timeit(fn, args, a.steps, a.warmup)
        except Exception as e:  # one part failing (e.g. memory) must not hide the others
            say(f"# {name}: FAILED {type(e).__name__}: {e}")
            return None
        peak = (mx.get_peak_memory() - base) / 2 ** 20
        rows.append((name, ms))
        say(f"| {name} | {ms:.2f} | " + (f"{ms / n_layers:.2f}" if n_layers > 1 else "") + f" | {peak:,.0f} |")
        return ms

    mx.random.seed(0)
    tokens = mx.random.randint(0, V, (B, L + 1)).astype(mx.int32)
    inputs, targets = tokens[:, :-1], tokens[:, 1:].reshape(-1)
    positions = mx.arange(B * L, dtype=mx.int32)
    wts = mx.ones((B * L,), dtype=mx.float32)
    say("| part | ms | ms per layer | peak MiB above the resident arrays |")
    say("| --- | ---: | ---: | ---: |")

    for cap in (2.0, 1.25):
        cfg = vantage_config(sh, k=sh["top_k"], impl="capacity", capacity=cap)
        model = MoETransformer(cfg.model)
        model.set_dtype(dt)
        model.train()
        opt = make_optimizer(cfg.training)
        _, apply, step = make_train_step(model, opt, cfg)
        full = part(f"full step (capacity {cap:g})", step, (inputs, positions, targets, wts))
        if cap != 2.0:
            continue
        layers = model.layers
        x = (mx.random.normal((B, L, D)) * 0.5).astype(dt)

        def stack(fn_layer):
            def loss(_model, x):
                h = x
                for lyr in layers:
                    h = fn_layer(lyr, h)
                return h.astype(mx.float32).square().mean()
            # as the trainer compiles: the model's state is an input and an output
            return mx.compile(nn.value_and_grad(model, loss), inputs=model.state, outputs=model.state)

        params = model.trainable_parameters()
        part("attention x L (SDPA)", stack(lambda l, h: h + l.self_attn(l.input_layernorm(h), "causal")),
             (model, x), len(layers))
        def chunked_attn(attn, x, chunk):
            B_, L_, _ = x.shape
            q = attn.rope(attn.q_proj(x).reshape(B_, L_, attn.n_heads, -1).transpose(0, 2, 1, 3))
            k = attn.rope(attn.k_proj(x).reshape(B_, L_, attn.n_kv, -1).transpose(0, 2, 1, 3))
            v = attn.v_proj(x).reshape(B_, L_, attn.n_kv, -1).transpose(0, 2, 1, 3)
            o = causal_attention_chunked_backward(q, k, v, attn.scale, chunk)
            return attn.o_proj(o.transpose(0, 2, 1, 3).reshape(B_, L_, -1))
        for chunk in (128, 512):
            part(f"attention x L (SDPA forward, chunked backward {chunk})",
                 stack(lambda l, h, c=chunk: h + chunked_attn(l.self_attn, l.input_layernorm(h), c)),
                 (model, x), len(layers))
        part("attention x L (manual softmax)", stack(lambda l, h: h + manual_attention(l.self_attn, l.input_layernorm(h))),
             (model, x), len(layers))
        for impl, c in (("capacity", 2.0), ("capacity", 1.25), ("gather", 0.0)):
            for lyr in layers:
                lyr.block_sparse_moe.impl, lyr.block_sparse_moe.capacity_factor = impl, c
            part(f"moe x L ({impl}{f' {c:g}' if impl == 'capacity' else ''})",
                 stack(lambda l, h: h + l.block_sparse_moe(l.post_attention_layernorm(h))[0]), (model, x), len(layers))
        for lyr in layers:
            lyr.block_sparse_moe.impl, lyr.block_sparse_moe.capacity_factor = "capacity", 2.0
        from vantage_core.model.block import checkpointed
        part("moe x L (capacity 2, recomputed in the backward: model.checkpoint_moe)",
             stack(lambda l, h: h + checkpointed(l.block_sparse_moe, l.block_sparse_moe)(l.post_attention_layernorm(h))[0]),
             (model, x), len(layers))
        from vantage_core.model.router import route

        def router_stack(lyr, h):
            r = route(lyr.block_sparse_moe.gate, h.reshape(-1, D), lyr.block_sparse_moe.k)
            return h + (r.aux_loss + r.z_loss).astype(h.dtype) + r.scores.sum().astype(h.dtype) * 0
        part("router x L", stack(router_stack), (model, x), len(layers))
        w = model.lm_head.weight
        hN = x.reshape(-1, D)

        def head_loss(w, h):
            return cross_entropy(model.model.norm(h) @ w.T, targets).mean()
        part("lm head + CE (fused)", mx.compile(mx.value_and_grad(head_loss, argnums=(0, 1))), (w, hN))

        def head_chunked(w, h):
            return chunked_cross_entropy(model.model.norm(h), w, mx.stop_gradient(targets), 4096).mean()
        part("lm head + CE (chunks of 4096 rows)", mx.compile(mx.value_and_grad(head_chunked, argnums=(0, 1))), (w, hN))
        emb = model.model.embed_tokens.weight

        def emb_loss(e):
            return e[inputs].astype(mx.float32).square().mean()
        part("embedding", mx.compile(mx.value_and_grad(emb_loss)), (emb,))
        grads = tree_map(lambda v: (mx.random.normal(v.shape) * 1e-3).astype(v.dtype), params)
        mx.eval(grads)
        state = [model.state, opt.state]
        def update(g):
            opt.update(model, g)
            return [v for _, v in tree_flatten(model.parameters())] + [v for _, v in tree_flatten(opt.state)]
        part("adamw update (compiled alone)", mx.compile(update, inputs=state, outputs=state), (grads,))

        def clip(g):
            norm = mx.sqrt(sum(mx.sum(mx.square(v.astype(mx.float32))) for _, v in tree_flatten(g)))
            return tree_map(lambda v: v * mx.minimum(1.0, 1.0 / (norm + 1e-6)).astype(v.dtype), g)
        part("clip (norm + scale)", mx.compile(clip), (grads,))
        n_params = sum(v.size for _, v in tree_flatten(params))
        say(f"# parameters {n_params / 1e6:.1f}M; AdamW reads/writes ~{n_params * (2 * 4 + 3 * 2) / 1e9:.1f} GB per update")
        del model, opt, grads, params
        mx.clear_cache()
    names = dict(rows)
    parts = ["attention x L (SDPA)", "moe x L (capacity 2)", "lm head + CE (fused)", "embedding",
             "adamw update (compiled alone)", "clip (norm + scale)"]
    s = sum(names.get(n, 0.0) for n in parts)
    say(f"parts_sum_ms={s:.1f} full_step_ms={names.get('full step (capacity 2)', float('nan')):.1f}")


if __name__ == "__main__":
    main()
