"""Does a data recipe teach the model to copy schema names? A short from-scratch run per
recipe on Spider, then on the validation split (unseen databases): exact match, valid SQL,
eval loss and where the written table names come from (own schema / training schemas only /
invented; `vantage_core.eval.scoring.table_name_sources`), an early signal of copying.

    python bench/spider_copy_probe.py --steps 300 --recipes baseline,novel4,novel4-only
    python bench/spider_copy_probe.py --config configs/spider_gpu.yaml --steps 1200   # on the GPU

Recipes are `--set` overrides on the config (RECIPES below); results print as one table.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

from vantage_core.blas import load_openblas

load_openblas()

NOVEL = {"data.schema_perturbation_prob": 1.0, "data.schema_rename_style": "novel",
         "data.schema_rename_table_fraction": 1.0, "data.schema_rename_column_fraction": 1.0}
RECIPES = {
    "baseline": {},
    "novel4": {**NOVEL, "data.schema_perturbation_copies": 4},
    "novel4-only": {**NOVEL, "data.schema_perturbation_copies": 4, "data.schema_perturbation_keep_original": False},
}
# A CPU-sized proxy of configs/spider_gpu.yaml (same data, smaller model).
CPU_PROXY = {"model.hidden_size": 256, "model.num_layers": 4, "model.num_experts": 4,
             "model.intermediate_size": 512, "model.num_attention_heads": 4, "model.num_key_value_heads": 2,
             "model.vocab_size": 2048, "training.batch_size": 16, "training.mixed_precision": "fp32",
             "training.learning_rate": 2e-3, "data.max_eval_examples": 96, "eval.max_new_tokens": 96}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/spider_gpu.yaml", help="base config (default: spider_gpu.yaml)")
    p.add_argument("--data_dir", default="spider:../shared/data/spider", help="Spider source")
    p.add_argument("--steps", type=int, default=300, help="training steps per recipe")
    p.add_argument("--recipes", default="baseline,novel4,novel4-only", help=f"comma list of {', '.join(RECIPES)}")
    p.add_argument("--cpu-proxy", action="store_true", help="shrink the model for this CPU (see CPU_PROXY)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from vantage_core.config import load_config
    from vantage_core.data.prepare import prepare_data
    from vantage_core.eval.evaluate import load_checkpoint_model
    from vantage_core.eval.scoring import table_name_sources
    from vantage_core.eval.evaluate import evaluate
    from vantage_core.train.trainer import train

    rows = []
    for name in a.recipes.split(","):
        over = {"data.source": a.data_dir, "training.num_train_steps": a.steps, "training.eval_steps": a.steps,
                "training.warmup_steps": max(1, a.steps // 10), **(CPU_PROXY if a.cpu_proxy else {}), **RECIPES[name]}
        cfg = load_config(a.config, [f"{k}={v}" for k, v in over.items()])
        t0 = time.perf_counter()
        data = prepare_data(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            res = train(cfg, data, [], evaluate=evaluate, output_dir=tmp)
            model, _cfg, _tok = load_checkpoint_model(f"{tmp}/checkpoint-latest")
            ev = evaluate(model, cfg, data, step=a.steps)
        src = table_name_sources(ev["predictions"], [e.db_id for e in data.eval_examples], data.schemas,
                                 {e.db_id for e in data.train_examples})
        rows.append((name, len(data.train), res.tokens_per_sec, ev["eval/loss"], ev["eval/exact_match"],
                     ev["eval/valid_sql"], src["own"], src["train_only"], src["invented"], time.perf_counter() - t0))
        r = rows[-1]
        print(f"# {name}: done in {r[-1]:.0f}s: eval loss {r[3]:.3f}, exact match {r[4]:.3f}, valid SQL {r[5]:.3f}, "
              f"table names own {r[6]:.1%} / training-only {r[7]:.1%} / invented {r[8]:.1%}", flush=True)
    print(f"\n{a.steps} steps per recipe, validation = unseen training-split databases "
          f"({len(data.eval_examples)} examples)\n")
    print("| recipe | train seqs | tokens/s | eval loss | exact match | valid SQL | own-schema tables | "
          "training-only tables | invented |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]:,.0f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:.1%} | {r[7]:.1%} | {r[8]:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
