"""Scores used inside training (periodic evaluation): exact-set match and valid SQL."""

from __future__ import annotations


from ..data.example import Example
from ..data.schema import Schema


def quick_scores(examples: list[Example], preds: list[str], schemas: dict[str, Schema], splits=None,
                 *, compare_values: bool = False, compare_distinct: bool = False) -> tuple[float, float]:
    """(exact match, valid SQL) fractions over `examples`."""
    if not examples:
        return 0.0, 0.0
    from .exact_match import exact_match
    from .execution import valid_sql
    em = valid = 0
    for ex, pred in zip(examples, preds):
        schema = schemas[ex.db_id]
        if pred and exact_match(ex.query, pred, schema, compare_values=compare_values,
                                compare_distinct=compare_distinct):
            em += 1
        if pred and valid_sql(pred, ex.db_path or schema)[0]:
            valid += 1
    return em / len(examples), valid / len(examples)
