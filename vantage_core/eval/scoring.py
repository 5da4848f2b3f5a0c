"""Scores used inside training (periodic evaluation): exact-set match and valid SQL."""

from __future__ import annotations

import re

from ..data.example import Example
from ..data.schema import Schema


def quick_scores(examples: list[Example], preds: list[str], schemas: dict[str, Schema], splits=None,
                 *, compare_values: bool = False, compare_distinct: bool = False) -> tuple[float, float]:
    """(exact match, valid SQL) fractions over `examples`."""
    if not examples:
        return 0.0, 0.0
    from .exact_match import exact_match
    from ..sql.execution import valid_sql
    em = valid = 0
    for ex, pred in zip(examples, preds):
        schema = schemas[ex.db_id]
        if pred and exact_match(ex.query, pred, schema, compare_values=compare_values,
                                compare_distinct=compare_distinct):
            em += 1
        if pred and valid_sql(pred, ex.db_path or schema)[0]:
            valid += 1
    return em / len(examples), valid / len(examples)


_TABLE_REF = re.compile(r"\b(?:FROM|JOIN)\s+[`\"\[]?([A-Za-z_][A-Za-z0-9_]*)", re.I)


def table_name_sources(preds: list[str], db_ids: list[str], schemas: dict[str, Schema],
                       train_db_ids: set[str]) -> dict[str, float]:
    """Where the table names a model writes come from, an early signal of copying (it moves
    long before exact match does): the share of FROM/JOIN references naming a table of the
    question's own schema (`own`), only a training database's table (`train_only`: recalled,
    not copied), or neither (`invented`). Read off the text, so unparseable predictions count."""
    train_tables: set[str] = set()
    for d in train_db_ids:
        if d in schemas:
            train_tables |= {t.name.lower() for t in schemas[d].tables}
    own = train_only = invented = 0
    for pred, db in zip(preds, db_ids):
        mine = {t.name.lower() for t in schemas[db].tables} if db in schemas else set()
        for name in _TABLE_REF.findall(pred or ""):
            name = name.lower()
            if name in mine:
                own += 1
            elif name in train_tables:
                train_only += 1
            else:
                invented += 1
    n = own + train_only + invented
    share = (lambda k: k / n) if n else (lambda k: 0.0)
    return {"own": share(own), "train_only": share(train_only), "invented": share(invented), "n": n}
