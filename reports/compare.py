"""Paired comparison of two runs scored on the same examples (e.g. upcycled MoE vs dense on
Spider dev): the difference in exact match with a paired bootstrap 95% interval.

    python -m reports.compare A_verdicts.jsonl B_verdicts.jsonl [--field exact_match] [--names A,B]

Each file is one JSON object per example in the same order (``vantage-eval score --out`` or
``vantage-eval --output``), each with a boolean `field`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vantage_core.errors import DataError, run_cli


def paired_bootstrap(a, b, *, resamples: int = 10000, seed: int = 0, level: float = 0.95) -> dict:
    """mean(a) - mean(b) and its percentile bootstrap interval, resampling examples (pairs)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two equal-length 1-D samples, got {a.shape} and {b.shape}")
    d = a - b
    rs = np.random.RandomState(seed)
    idx = rs.randint(0, d.size, size=(resamples, d.size))
    boots = d[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [50 * (1 - level), 50 * (1 + level)])
    return {"n": int(d.size), "a": float(a.mean()), "b": float(b.mean()), "diff": float(d.mean()),
            "ci": (float(lo), float(hi)), "a_only": int(((a > 0) & (b == 0)).sum()),
            "b_only": int(((b > 0) & (a == 0)).sum()), "both": int(((a > 0) & (b > 0)).sum())}


def _read(path: Path, field: str) -> list[bool]:
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read verdicts ({e})") from None
    missing = next((i for i, r in enumerate(rows) if field not in r), None)
    if missing is not None:
        raise DataError(f"{path}: line {missing + 1} has no field '{field}'")
    return [bool(r[field]) for r in rows]


def _main(argv) -> int:
    p = argparse.ArgumentParser(prog="python -m reports.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="verdicts of run A (JSONL, one object per example)")
    p.add_argument("b", type=Path, help="verdicts of run B, same examples in the same order")
    p.add_argument("--field", default="exact_match", help="boolean field to compare (default: exact_match)")
    p.add_argument("--names", default="A,B", help="names of the two runs for the output (default: A,B)")
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default: 10000)")
    args = p.parse_args(argv)
    a, b = _read(args.a, args.field), _read(args.b, args.field)
    if len(a) != len(b):
        raise DataError(f"{args.a} has {len(a)} examples, {args.b} has {len(b)}: not the same examples")
    na, nb = (args.names.split(",") + ["B"])[:2]
    r = paired_bootstrap(a, b, resamples=args.resamples)
    print(f"{args.field}: {na} {r['a']:.3f}, {nb} {r['b']:.3f}, {na} - {nb} = {r['diff']:+.3f} "
          f"(paired bootstrap 95% CI {r['ci'][0]:+.3f} .. {r['ci'][1]:+.3f}, n={r['n']}; "
          f"right in both {r['both']}, only {na} {r['a_only']}, only {nb} {r['b_only']})")
    return 0


def main(argv=None) -> int:
    return run_cli(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
