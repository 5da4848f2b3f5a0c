"""Where does the Spider model fail? Train on the GPU, then compare exact match on training
questions (seen schemas) with validation (unseen schemas) and print sample predictions."""
import os, sys, time
from vantage_core.config import load_config
from vantage_core.data.prepare import prepare_data
from vantage_core.eval.evaluate import generate_sql
from vantage_core.eval.scoring import quick_scores
from vantage_core.eval.evaluate import evaluate
from vantage_core.train.trainer import train

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
out = os.environ.get("OUT", "/tmp")
cfg = load_config("configs/spider_gpu.yaml", {"training": {"num_train_steps": steps, "eval_steps": steps // 3},
                                               "data": {"max_eval_examples": 64}})
data = prepare_data(cfg)

class P:
    def on_train_report(self, r):
        if r["step"] % 250 == 0:
            print("step", r["step"], "loss %.3f" % r["train/loss"], "tok/s %.0f" % r["train/tokens_per_sec"], flush=True)
    def on_eval_report(self, r):
        print("eval", {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)

t = time.time()
res = train(cfg, data, [P()], evaluate=evaluate, output_dir="/tmp/evrun")
print("train time %.0fs status %s" % (time.time() - t, res.status), flush=True)
from vantage_core.eval.evaluate import load_checkpoint_model
model, _, tok = load_checkpoint_model("/tmp/evrun/checkpoint-latest")
tr = data.train_examples[:64]
prompts = [e.ids[: e.sql_start] for e in data.train[:64]]
g = generate_sql(model, tok, prompts, max_new_tokens=160, batch_size=32)
em, valid = quick_scores(tr, g.preds, data.schemas, data.splits)
print(f"TRAIN questions (seen schemas): exact match {em:.3f}, valid SQL {valid:.3f}", flush=True)
g2 = generate_sql(model, tok, data.eval_prompts, max_new_tokens=160, batch_size=32)
em2, valid2 = quick_scores(data.eval_examples, g2.preds, data.schemas, data.splits)
print(f"VALIDATION questions (unseen schemas): exact match {em2:.3f}, valid SQL {valid2:.3f}", flush=True)
for e, p in list(zip(data.eval_examples, g2.preds))[:6]:
    print("Q:", e.question, "\n  gold:", e.query, "\n  pred:", p)
os.system(f"cp /tmp/evrun/metrics.jsonl {out}/metrics.jsonl")
