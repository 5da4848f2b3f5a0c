"""More model/training keys and their observable effect, each checked against a value
computed independently in the test (numpy): router z-loss, top-k, sizes, the AdamW keys,
gradient clipping, seed, max_seq_length and the logging/eval/save cadence."""

import functools
import json
import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from trainer_fixtures import batch, losses, tiny_cfg, tiny_data
from vantage_core.model import MoETransformer, count_parameters
from vantage_core.train.optim import lr_at, make_optimizer
from vantage_core.eval.evaluate import evaluate
from vantage_core.model import build_model
from vantage_core.train.trainer import Batcher, make_batch, make_train_step, train, value_and_grad_mp


def _model(cfg, seed=0):
    mx.random.seed(seed)
    m = build_model(cfg)
    m.train()
    return m


def _np_tree(tree):
    return {k: np.array(v, dtype=np.float64) for k, v in tree_flatten(tree)}


def _global_norm(grads):
    return math.sqrt(sum(float((g ** 2).sum()) for g in _np_tree(grads).values()))


def _logsumexp(a):
    m = a.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=-1, keepdims=True)))[..., 0]


def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _silu(a):
    return a / (1.0 + np.exp(-a))


# --------------------------------------------------------------------------- model keys

def _gate_inputs(m, inp, monkeypatch):
    """The input each MoE layer's router sees ([N, D] per layer, in layer order)."""
    import vantage_core.model.block as B
    seen = []
    real = B.route

    def spy(gate, x, k):
        seen.append(x)
        return real(gate, x, k)

    monkeypatch.setattr(B, "route", spy)
    try:
        mx.eval(m(inp)[0], *seen)
    finally:
        monkeypatch.setattr(B, "route", real)
    return [np.array(x, dtype=np.float64) for x in seen]


def test_router_z_loss_coef_adds_coef_times_z_and_changes_the_router_gradient(monkeypatch):
    inp, pos, tgt, w, _ = batch(4)
    res = {}
    for coef in (0.0, 0.01):
        cfg = tiny_cfg(model={"router_z_loss_coef": coef})
        m = _model(cfg)
        micro, _, _ = make_train_step(m, make_optimizer(cfg.training), cfg)   # the trainer's (compiled) path
        loss, (ce, aux, z, *_), g = micro(inp, pos, tgt, w, mx.array(1.0))
        mx.eval(loss, g)
        res[coef] = (float(loss), float(ce), float(aux), float(z), _np_tree(g))
    gates = [np.array(layer.block_sparse_moe.gate.weight, dtype=np.float64) for layer in m.layers]
    xs = _gate_inputs(m, inp, monkeypatch)
    assert len(xs) == len(gates) == 2
    # Independent z-loss: mean over layers of mean over tokens of logsumexp(router logits)^2.
    lse = [_logsumexp(x @ W.T) for x, W in zip(xs, gates)]
    z_np = float(np.mean([np.mean(s ** 2) for s in lse]))
    assert res[0.0][3] == pytest.approx(z_np, rel=1e-5) and res[0.01][3] == pytest.approx(z_np, rel=1e-5)
    assert res[0.01][1] == res[0.0][1]                                   # same LM loss
    assert res[0.01][2] == res[0.0][2]                                   # same aux loss
    assert res[0.01][0] - res[0.0][0] == pytest.approx(0.01 * z_np, rel=1e-3)
    # The last router's weight reaches the loss through its own z term only once the LM and
    # aux paths are equal: the gradients differ by exactly coef * dz/dW_last.
    x, W, s = xs[-1], gates[-1], lse[-1]
    N, nl = x.shape[0], len(xs)
    dz = (2.0 / (nl * N)) * (s[:, None] * _softmax(x @ W.T)).T @ x           # [E, D]
    key = f"model.layers.{nl - 1}.block_sparse_moe.gate.weight"
    diff = res[0.01][4][key] - res[0.0][4][key]
    np.testing.assert_allclose(diff, 0.01 * dz, atol=1e-4 * np.abs(0.01 * dz).max())
    assert np.abs(0.01 * dz).max() > 1e-5
    # The first router's gradient changes too (through its own z term and the next layer's).
    k0 = "model.layers.0.block_sparse_moe.gate.weight"
    assert np.abs(res[0.01][4][k0] - res[0.0][4][k0]).max() > 1e-6


def _moe_reference(x, gate_w, wg, wu, wd, k):
    """numpy top-k MoE: softmax over the k selected router logits, SwiGLU experts."""
    logits = x @ gate_w.T                                               # [N, E]
    top = np.argsort(-logits, axis=-1)[:, :k]                           # [N, k]
    sc = _softmax(np.take_along_axis(logits, top, axis=-1))             # [N, k]
    y = np.zeros_like(x)
    for n in range(x.shape[0]):
        for j in range(k):
            e = top[n, j]
            h = _silu(x[n] @ wg[e].T) * (x[n] @ wu[e].T)
            y[n] += sc[n, j] * (h @ wd[e].T)
    return y, np.bincount(top.reshape(-1), minlength=gate_w.shape[0])


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("training", [True, False])   # capacity path (no limit) / gather path
def test_num_experts_per_token_is_the_top_k_of_the_moe_layer(k, training):
    from vantage_core.model.block import SparseMoE
    cfg = tiny_cfg(model={"num_experts_per_token": k, "expert_capacity": 0.0}).model
    mx.random.seed(0)
    moe = SparseMoE(cfg)
    moe.train(training)
    x = mx.random.normal((2, 24, cfg.hidden_size))
    y, st = moe(x)
    mlp = moe.experts.switch_mlp
    p = [np.array(a, dtype=np.float64) for a in (moe.gate.weight, mlp.gate_proj.weight, mlp.up_proj.weight,
                                                 mlp.down_proj.weight)]
    y_ref, counts_ref = _moe_reference(np.array(x, dtype=np.float64).reshape(-1, cfg.hidden_size), *p, k)
    np.testing.assert_allclose(np.array(y).reshape(-1, cfg.hidden_size), y_ref, atol=2e-5)
    np.testing.assert_array_equal(np.array(st["counts"]), counts_ref)   # k assignments per token
    assert counts_ref.sum() == 48 * k
    assert float(st["dropped"]) == 0.0


def test_num_experts_per_token_changes_the_model_output_with_the_same_weights():
    inp, *_ = batch(4)
    out = {}
    ref = None
    for k in (1, 2):
        m = _model(tiny_cfg(model={"num_experts_per_token": k, "expert_capacity": 0.0}))
        if ref is None:
            ref = m.parameters()
        m.update(ref)                                  # the same weights (k does not change shapes)
        m.eval()
        logits, st = m(inp)
        out[k] = (np.array(logits), np.array(st["counts"]))
    B, L = inp.shape
    for k in (1, 2):
        np.testing.assert_array_equal(out[k][1].sum(axis=1), [B * L * k] * 2)   # per layer: k per token
    assert np.abs(out[1][0] - out[2][0]).max() > 1e-3


@pytest.mark.parametrize("k", [1, 2])
def test_num_experts_per_token_in_the_trainers_expert_report(k):
    cfg = tiny_cfg(model={"num_experts_per_token": k}, training={"num_train_steps": 1, "eval_steps": 1000})
    _, _, idx = _first_step_reference(cfg)
    d = tiny_data()
    B, Lpad = make_batch([d.train[i] for i in idx], 384, d.tokenizer.pad_id)[0].shape
    (h,) = train(cfg, d, [], evaluate=evaluate).train_history
    # tokens_per_expert sums the 2 layers' assignments (padding included): k per token.
    assert sum(h["expert/tokens_per_expert"]) == 2 * B * Lpad * k


def _expected_params(d, L, E, F=128, V=2048, heads=4, kv=2):
    hd = d // heads
    attn = d * heads * hd + 2 * d * kv * hd + heads * hd * d           # q, k, v, o
    per_layer = attn + d * E + E * 3 * d * F + 2 * d                    # + router, experts, 2 norms
    return V * d + L * per_layer + d + V * d                             # embed, layers, norm, lm_head


@pytest.mark.parametrize("d,L,E", [(32, 1, 2), (64, 2, 4), (96, 3, 8)])
def test_hidden_size_num_layers_num_experts_set_shapes_and_parameter_count(d, L, E):
    cfg = tiny_cfg(model={"hidden_size": d, "num_layers": L, "num_experts": E})
    m = MoETransformer(cfg.model)
    shapes = {k: v.shape for k, v in tree_flatten(m.parameters())}
    assert len(m.layers) == L
    assert {int(k.split(".")[2]) for k in shapes if k.startswith("model.layers.")} == set(range(L))
    assert shapes["model.embed_tokens.weight"] == (2048, d)
    assert shapes["lm_head.weight"] == (2048, d)
    for i in range(L):
        p = f"model.layers.{i}."
        assert shapes[p + "block_sparse_moe.gate.weight"] == (E, d)
        assert shapes[p + "block_sparse_moe.experts.switch_mlp.gate_proj.weight"] == (E, 128, d)
        assert shapes[p + "block_sparse_moe.experts.switch_mlp.up_proj.weight"] == (E, 128, d)
        assert shapes[p + "block_sparse_moe.experts.switch_mlp.down_proj.weight"] == (E, d, 128)
        assert shapes[p + "self_attn.q_proj.weight"] == (d, d)
        assert shapes[p + "self_attn.k_proj.weight"] == (d // 2, d)
        assert shapes[p + "input_layernorm.weight"] == (d,)
    total = sum(int(np.prod(s)) for s in shapes.values())
    assert total == _expected_params(d, L, E)
    assert count_parameters(cfg.model)["total"] == total
    logits, st = m(mx.zeros((1, 5), mx.int32))
    assert logits.shape == (1, 5, 2048) and st["counts"].shape == (L, E)


# --------------------------------------------------------------------------- AdamW keys

@functools.lru_cache(maxsize=1)
def _grads():
    """Two real gradients (batches 0-3 and 4-7) of the seed-0 tiny model, as numpy."""
    cfg = tiny_cfg()
    m = _model(cfg)
    out = []
    for start in (0, 4):
        inp, pos, tgt, w, _ = batch(4, start)
        _, g = value_and_grad_mp(m, cfg)(m, inp, pos, tgt, w)
        out.append(_np_tree(g))
    return out


def _to_mx(np_tree):
    from mlx.utils import tree_unflatten
    return tree_unflatten([(k, mx.array(v.astype(np.float32))) for k, v in np_tree.items()])


LR = 1e-2
OPT_BASE = {"learning_rate": LR, "lr_scheduler_type": "constant", "warmup_steps": 0, "max_grad_norm": 0.0,
            "weight_decay": 0.0}


def _run_updates(n_steps, **training):
    """n_steps updates through the trainer's compiled `apply` (clip + AdamW) with fixed
    gradients; returns (p0, [params after each step], [returned norms], optimizer, cfg)."""
    cfg = tiny_cfg(training={**OPT_BASE, **training})
    m = _model(cfg)
    p0 = _np_tree(m.parameters())
    opt = make_optimizer(cfg.training)
    _, apply, _ = make_train_step(m, opt, cfg)
    after, norms = [], []
    for g in _grads()[:n_steps]:
        norm = apply(_to_mx(g))
        mx.eval(m.parameters(), opt.state, norm)
        after.append(_np_tree(m.parameters()))
        norms.append(float(norm))
    return p0, after, norms, opt, cfg


def _adamw_reference(p0, grads, t, bias_correction, norms=None):
    """float64 AdamW (decoupled decay, as Loshchilov & Hutter) with global-norm clipping
    (by `norms[i]` when given: the trainer's own float32 norm)."""
    b1, b2, eps, wd = t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay
    p = dict(p0)
    m = {k: 0.0 for k in p}
    v = {k: 0.0 for k in p}
    out = []
    for step, g in enumerate(grads, start=1):
        lr = float(lr_at(step - 1, t))
        if t.max_grad_norm > 0:
            n = norms[step - 1] if norms else math.sqrt(sum(float((x ** 2).sum()) for x in g.values()))
            g = {k: x * min(1.0, t.max_grad_norm / (n + 1e-6)) for k, x in g.items()}
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mh, vh = (m[k] / (1 - b1 ** step), v[k] / (1 - b2 ** step)) if bias_correction else (m[k], v[k])
            p[k] = p[k] * (1 - lr * wd) - lr * mh / (np.sqrt(vh) + eps)
        out.append(dict(p))
    return out


def _max_err(a, b):
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.parametrize("wd", [0.1, 1.0])
def test_weight_decay_is_decoupled_p_times_1_minus_lr_wd(wd):
    p0, (a0,), _, _, _ = _run_updates(1, weight_decay=0.0)
    _, (a1,), _, opt, cfg = _run_updates(1, weight_decay=wd)
    assert opt.weight_decay == wd
    # Same gradients: the only difference is the decay of the old weights, -lr*wd*p.
    for k in p0:
        np.testing.assert_allclose(a1[k] - a0[k], -LR * wd * p0[k], atol=3e-7, err_msg=k)
    assert max(float(np.abs(a1[k] - a0[k]).max()) for k in p0) > 0.5 * LR * wd   # norms' weights are 1
    (ref,) = _adamw_reference(p0, _grads()[:1], cfg.training, opt.bias_correction)
    assert _max_err(a1, ref) < 1e-6


# Each key, two values: both match the float64 AdamW over two steps, and the first step's
# size follows the closed form |dp| = lr*(1-b1)/sqrt(1-b2) (no bias correction) or lr (with).
@pytest.mark.parametrize("key,values", [("adam_beta1", (0.0, 0.9)), ("adam_beta2", (0.95, 0.999)),
                                        ("adam_epsilon", (1e-8, 1e-3))])
def test_adam_betas_and_epsilon_follow_the_adamw_update(key, values):
    results = {}
    for val in values:
        p0, after, _, opt, cfg = _run_updates(2, **{key: val})
        t = cfg.training
        assert getattr(t, key) == val
        ref = _adamw_reference(p0, _grads()[:2], t, opt.bias_correction)
        assert _max_err(after[0], ref[0]) < 1e-6, (key, val)
        assert _max_err(after[1], ref[1]) < 2e-6, (key, val)
        results[val] = (p0, after)
        if t.adam_epsilon < 1e-6:
            g = _grads()[0]
            step = LR if opt.bias_correction else LR * (1 - t.adam_beta1) / math.sqrt(1 - t.adam_beta2)
            for k in p0:
                big = np.sqrt(1 - t.adam_beta2) * np.abs(g[k]) > 1e-5    # eps < 1e-3 of the denominator
                np.testing.assert_allclose(np.abs(after[0][k] - p0[k])[big], step, rtol=1e-3, err_msg=k)
    lo, hi = values
    moved = max(float(np.abs(results[lo][1][1][k] - results[hi][1][1][k]).max()) for k in results[lo][0])
    assert moved > 2e-5                                     # the key changes the weights (10x the tolerance)
    if key == "adam_epsilon":
        # A large epsilon shrinks every element's update: |dp| <= lr*|m|/eps, where the first
        # moment m is (1-b1)*g, or g itself once bias-corrected.
        p0, after = results[1e-3]
        g = _grads()[0]
        m1 = 1.0 if opt.bias_correction else 0.1
        for k in p0:   # (+ float32 rounding of the weights)
            bound = LR * m1 * np.abs(g[k]) / 1e-3 * (1 + 1e-4) + 1.2e-7
            assert (np.abs(after[0][k] - p0[k]) <= bound).all(), k
        tot = {v: sum(float(np.abs(results[v][1][0][k] - p0[k]).sum()) for k in p0) for v in values}
        assert tot[1e-3] < 0.5 * tot[1e-8]


@pytest.mark.parametrize("clip", [0.0, 1e-3, 1e6])
def test_max_grad_norm_clips_the_update_and_returns_the_pre_clip_norm(clip):
    p0, (a,), (norm,), opt, cfg = _run_updates(1, max_grad_norm=clip)
    g = _grads()[0]
    # Before clipping, whatever the limit (float32 sums over 131k-element tensors: ~1e-4).
    assert norm == pytest.approx(_global_norm(_to_mx(g)), rel=5e-4)
    scale = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
    if clip == 1e-3:
        assert scale < 1e-3
    # AdamW's first moment after one step is (1 - b1) * the applied (clipped) gradient.
    m1 = {k[:-2]: v for k, v in _np_tree(opt.state).items() if k.endswith(".m")}
    assert m1.keys() == g.keys()
    for k in g:
        np.testing.assert_allclose(m1[k], 0.1 * scale * g[k], rtol=1e-5, atol=1e-12, err_msg=k)
    (ref,) = _adamw_reference(p0, [g], cfg.training, opt.bias_correction, norms=[norm])
    assert _max_err(a, ref) < 1e-6
    if clip == 1e-3:
        _, (a_free,), _, _, _ = _run_updates(1, max_grad_norm=0.0)
        moved = sum(float(np.abs(a[k] - p0[k]).sum()) for k in p0)
        moved_free = sum(float(np.abs(a_free[k] - p0[k]).sum()) for k in p0)
        assert moved < moved_free                             # every element's step is smaller


# --------------------------------------------------------------------------- whole runs

def _first_step_reference(cfg):
    """Step 1 of `train(cfg)` redone by hand: the seeded initialization, the seeded data
    order's first batch, its SQL cross-entropy and gradient norm."""
    d, t = tiny_data(), cfg.training
    mx.random.seed(t.seed)
    m = build_model(cfg)
    m.train()
    idx = Batcher(len(d.train), t.seed).next_indices(t.batch_size)
    inp, pos, tgt, w, _ = make_batch([d.train[i] for i in idx], t.max_seq_length, d.tokenizer.pad_id,
                                     t.pad_to_multiple_of)
    (_, (ce, *_)), g = value_and_grad_mp(m, cfg)(m, inp, pos, tgt, w)
    return float(ce), _global_norm(g), idx


def _run(tmp_path=None, **training):
    cfg = tiny_cfg(training={"eval_steps": 1000, **training})
    r = train(cfg, tiny_data(), [], evaluate=evaluate, output_dir=tmp_path)
    assert r.status == "completed", r.error
    return r


def test_seed_sets_initialization_and_data_order():
    ref = {s: _first_step_reference(tiny_cfg(training={"seed": s})) for s in (1, 2)}
    assert set(ref[1][2]) != set(ref[2][2])                   # another first batch
    curves = {}
    for s in (1, 2):
        r = _run(seed=s, num_train_steps=3)
        curves[s] = losses(r.train_history)
        assert curves[s][0] == pytest.approx(ref[s][0], rel=1e-5)
        assert r.train_history[0]["train/grad_norm"] == pytest.approx(ref[s][1], rel=5e-4)
    assert np.abs(curves[1] - curves[2]).min() > 1e-3


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_same_seed_same_loss_curve(dropout):
    cfg_model = {"hidden_dropout": dropout, "expert_dropout": dropout}
    runs = []
    for s in (5, 5, 6):
        cfg = tiny_cfg(training={"seed": s, "num_train_steps": 3, "eval_steps": 1000}, model=cfg_model)
        runs.append(train(cfg, tiny_data(), [], evaluate=evaluate).train_history)
    a, b, c = (losses(h) for h in runs)
    np.testing.assert_array_equal(a, b)                       # bit-identical
    assert [h["train/grad_norm"] for h in runs[0]] == [h["train/grad_norm"] for h in runs[1]]
    assert np.abs(a - c).min() > 1e-3


def test_reported_grad_norm_is_before_clipping_and_clipping_changes_the_step(tmp_path):
    ref_loss, ref_norm, _ = _first_step_reference(tiny_cfg())
    assert ref_norm > 0.1                                      # so a 1e-3 limit clips
    w = {}
    for clip in (0.0, 1e-3):
        r = _run(tmp_path / str(clip), num_train_steps=1, max_grad_norm=clip)
        (h,) = r.train_history
        assert h["train/grad_norm"] == pytest.approx(ref_norm, rel=5e-4)   # not 1e-3
        assert h["train/loss"] == pytest.approx(ref_loss, rel=1e-5)
        w[clip] = mx.load(str(tmp_path / str(clip) / "checkpoint-latest" / "model.safetensors"))
    assert max(float(mx.abs(w[0.0][k] - w[1e-3][k]).max()) for k in w[0.0]) > 1e-4


def _check_trimmed_or_skipped(L, full_ex, full_enc, ex_L, enc_L, tok, schemas):
    """Walk one split's examples prepared at 384 (nothing trimmed) next to the same split
    prepared at L; returns (trimmed, skipped) counts."""
    from vantage_core.data.schema import serialize_schema
    kept = iter(zip(ex_L, enc_L))
    cur = next(kept, None)
    n_trim = n_skip = 0
    for ex, fe in zip(full_ex, full_enc):
        schema = tok.encode(serialize_schema(schemas[ex.db_id]))
        assert fe.ids[1:1 + len(schema)] == schema                # untrimmed at 384
        rest = len(fe.ids) - 1 - len(schema)                      # question + SQL + END
        fits = L - rest - 1 >= 8                                  # room for >= 8 schema tokens
        if cur is not None and (cur[0].db_id, cur[0].question, cur[0].query) == (ex.db_id, ex.question, ex.query):
            e = cur[1]
            assert fits
            assert len(e.ids) == min(len(fe.ids), L)
            assert e.ids[len(e.ids) - rest:] == fe.ids[len(fe.ids) - rest:]   # question + SQL intact
            assert e.ids[:len(e.ids) - rest] == fe.ids[:len(e.ids) - rest]    # schema cut at its end
            assert len(e.ids) - e.sql_start == len(fe.ids) - fe.sql_start     # same SQL target
            n_trim += len(e.ids) < len(fe.ids)
            cur = next(kept, None)
        else:
            assert not fits, (ex.db_id, ex.question)
            n_skip += 1
    assert cur is None                                            # every kept example was matched
    return n_trim, n_skip


def test_max_seq_length_trims_the_schema_or_skips_the_example():
    from vantage_core.data.prepare import prepare_data
    full = tiny_data()                                  # max_seq_length 384
    assert full.skipped["too_long"] == 0 and max(len(s.ids) for s in full.train) < 384
    L = 64
    d = prepare_data(tiny_cfg(training={"max_seq_length": L}))
    tok = full.tokenizer
    assert d.tokenizer.fingerprint() == tok.fingerprint()
    tr = _check_trimmed_or_skipped(L, full.train_examples, full.train, d.train_examples, d.train, tok, full.schemas)
    va = _check_trimmed_or_skipped(L, full.valid, full.valid_encoded, d.valid, d.valid_encoded, tok, full.schemas)
    assert tr[0] > 50 and tr[1] > 20 and va[0] > 10 and va[1] > 10
    assert d.skipped["too_long"] == tr[1] + va[1]
    assert max(len(s.ids) for s in d.train + d.valid_encoded) == L
    assert all(len(p) < L for p in d.eval_prompts)
    inp, *_ = make_batch(d.train[:16], L, tok.pad_id)
    assert inp.shape[1] <= L


@pytest.fixture(scope="module")
def every_step(tmp_path_factory):
    """7 steps reporting, evaluating and saving at every step."""
    tmp = tmp_path_factory.mktemp("every")
    cfg = tiny_cfg(training={"num_train_steps": 7, "logging_steps": 1, "eval_steps": 1, "save_steps": 1,
                             "save_total_limit": 10})
    return tmp, train(cfg, tiny_data(), [], evaluate=evaluate, output_dir=tmp)


@pytest.mark.parametrize("log,ev,save", [(3, 2, 3), (2, 5, 4)])
def test_logging_eval_and_save_steps(tmp_path, every_step, log, ev, save):
    ref_dir, ref = every_step
    N = 7
    cfg = tiny_cfg(training={"num_train_steps": N, "logging_steps": log, "eval_steps": ev, "save_steps": save,
                             "save_total_limit": 10})
    r = train(cfg, tiny_data(), [], evaluate=evaluate, output_dir=tmp_path)
    assert r.status == "completed"
    want_log = [s for s in range(1, N + 1) if s % log == 0 or s == N]
    want_eval = [s for s in range(1, N + 1) if s % ev == 0 or s == N]
    want_ck = {f"checkpoint-{s}" for s in range(1, N + 1) if s % save == 0}
    assert [h["step"] for h in r.train_history] == want_log
    assert [h["step"] for h in r.eval_history] == want_eval
    got_ck = {p.name for p in tmp_path.glob("checkpoint-*") if p.name.split("-")[1].isdigit()}
    assert got_ck == want_ck
    # The cadence changes what is reported, never the training: the values are those of
    # the every-step run at the same steps, and so are the saved weights.
    ref_train = {h["step"]: h for h in ref.train_history}
    ref_eval = {h["step"]: h for h in ref.eval_history}
    for h in r.train_history:
        assert h["train/loss"] == ref_train[h["step"]]["train/loss"]
        assert h["train/grad_norm"] == ref_train[h["step"]]["train/grad_norm"]
    for h in r.eval_history:
        assert h["eval/loss"] == ref_eval[h["step"]]["eval/loss"]
    for name in want_ck | {"checkpoint-latest"}:
        st = json.loads((tmp_path / name / "trainer_state.json").read_text())
        step = N if name == "checkpoint-latest" else int(name.split("-")[1])
        assert st["step"] == step
        a = mx.load(str(tmp_path / name / "model.safetensors"))
        b = mx.load(str(ref_dir / f"checkpoint-{step}" / "model.safetensors"))
        assert all(bool(mx.array_equal(a[k], b[k])) for k in b)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs if x["kind"] == "train"] == want_log
    assert [x["step"] for x in recs if x["kind"] == "eval"] == want_eval
