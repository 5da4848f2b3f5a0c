"""Generation + scoring throughput with the tiny model (the `vantage-eval --checkpoint` path).

Trains the tiny config briefly on the synthetic data (so outputs end at the end token like a
real model's), then times batched greedy decoding and batched beam search (KV cache), each
followed by full scoring, on the validation split.

    python bench/eval_generate.py [--steps 150] [--examples 128]

`--compare-cache` instead times the decode paths of vantage_core/eval/generate.py side by side
on the same prompts (growing cache, static cache, static cache + mx.compile), checks that they
give the same tokens, and prints generated tokens/s of each and the ratio to the growing cache.
It runs on whatever device MLX uses (the CPU, or the GPU of a CUDA build):

    python bench/eval_generate.py --compare-cache
    python bench/eval_generate.py --compare-cache --config configs/spider_gpu.yaml --random-init \\
        --set data.source=synthetic --examples 128 --batch-size 32 --max-new-tokens 160
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time

from vantage_core.config import load_config  # first: picks the BLAS before mlx loads (Linux CPU)
from vantage_core.data.prepare import prepare_data
from vantage_core.eval.evaluate import generate_sql, load_checkpoint_model
from vantage_core.sql.execution import valid_sql
from vantage_core.eval.metrics import score_examples
from vantage_core.eval.evaluate import evaluate
from vantage_core.train.trainer import train

import mlx.core as mx  # noqa: E402

PATHS = {"growing": dict(static_cache=False, compiled=False),
         "static": dict(static_cache=True, compiled=False),
         "compiled": dict(static_cache=True, compiled=True)}


def _model_and_data(a):
    overrides = list(a.set)
    if a.config == "tiny":
        overrides += [f"training.num_train_steps={a.steps}", f"training.eval_steps={a.steps}",
                      "data.max_eval_examples=16"]
    cfg = load_config(a.config, overrides)
    data = prepare_data(cfg)
    if a.random_init:
        from vantage_core.model import build_model
        mx.random.seed(0)
        model = build_model(cfg)
        mx.eval(model.parameters())
        model.eval()
        return model, cfg, data.tokenizer, data
    with tempfile.TemporaryDirectory() as d:
        train(cfg, data, [], evaluate=evaluate, output_dir=d)
        model, cfg, tok = load_checkpoint_model(f"{d}/checkpoint-latest")
    return model, cfg, tok, data


def compare_cache(a):
    from vantage_core.eval.generate import generate_beam_batched, generate_greedy

    model, cfg, tok, data = _model_and_data(a)
    prompts = [e.ids[: e.sql_start] for e in data.valid_encoded[: a.examples]]
    max_new = a.max_new_tokens or cfg.eval.max_new_tokens
    lens = sorted(len(p) for p in prompts)
    print(f"device {mx.default_device()} | mlx {mx.__version__} | {platform.machine()} | "
          f"config {a.config}{' (random init)' if a.random_init else ''} | {len(prompts)} prompts, "
          f"length {lens[0]}..{lens[-1]} | batch {a.batch_size} | max_new_tokens {max_new} | "
          f"best of {a.repeats}", flush=True)
    rows = []
    for beams in a.beams:
        outs, times = {}, {}
        for name in a.paths:
            kw = PATHS[name]
            ts = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                if beams <= 1:
                    o = generate_greedy(model, prompts, pad_id=tok.pad_id, end_id=tok.end_id,
                                        max_new_tokens=max_new, batch_size=a.batch_size, **kw)
                else:
                    o = generate_beam_batched(model, prompts, pad_id=tok.pad_id, end_id=tok.end_id,
                                              num_beams=beams, max_new_tokens=max_new,
                                              batch_size=max(1, a.batch_size // beams), **kw)
                    o = [[ids for ids, _ in c] for c in o]
                mx.synchronize()
                ts.append(time.perf_counter() - t0)
            outs[name], times[name] = o, ts
        ref = outs[a.paths[0]]
        gen = sum(len(o) if beams <= 1 else len(o[0]) if o else 0 for o in ref)
        for name in a.paths:
            best = min(times[name])
            same = "yes" if outs[name] == ref else "NO"
            rows.append((beams, name, times[name][0], best, gen / best,
                         min(times[a.paths[0]]) / best, same))
            print(f"  beams {beams} {name}: first {times[name][0]:.2f}s best {best:.2f}s", flush=True)
    base = a.paths[0]
    print(f"\ntokens = generated tokens of the top output (ends excluded), same for every path; "
          f"x = speed-up over '{base}'")
    print(f"| decoding | path | first s | best s | tokens/s | x {base} | same tokens |")
    print("| --- | --- | ---: | ---: | ---: | ---: | :---: |")
    for beams, name, first, best, tps, ratio, same in rows:
        dec = "greedy" if beams <= 1 else f"beam {beams}"
        print(f"| {dec} | {name} | {first:.2f} | {best:.2f} | {tps:.0f} | {ratio:.2f} | {same} |")
    if any(r[-1] != "yes" for r in rows):
        print("\nNOTE: the paths disagree. The static paths attend over the padded cache length, so "
              "float sums differ in the last bits; on an NVIDIA GPU float32 matmuls also run in TF32 "
              "by default (~1e-3 relative). Near-tied logits (an untrained model, beam candidates) "
              "then pick other tokens. Run with MLX_ENABLE_TF32=0 (and a trained model) to compare "
              "at full precision.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="training steps (tiny config)")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--compare-cache", action="store_true",
                    help="time the growing / static / compiled decode paths side by side")
    ap.add_argument("--config", default="tiny", help="(--compare-cache) config name or YAML path")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                    help="(--compare-cache) config overrides, e.g. data.source=synthetic")
    ap.add_argument("--random-init", action="store_true",
                    help="(--compare-cache) untrained weights: no training, outputs rarely end early")
    ap.add_argument("--batch-size", type=int, default=32, help="(--compare-cache) prompts per batch")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="(--compare-cache) default: eval.max_new_tokens")
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 4], help="(--compare-cache) 1 = greedy")
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS),
                    help="(--compare-cache) the first is the baseline")
    ap.add_argument("--repeats", type=int, default=2, help="(--compare-cache) runs per path; best is reported")
    a = ap.parse_args()
    if a.compare_cache:
        return compare_cache(a)
    cfg = load_config("tiny", {"training": {"num_train_steps": a.steps, "eval_steps": a.steps},
                               "data": {"max_eval_examples": 16}})
    data = prepare_data(cfg)
    with tempfile.TemporaryDirectory() as d:
        train(cfg, data, [], evaluate=evaluate, output_dir=d)
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
