"""Throughput of scoring alone (no generation) on the Spider dev set.

    python bench/eval.py [--data ../shared/data/spider] [--repeat 3]

Modes, each timed with every cache cleared first (parses, validity verdicts), median of
--repeat runs, on the 1034 dev pairs:
  exact_match   Spider exact set match only (what the trainer's periodic evaluation needs)
  em+valid      + sqlglot parse and SQLite EXPLAIN against a schema-only / real database
  full score    score_examples: + hardness + execution on the databases present (110 dev
                examples on flight_2 and singer)
Predictions: the gold itself (one parse per pair, the pred hits the gold's cache entry), and a
perturbed prediction: the gold of another question on the same database with its keywords in
lower case, so that it parses, mostly differs, and is new text to every cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vantage_core.data.readers import load_spider_tables  # noqa: E402
from vantage_core.eval import exact_match as em_mod  # noqa: E402
from vantage_core.sql import execution as ex_mod  # noqa: E402
from vantage_core.eval.metrics import score_examples  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/spider"


def perturbed(golds: list[tuple[str, str]]) -> list[str]:
    by_db: dict[str, list[int]] = {}
    for i, (_, db) in enumerate(golds):
        by_db.setdefault(db, []).append(i)
    out = []
    for i, (q, db) in enumerate(golds):
        idx = by_db[db]
        j = idx[(idx.index(i) + 2) % len(idx)]  # dev questions come in paraphrase pairs
        # keyword case changed so that the text is new to every cache (a model's output would be)
        out.append(golds[j][0].replace("SELECT", "select").replace("FROM", "from"))
    return out


def clear_caches():
    em_mod._parse_cached.cache_clear()
    ex_mod._valid_cached.cache_clear()
    ex_mod.parse_tree.cache_clear()


def run_mode(mode, golds, preds, schemas, db_dir) -> float:
    clear_caches()
    t = time.perf_counter()
    if mode == "exact_match":
        for (g, db), p in zip(golds, preds):
            em_mod.exact_match(g, p, schemas[db])
    elif mode == "em+valid":
        for (g, db), p in zip(golds, preds):
            em_mod.exact_match(g, p, schemas[db])
            f = db_dir / db / f"{db}.sqlite"
            ex_mod.valid_sql(p, f, schemas[db])
    else:
        score_examples(golds, preds, schemas, db_dir)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if not (args.data / "dev_gold.sql").is_file():
        print(f"error: {args.data}: no dev_gold.sql", file=sys.stderr)
        return 2
    schemas = load_spider_tables(args.data / "tables.json")
    golds = [tuple(l.split("\t")) for l in (args.data / "dev_gold.sql").read_text().splitlines() if l.strip()]
    db_dir = args.data / "database"
    # build the schema-only databases once (a one-off cost, cached on disk)
    for db in {d for _, d in golds}:
        ex_mod.schema_db(schemas[db])
    preds = {"gold": [q for q, _ in golds], "perturbed": perturbed(golds)}
    rows = []
    for pname, plist in preds.items():
        for mode in ("exact_match", "em+valid", "full score"):
            times = [run_mode(mode, golds, plist, schemas, db_dir) for _ in range(args.repeat)]
            med = statistics.median(times)
            rows.append((mode, pname, len(golds), med, len(golds) / med))
    cpu = f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)"
    print(f"# scoring throughput, Spider dev ({len(golds)} pairs), median of {args.repeat}, cold caches")
    print(f"# python {platform.python_version()}, {cpu}")
    print("| mode | prediction | pairs | seconds | examples/s |")
    print("| --- | --- | ---: | ---: | ---: |")
    for mode, pname, n, sec, rate in rows:
        print(f"| {mode} | {pname} | {n} | {sec:.2f} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
