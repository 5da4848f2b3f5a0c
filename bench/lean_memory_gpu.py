"""Measured vs predicted peak of a few training steps of a config (default configs/medium_lean.yaml)
at its batch settings, on random tokens (every position a loss position), through the trainer's
own step pieces (make_train_step, accumulation as train() does it). Usage:
python bench/lean_memory_gpu.py [CONFIG] [STEPS]"""

import json
import sys
import time

import mlx.core as mx
from mlx.utils import tree_map

from vantage_core.config import load_config
from vantage_core.model import build_model
from vantage_core.model.memory import predict_memory
from vantage_core.train.optim import make_optimizer
from vantage_core.train.trainer import make_train_step, to_master_dtype

path = sys.argv[1] if len(sys.argv) > 1 else "configs/medium_lean.yaml"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
cfg = load_config(path)
t = cfg.training
pred = predict_memory(cfg)
print("device", mx.default_device(), "predicted", {k: (round(v / 2**30, 2) if isinstance(v, int) and v > 2**20 else v)
                                                   for k, v in pred.items()}, flush=True)
t0 = time.time()
mx.random.seed(0)
model = build_model(cfg)
to_master_dtype(model, cfg)
model.train()
opt = make_optimizer(t)
micro, apply, _ = make_train_step(model, opt, cfg)
B, L = t.batch_size, t.max_seq_length
print(f"built in {time.time() - t0:.0f}s", flush=True)
mx.clear_cache()
mx.reset_peak_memory()
out = []
for s in range(steps):
    t1 = time.time()
    acc, losses = None, []
    for _ in range(t.gradient_accumulation_steps):
        inp = mx.random.randint(0, cfg.model.vocab_size, (B, L), dtype=mx.int32)
        tgt = mx.random.randint(0, cfg.model.vocab_size, (B * L,), dtype=mx.int32)
        pos = mx.arange(B * L, dtype=mx.int32)
        w = mx.ones((B * L,), dtype=mx.float32)
        loss, aux, grads = micro(inp, pos, tgt, w, mx.array(1.0 / t.gradient_accumulation_steps))
        acc = grads if acc is None else tree_map(mx.add, acc, grads)
        mx.eval(acc, loss)
        del grads
        losses.append(loss.item())
    norm = apply(acc)
    mx.eval(model.parameters(), opt.state, norm)
    del acc
    rec = {"step": s + 1, "loss": sum(losses) / len(losses), "step_s": round(time.time() - t1, 1),
           "peak_gib": round(mx.get_peak_memory() / 2**30, 2), "predicted_gib": round(pred["peak"] / 2**30, 2)}
    out.append(rec)
    print(json.dumps(rec), flush=True)
print("RESULT", json.dumps({"config": path, "measured_peak_gib": out[-1]["peak_gib"],
                            "predicted_peak_gib": round(pred["peak"] / 2**30, 2),
                            "ratio": round(out[-1]["peak_gib"] / (pred["peak"] / 2**30), 3), "steps": out}))
