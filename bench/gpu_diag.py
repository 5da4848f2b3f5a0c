"""GPU smoke test of the Spider config: where does time go, and does every piece run?"""
import time, traceback
import mlx.core as mx
from vantage_core.config import load_config
from vantage_core.data.prepare import prepare_data
from vantage_core.eval.evaluate import evaluate
from vantage_core.model import build_model
from vantage_core.train.trainer import train
from vantage_core.eval.generate import generate_greedy

def step(name, fn):
    t = time.time()
    try:
        r = fn(); mx.synchronize() if hasattr(mx, "synchronize") else None
        print(f"OK   {name}: {time.time()-t:.2f}s {r if r is not None else ''}", flush=True)
    except Exception as e:
        print(f"FAIL {name}: {time.time()-t:.2f}s {type(e).__name__}: {e}", flush=True)
        traceback.print_exc(limit=6)

cfg = load_config("configs/spider_gpu.yaml", {"training": {"num_train_steps": 60, "eval_steps": 60, "logging_steps": 20},
                                               "data": {"max_eval_examples": 128}})
data = prepare_data(cfg)
print("data", data.describe()["train_examples"], len(data.valid), flush=True)
model = build_model(cfg); model.eval()
tok = data.tokenizer
P = data.eval_prompts
step("rope single offset", lambda: mx.eval(mx.fast.rope(mx.random.normal((128, 8, 1, 64)), 64, traditional=False, base=1e4, scale=1.0, offset=600)))
step("greedy b32 n8", lambda: len(generate_greedy(model, P[:32], pad_id=tok.pad_id, end_id=tok.end_id, max_new_tokens=8, batch_size=32)))
step("greedy b128 n8", lambda: len(generate_greedy(model, P[:128], pad_id=tok.pad_id, end_id=tok.end_id, max_new_tokens=8, batch_size=128)))
step("greedy b128 n160", lambda: len(generate_greedy(model, P[:128], pad_id=tok.pad_id, end_id=tok.end_id, max_new_tokens=160, batch_size=128)))
step("evaluate", lambda: {k: v for k, v in evaluate(model, cfg, data).items() if k != "predictions"})
class P_:
    def on_train_report(self, r): print("  step", r["step"], "loss %.3f" % r["train/loss"], "tok/s %.0f" % r["train/tokens_per_sec"], "peak %.1f GiB" % (r["system/peak_memory_bytes"] / 2**30), flush=True)
    def on_eval_report(self, r): print("  eval", r, flush=True)
step("train 60 + eval", lambda: train(cfg, data, [P_()], evaluate=evaluate).status)
cfg2 = cfg.replace(training={"compile": False})
step("train 60 no compile", lambda: train(cfg2, data, [P_()], evaluate=evaluate).status)
