"""Scoring a list of predictions: per-example verdicts and a summary per hardness."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..data.schema import Schema
from ..errors import DataError
from .exact_match import HARDNESS_LEVELS, exact_match, hardness
from ..sql.execution import execution_match, valid_sql

SUMMARY_COLUMNS = ["count", "exact_match", "exact_match_ci", "valid_sql", "execution", "execution_count"]


def proportion_ci(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (95% by default); (0, 1) when n == 0."""
    if n <= 0:
        return 0.0, 1.0
    if k < 0 or k > n:
        raise ValueError(f"proportion_ci: k={k} outside 0..n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _db_file(db_dir: Path | None, db_id: str) -> Path | None:
    if db_dir is None:
        return None
    p = Path(db_dir) / db_id / f"{db_id}.sqlite"
    return p if p.is_file() else None


def score_examples(golds: list[tuple[str, str]], preds: list[str], schemas: dict[str, Schema],
                   db_dir: Path | None, *, compare_values: bool = False, compare_distinct: bool = False,
                   execution: bool = True, timeout_s: float = 2.0) -> tuple[list[dict], pd.DataFrame]:
    """Score `preds` against `golds` ((sql, db_id) pairs, same order).

    Per example: ``exact_match``, ``valid_sql`` (+ ``valid_reason``), ``execution_match``
    (None where there is no database file under `db_dir`) and the gold's ``hardness``.
    Summary: one row per hardness level present plus ``all``, see `summarize`.
    """
    if len(golds) != len(preds):
        raise DataError(f"{len(golds)} gold queries but {len(preds)} predictions")
    verdicts = []
    for i, ((gold, db_id), pred) in enumerate(zip(golds, preds)):
        schema = schemas.get(db_id)
        if schema is None:
            raise DataError(f"example {i}: unknown db_id {db_id!r} (not in the tables file)")
        pred = (pred or "").strip()
        try:
            hard = hardness(gold, schema)
        except DataError:
            hard = "unparsed"
        dbf = _db_file(db_dir, db_id)
        ok, reason = valid_sql(pred, dbf, schema) if pred else (False, "empty prediction")
        ex = None
        if execution and dbf is not None:
            ex = execution_match(gold, pred, dbf, timeout_s=timeout_s)
        verdicts.append({
            "index": i, "db_id": db_id, "gold": gold, "pred": pred, "hardness": hard,
            "exact_match": bool(pred) and exact_match(gold, pred, schema, compare_values=compare_values,
                                                      compare_distinct=compare_distinct),
            "valid_sql": ok, "valid_reason": reason, "execution_match": ex,
        })
    return verdicts, summarize(verdicts)


def summarize(verdicts: list[dict]) -> pd.DataFrame:
    """Rows easy/medium/hard/extra (those present, plus 'unparsed' if any) and 'all'.

    Columns: count, exact_match, exact_match_ci (Wilson 95% (lo, hi)), valid_sql,
    execution (accuracy over the examples that have a database) and execution_count
    (how many examples that is).
    """
    levels = [h for h in HARDNESS_LEVELS if any(v["hardness"] == h for v in verdicts)]
    if any(v["hardness"] not in HARDNESS_LEVELS for v in verdicts):
        levels.append("unparsed")
    rows = {}
    for level in levels + ["all"]:
        vs = [v for v in verdicts if level == "all" or v["hardness"] == level
              or (level == "unparsed" and v["hardness"] not in HARDNESS_LEVELS)]
        n = len(vs)
        em = sum(bool(v["exact_match"]) for v in vs)
        valid = sum(bool(v["valid_sql"]) for v in vs)
        exec_vs = [v for v in vs if v["execution_match"] is not None]
        exec_ok = sum(bool(v["execution_match"]) for v in exec_vs)
        lo, hi = proportion_ci(em, n)
        rows[level] = {
            "count": n,
            "exact_match": em / n if n else float("nan"),
            "exact_match_ci": (round(lo, 4), round(hi, 4)),
            "valid_sql": valid / n if n else float("nan"),
            "execution": exec_ok / len(exec_vs) if exec_vs else float("nan"),
            "execution_count": len(exec_vs),
        }
    df = pd.DataFrame.from_dict(rows, orient="index", columns=SUMMARY_COLUMNS)
    df.index.name = "hardness"
    return df


def format_summary(df: pd.DataFrame) -> str:
    """Fixed-width text table (percentages) for terminals and logs."""
    lines = [f"{'hardness':<10} {'count':>6} {'exact':>7} {'95% CI':>15} {'valid':>7} {'exec':>7} {'exec n':>7}"]

    def pct(x):
        return "    n/a" if x != x else f"{100 * x:6.1f}%"

    for level, r in df.iterrows():
        lo, hi = r["exact_match_ci"]
        ci = f"[{100 * lo:5.1f},{100 * hi:5.1f}]"
        lines.append(f"{level:<10} {int(r['count']):>6} {pct(r['exact_match'])} {ci:>15} "
                     f"{pct(r['valid_sql'])} {pct(r['execution'])} {int(r['execution_count']):>7}")
    return "\n".join(lines)
