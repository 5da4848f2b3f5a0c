"""Preprocessing throughput on the Spider training set (train_spider.json + train_others.json,
8659 examples, 166 schemas, 7 real databases), with 1 and 2 worker processes, and the cached
re-run.

    python bench/preprocess.py [--data ../shared/data/spider] [--workers 1 2] [--repeat 1]

Every timed build starts cold: fresh output folder, fresh schema-only database folder,
sqlglot parse cache cleared. Settings: defaults (max_seq_length 512, vocab 1024) with
include_sample_values=true. Reports examples/s over the examples read, per-step seconds and
the cached re-run time (the same command again: inputs and settings unchanged).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vantage_core.config import load_config  # noqa: E402
from vantage_core.sql import parse as sqlparse  # noqa: E402
from vantage_core.data.preprocess import preprocess  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/spider"


def training_set(src: Path, dest: Path) -> Path:
    """A data dir with only Spider's training files (links, no copy)."""
    sp = dest / "spider"
    sp.mkdir(parents=True)
    for name in ("tables.json", "train_spider.json", "train_others.json", "database"):
        (sp / name).symlink_to((src / name).resolve())
    return dest


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    cfg = load_config(None, {"data": {"include_sample_values": True}})
    tmp = Path(tempfile.mkdtemp(prefix="vantage-bench-pre-"))
    load0 = os.getloadavg()
    data = training_set(a.data, tmp / "data")
    times: dict[int, list[float]] = {w: [] for w in a.workers}
    last: dict[int, object] = {}
    outs: dict[int, Path] = {}
    for r in range(a.repeat):  # interleaved, so that load from other jobs hits both alike
        for w in (a.workers if r % 2 == 0 else a.workers[::-1]):
            os.environ["VANTAGE_SCHEMA_DB_DIR"] = str(tmp / f"schemas-{w}-{r}")
            os.environ["VANTAGE_CACHE"] = str(tmp / f"cache-{w}-{r}")
            sqlparse.parse_tree.cache_clear()
            outs[w] = tmp / f"out-{w}-{r}"
            t0 = time.perf_counter()
            last[w] = preprocess(cfg, data, outs[w], num_workers=w, force=True)
            times[w].append(time.perf_counter() - t0)
    rows = []
    for w in a.workers:
        n = last[w].summary["examples_total"]
        med = statistics.median(times[w])
        steps = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in last[w].summary["timings"].items())
        t0 = time.perf_counter()
        again = preprocess(cfg, data, outs[w], num_workers=w)
        cached = time.perf_counter() - t0
        assert again.cached
        rows.append((w, n, med, n / med, steps, cached, " / ".join(f"{t:.1f}" for t in times[w])))
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    print(f"load average before/after: {load0} / {os.getloadavg()}")
    print("| workers | examples | seconds (median) | runs (s) | examples/s | steps of the last run (s) | cached re-run (s) |")
    print("| ---: | ---: | ---: | --- | ---: | --- | ---: |")
    for w, n, med, rate, steps, cached, runs in rows:
        print(f"| {w} | {n} | {med:.1f} | {runs} | {rate:,.0f} | {steps} | {cached:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
