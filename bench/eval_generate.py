"""Generation + scoring throughput with the tiny model (the `vantage-eval --checkpoint` path).

Trains the tiny config briefly on the synthetic data (so outputs end at the end token like a
real model's), then times batched greedy decoding and batched beam search (KV cache), each
followed by full scoring, on the validation split.

    python bench/eval_generate.py [--steps 150] [--examples 128]
"""
from __future__ import annotations

import argparse
import tempfile
import time

from vantage_core.config import load_config
from vantage_core.data.prepare import prepare_data
from vantage_core.eval.evaluate import generate_sql, load_checkpoint_model
from vantage_core.eval.execution import valid_sql
from vantage_core.eval.metrics import score_examples
from vantage_core.train.trainer import train


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--examples", type=int, default=128)
    a = ap.parse_args()
    cfg = load_config("tiny", {"training": {"num_train_steps": a.steps, "eval_steps": a.steps},
                               "data": {"max_eval_examples": 16}})
    data = prepare_data(cfg)
    with tempfile.TemporaryDirectory() as d:
        train(cfg, data, [], output_dir=d)
        model, cfg, tok = load_checkpoint_model(f"{d}/checkpoint-latest")
    ex = data.valid[: a.examples]
    prompts = [e.ids[: e.sql_start] for e in data.valid_encoded[: a.examples]]
    golds = [(e.query, e.db_id) for e in ex]
    rows = []
    for beams in (1, 4):
        t0 = time.perf_counter()
        g = generate_sql(model, tok, prompts, num_beams=beams, max_new_tokens=cfg.eval.max_new_tokens,
                         batch_size=64, validator=(lambda i, s: valid_sql(s, ex[i].db_path, data.schemas[ex[i].db_id])[0])
                         if beams > 1 else None)
        t1 = time.perf_counter()
        verdicts, summary = score_examples(golds, g.preds, data.schemas, None)
        t2 = time.perf_counter()
        em = sum(v["exact_match"] for v in verdicts) / len(verdicts)
        rows.append((beams, len(ex), t1 - t0, t2 - t0, len(ex) / (t2 - t0), em))
    print("| decoding | examples | generate s | generate+score s | examples/s | exact match |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for beams, n, tg, tt, eps, em in rows:
        name = "greedy (batched)" if beams == 1 else f"beam {beams} (batched, first valid candidate)"
        print(f"| {name} | {n} | {tg:.2f} | {tt:.2f} | {eps:.1f} | {em:.3f} |")


if __name__ == "__main__":
    main()
