"""The guide's troubleshooting detectors (pure functions) and the memory prediction."""

import logging

import pytest

from vantage_core.config import load_config
from vantage_core.model.memory import GiB, check_fits, predict_memory
from vantage_core.errors import MemoryBudgetError
from vantage_core.train.diagnose import DiagnoseCallback, diagnose


def _train(losses=None, norms=None, util=None):
    n = len(losses or norms or util)
    return [{"step": (i + 1) * 10, "train/loss": (losses or [2.0] * n)[i],
             "train/grad_norm": (norms or [1.0] * n)[i], "expert/utilization": (util or [1.0] * n)[i]}
            for i in range(n)]


def test_healthy_run_has_no_findings():
    assert diagnose(_train(losses=[3.0 - 0.1 * i for i in range(20)]),
                    [{"step": 100, "eval/loss": 2.5}, {"step": 200, "eval/loss": 2.2}]) == []


def test_expert_collapse():
    f = diagnose(_train(util=[1.0, 0.75, 0.5, 0.25, 0.25, 1.0]))
    assert [(x.kind, x.step) for x in f] == [("expert_collapse", 40)]
    assert "router_aux_loss_coef" in f[0].remedy and "25%" in f[0].evidence


def test_loss_spike_and_exploding_grad_norm():
    losses = [2.0] * 8 + [5.0] + [2.0] * 3
    norms = [1.0] * 8 + [40.0] + [1.0] * 3
    kinds = {(x.kind, x.step) for x in diagnose(_train(losses=losses, norms=norms))}
    assert kinds == {("loss_spike", 90), ("exploding_grad_norm", 90)}


def test_overfitting():
    train = _train(losses=[3.0 - 0.1 * i for i in range(20)])
    evals = [{"step": 50, "eval/loss": 2.0}, {"step": 100, "eval/loss": 1.8},
             {"step": 150, "eval/loss": 2.0}, {"step": 200, "eval/loss": 2.3}]
    f = diagnose(train, evals)
    assert [(x.kind, x.step) for x in f] == [("overfitting", 200)]
    assert "weight_decay" in f[0].remedy


def test_callback_logs_each_finding_once(caplog):
    cb = DiagnoseCallback()
    with caplog.at_level(logging.WARNING, logger="vantage.diagnose"):
        for r in _train(util=[1.0, 0.25, 0.25, 0.25]):
            cb.on_train_report(r)
    assert len(cb.findings) == 1 and len([r for r in caplog.records if "Expert collapse" in r.message]) == 1


def test_memory_prediction_parts_and_remedies():
    cfg = load_config("small")
    p = predict_memory(cfg, fused_attention=False)
    assert p["total_params"] == pytest.approx(2.02e9, rel=0.01)
    assert p["optimizer"] == 8 * p["total_params"] and p["gradients"] == 4 * p["total_params"]
    gc = predict_memory(cfg.replace(training={"gradient_checkpointing": True}), fused_attention=False)
    assert gc["activations"] < p["activations"] / 5 and gc["peak"] < p["peak"]
    half = predict_memory(cfg.replace(training={"batch_size": 16}), fused_attention=False)
    assert half["activations"] == pytest.approx(p["activations"] / 2, rel=1e-6)
    tiny = load_config("tiny")
    check_fits(tiny, limit_bytes=4 * GiB)
    with pytest.raises(MemoryBudgetError) as e:
        check_fits(tiny.replace(training={"batch_size": 512}), limit_bytes=1 * GiB)
    msg = str(e.value)
    assert "\n" not in msg and "> available 1.0 GiB" in msg
    for remedy in ("batch_size=256", "gradient_accumulation_steps=2", "gradient_checkpointing=true",
                   "mixed_precision=bf16"):
        assert remedy in msg


@pytest.mark.parametrize("impl", ["gather", "sorted"])
def test_exact_size_moe_paths_predict_k_rows_per_token(impl):
    # small: 16 experts top-2 at capacity 1.25 -> 2.5 expert rows per token; exact paths: 2.
    cfg = load_config("small")
    cap = predict_memory(cfg, fused_attention=False)
    exact = predict_memory(cfg.replace(model={"moe_impl": impl}), fused_attention=False)
    no_limit = predict_memory(cfg.replace(model={"expert_capacity": 0.0}), fused_attention=False)
    assert exact["activations"] < cap["activations"] < no_limit["activations"]
    assert exact["weights"] == cap["weights"]


def test_prediction_bounds_the_measured_tiny_peak():
    """The prediction (all sequences at max_seq_length) is an upper bound of the measured
    peak of a real tiny training step, and not absurdly loose."""
    import mlx.core as mx
    from trainer_fixtures import tiny_cfg, tiny_data
    from vantage_core.model import build_model
    from vantage_core.train.trainer import make_batch, value_and_grad_mp
    cfg = tiny_cfg(training={"batch_size": 8, "max_seq_length": 256})
    d = tiny_data()
    seqs = sorted(d.train, key=lambda s: -len(s.ids))[:8]
    inp, pos, tgt, w, _ = make_batch(seqs, 256, d.tokenizer.pad_id)
    full = cfg.replace(training={"max_seq_length": inp.shape[1]})
    m = build_model(full)
    m.train()
    fn = value_and_grad_mp(m, full)
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    (loss, _), g = fn(m, inp, pos, tgt, w)
    mx.eval(loss, g)
    from mlx.utils import tree_flatten
    n_params = sum(v.size for _, v in tree_flatten(m.parameters()))
    # + what the step does not allocate here: fp32 weights, gradients' AdamW moments.
    measured = mx.get_peak_memory() - base + 16 * n_params
    pred = predict_memory(full, fused_attention=False)["peak"]
    print(f"tiny step: measured {measured / 2**20:.1f} MiB, predicted {pred / 2**20:.1f} MiB")
    assert measured <= pred <= 4 * measured


def test_progress_bar_shows_steps_loss_lr_and_tokens_per_second():
    import io

    from rich.console import Console

    from vantage_core.train.callbacks import ProgressBar
    buf = io.StringIO()
    bar = ProgressBar(10, start_step=2, enabled=True,
                      console=Console(file=buf, force_terminal=True, width=160, color_system=None))
    bar.on_train_report({"step": 3, "train/loss": 1.2345, "train/learning_rate": 1e-3,
                         "train/tokens_per_sec": 12345.6})
    bar.close()
    out = buf.getvalue()
    assert "3/10" in out and "loss 1.2345" in out and "lr 1.00e-03" in out and "12,346 tok/s" in out
    assert ProgressBar(10, enabled=False).progress is None     # off (e.g. not a TTY, in sweeps)
