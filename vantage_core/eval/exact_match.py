"""Spider's "exact set match" and hardness, on top of sqlglot's SQLite parser.

A query is turned into the same component structure that Spider's official
``process_sql.py`` builds (see the layout below), and the comparison then follows the
official ``evaluation.py`` step for step: SELECT items, WHERE conditions and GROUP BY
columns are compared as multisets, keywords and AND/OR connectives as sets, ORDER BY as a
list with one direction, FROM as the multiset of its tables (join conditions are not
compared), INTERSECT/UNION/EXCEPT recursively, literal values and DISTINCT are erased
unless asked for, and columns joined by a foreign key are identified with each other.
The official evaluator's quirks are kept on purpose so that scores agree with it
(a subquery inside a condition is compared structurally, with DISTINCT and without the
foreign-key mapping; GROUP BY compares column names without their table; ...).

Where sqlglot understands more SQL than the official tokenizer (aliases without ``AS``,
``<>``, select-list aliases in ORDER BY, ``IS NOT NULL``, comma joins, correlated
columns), the query is accepted and mapped onto the same structure instead of failing.

Layout of a parsed query (as in Spider)::

    col_unit   = (agg_id, col_id, is_distinct)          col_id = "__table.column__" | "__all__"
    val_unit   = (unit_op, col_unit1, col_unit2 | None)
    cond_unit  = (not_op, op_id, val_unit, val1, val2)   val = float | '"text"' | col_unit | sql
    condition  = [cond_unit, 'and' | 'or', cond_unit, ...]
    sql = {'select': (is_distinct, [(agg_id, val_unit), ...]),
           'from': {'table_units': [('table_unit', '__t__') | ('sql', sql), ...], 'conds': condition},
           'where': condition, 'groupBy': [col_unit, ...], 'having': condition,
           'orderBy': [] | ('asc' | 'desc', [val_unit, ...]), 'limit': None | int,
           'intersect': None | sql, 'union': None | sql, 'except': None | sql}

The one difference in layout: ``limit`` holds the real LIMIT number (the official parser
always stores 1); it is normalized to 1 before comparing unless ``compare_values``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from sqlglot import exp

from ..data.schema import Schema
from ..errors import DataError
from ..sql.parse import SQLParseError, parse_tree

AGG_OPS = ("none", "max", "min", "count", "sum", "avg")
WHERE_OPS = ("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists")
UNIT_OPS = ("none", "-", "+", "*", "/")
SQL_OPS = ("intersect", "union", "except")
HARDNESS_LEVELS = ("easy", "medium", "hard", "extra")

_AGG_CLASSES = {exp.Max: 1, exp.Min: 2, exp.Count: 3, exp.Sum: 4, exp.Avg: 5}
_UNIT_CLASSES = {exp.Sub: 1, exp.Add: 2, exp.Mul: 3, exp.Div: 4}
_CMP_CLASSES = {exp.EQ: "=", exp.GT: ">", exp.LT: "<", exp.GTE: ">=", exp.LTE: "<=", exp.NEQ: "!="}
_FLIP = {"=": "=", "!=": "!=", ">": "<", "<": ">", ">=": "<=", "<=": ">="}


# --------------------------------------------------------------------------------------------
# schema index (lower-cased names, foreign-key map), cached per Schema object
# --------------------------------------------------------------------------------------------
@dataclass
class _Index:
    db_id: str
    fingerprint: str
    columns: dict[str, list[str]]  # table -> columns (lower case, schema order)
    colsets: dict[str, frozenset]
    kmap: dict[str, str]  # "__t.c__" -> representative of its foreign-key set
    all_columns: frozenset


_INDEXES: dict[int, tuple[Schema, _Index]] = {}
_BY_KEY: dict[tuple[str, str], _Index] = {}


def _build_index(schema: Schema) -> _Index:
    columns: dict[str, list[str]] = {}
    flat: list[str] = ["__all__"]
    pos: dict[tuple[str, str], int] = {}
    for t in schema.tables:
        tl = t.name.lower()
        cols = columns.setdefault(tl, [])
        for c in t.columns:
            cl = c.name.lower()
            cols.append(cl)
            pos.setdefault((tl, cl), len(flat))
            flat.append(f"__{tl}.{cl}__")
    # Same construction as evaluation.build_foreign_key_map (including its merge rule).
    key_sets: list[set[int]] = []
    for fk in schema.foreign_keys:
        k1 = pos.get((fk.table.lower(), fk.column.lower()))
        k2 = pos.get((fk.ref_table.lower(), (fk.ref_column or "").lower()))
        if k1 is None or k2 is None:
            continue
        for ks in key_sets:
            if k1 in ks or k2 in ks:
                break
        else:
            ks = set()
            key_sets.append(ks)
        ks.update((k1, k2))
    kmap = {}
    for ks in key_sets:
        idxs = sorted(ks)
        for i in idxs:
            kmap[flat[i]] = flat[idxs[0]]
    fp = hashlib.sha1(repr((sorted(columns.items()), sorted(kmap.items()))).encode()).hexdigest()[:16]
    return _Index(schema.db_id, fp, columns, {t: frozenset(c) for t, c in columns.items()}, kmap,
                  frozenset(c for cs in columns.values() for c in cs))


def _index(schema: Schema) -> _Index:
    hit = _INDEXES.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    idx = _build_index(schema)
    if len(_INDEXES) > 4096:
        _INDEXES.clear()
    _INDEXES[id(schema)] = (schema, idx)  # the strong reference keeps id() unique
    _BY_KEY[(idx.db_id, idx.fingerprint)] = idx
    return idx


# --------------------------------------------------------------------------------------------
# sqlglot AST -> Spider components
# --------------------------------------------------------------------------------------------
@dataclass
class _Scope:
    aliases: dict[str, str] = field(default_factory=dict)  # alias/table name -> table
    derived: dict[str, frozenset] = field(default_factory=dict)  # alias -> output column names
    tables: list[str] = field(default_factory=list)  # FROM tables in order
    select_aliases: dict[str, exp.Expression] = field(default_factory=dict)
    parent: "_Scope | None" = None


def _unparen(e):
    while isinstance(e, exp.Paren):
        e = e.this
    return e


def _agg_argument(e) -> tuple:
    """An aggregate's argument and whether it is DISTINCT (count(DISTINCT x) -> (x, True))."""
    inner = _unparen(e.this)
    if not isinstance(inner, exp.Distinct):
        return inner, False
    if len(inner.expressions) != 1:
        raise SQLParseError("aggregate over several DISTINCT expressions")
    return _unparen(inner.expressions[0]), True


def _from_arg(sel: exp.Select):
    return sel.args.get("from_") or sel.args.get("from")


class _Converter:
    def __init__(self, index: _Index):
        self.ix = index

    # ---- queries ---------------------------------------------------------------------------
    def query(self, node, parent: _Scope | None) -> dict:
        node = _unparen(node)
        if isinstance(node, exp.Subquery):
            return self.query(node.this, parent)
        if isinstance(node, exp.SetOperation):
            parts: list[tuple[str | None, exp.Expression]] = []
            self._flatten_setop(node, None, parts)
            order, limit = node.args.get("order"), node.args.get("limit")
            sqls = []
            for i, (_, sel) in enumerate(parts):
                last = i == len(parts) - 1
                sqls.append(self.select(sel, parent, order if last else None, limit if last else None))
            for i in range(len(sqls) - 1):
                sqls[i][parts[i + 1][0]] = sqls[i + 1]
            return sqls[0]
        if isinstance(node, exp.Select):
            return self.select(node, parent)
        raise SQLParseError(f"not a SELECT query: {type(node).__name__}")

    def _flatten_setop(self, node, op, out):
        node = _unparen(node)
        if isinstance(node, exp.Subquery) and not node.args.get("order") and not node.args.get("limit"):
            node = _unparen(node.this)
        if isinstance(node, exp.SetOperation):
            if (node.args.get("order") or node.args.get("limit")) and out:
                raise SQLParseError("ORDER BY/LIMIT inside a nested set operation")
            name = {exp.Union: "union", exp.Intersect: "intersect", exp.Except: "except"}[type(node)]
            self._flatten_setop(node.this, op, out)
            self._flatten_setop(node.expression, name, out)
        elif isinstance(node, exp.Select):
            out.append((op, node))
        else:
            raise SQLParseError(f"unsupported set operand: {type(node).__name__}")

    def select(self, sel: exp.Select, parent, order=None, limit=None) -> dict:
        if sel.args.get("with_") or sel.args.get("with"):
            raise SQLParseError("WITH is not supported by exact set match")
        scope = _Scope(parent=parent)
        table_units: list = []
        sources = []
        frm = _from_arg(sel)
        if frm is not None:
            sources.append(frm.this)
        joins = sel.args.get("joins") or []
        sources += [j.this for j in joins]
        for src in sources:
            src = _unparen(src)
            if isinstance(src, exp.Table):
                name = src.name.lower()
                if name not in self.ix.columns:
                    raise SQLParseError(f"unknown table {src.name!r}")
                alias = (src.alias or "").lower()
                if alias:
                    scope.aliases[alias] = name
                scope.aliases.setdefault(name, name)
                scope.tables.append(name)
                table_units.append(("table_unit", f"__{name}__"))
            elif isinstance(src, exp.Subquery):
                sub = self.query(src.this, parent)
                table_units.append(("sql", sub))
                alias = (src.alias or "").lower()
                outs = frozenset(self._output_names(_unparen(src.this)))
                scope.derived[alias] = outs
            else:
                raise SQLParseError(f"unsupported FROM item: {type(src).__name__}")
        if not table_units:
            raise SQLParseError("no FROM clause")
        # select-list aliases (usable in ORDER BY / HAVING / GROUP BY)
        for e in sel.expressions:
            if isinstance(e, exp.Alias) and e.alias:
                scope.select_aliases[e.alias.lower()] = e.this
        conds: list = []
        for j in joins:
            on = j.args.get("on")
            if on is not None and not (isinstance(on, exp.Boolean) and on.this):  # bare JOIN: ON TRUE
                if conds:
                    conds.append("and")
                self.condition(on, scope, conds)
        select = (sel.args.get("distinct") is not None, [self.select_item(e, scope) for e in sel.expressions])
        where: list = []
        if sel.args.get("where") is not None:
            self.condition(sel.args["where"].this, scope, where)
        group = []
        if sel.args.get("group") is not None:
            group = [self.col_unit(e, scope) for e in sel.args["group"].expressions]
        having: list = []
        if sel.args.get("having") is not None:
            self.condition(sel.args["having"].this, scope, having)
        order = order if order is not None else sel.args.get("order")
        order_by: list | tuple = []
        if order is not None and order.expressions:
            direction = "asc"
            units = []
            for o in order.expressions:
                if isinstance(o, exp.Ordered):
                    d = o.args.get("desc")
                    if d is not None:  # explicit ASC gives False, explicit DESC True
                        direction = "desc" if d else "asc"
                    o = o.this
                units.append(self.val_unit(o, scope))
            order_by = (direction, units)
        limit = limit if limit is not None else sel.args.get("limit")
        limit_val = None
        if limit is not None:
            lv = _unparen(limit.expression)
            try:
                limit_val = int(float(lv.this)) if isinstance(lv, exp.Literal) else lv.sql()
            except (TypeError, ValueError):
                limit_val = lv.sql()
        return {"select": select, "from": {"table_units": table_units, "conds": conds}, "where": where,
                "groupBy": group, "having": having, "orderBy": order_by, "limit": limit_val,
                "intersect": None, "union": None, "except": None}

    @staticmethod
    def _output_names(q) -> list[str]:
        while isinstance(q, exp.SetOperation):
            q = _unparen(q.this)
        if not isinstance(q, exp.Select):
            return []
        return [(e.alias_or_name or "").lower() for e in q.expressions]

    # ---- expressions -----------------------------------------------------------------------
    def _lookup(self, col: exp.Column, scope: _Scope) -> str | None:
        """Column -> "__t.c__" (None when it names no column in scope)."""
        if isinstance(col.this, exp.Star):
            return "__all__"
        name = col.name.lower()
        q = col.table.lower() if col.table else ""
        if q:
            s = scope
            while s is not None:
                if q in s.aliases:
                    t = s.aliases[q]
                    return f"__{t}.{name}__" if name in self.ix.colsets[t] else None
                if q in s.derived:
                    return f"__{q}.{name}__"
                s = s.parent
            if q in self.ix.colsets:
                return f"__{q}.{name}__" if name in self.ix.colsets[q] else None
            return None
        s = scope
        while s is not None:
            for t in s.tables:
                if name in self.ix.colsets[t]:
                    return f"__{t}.{name}__"
            for a, outs in s.derived.items():
                if name in outs:
                    return f"__{a}.{name}__"
            s = s.parent
        return None

    def _alias_target(self, e, scope: _Scope):
        """A bare name that is a select-list alias and no column: its expression."""
        if (isinstance(e, exp.Column) and not e.table and not isinstance(e.this, exp.Star)
                and e.name.lower() in scope.select_aliases and self._lookup(e, scope) is None):
            return _unparen(scope.select_aliases[e.name.lower()])
        return e

    def col_id(self, col: exp.Column, scope: _Scope) -> str:
        cid = self._lookup(col, scope)
        if cid is None:
            raise SQLParseError(f"unknown column {col.sql()!r}")
        return cid

    def col_unit(self, e, scope: _Scope) -> tuple:
        e = self._alias_target(_unparen(e), scope)
        if isinstance(e, exp.Star):
            return (0, "__all__", False)
        if isinstance(e, exp.Column):
            return (0, self.col_id(e, scope), False)
        agg = _AGG_CLASSES.get(type(e))
        if agg is not None:
            inner, distinct = _agg_argument(e)
            if isinstance(inner, exp.Star):
                return (agg, "__all__", distinct)
            if isinstance(inner, exp.Column):
                return (agg, self.col_id(inner, scope), distinct)
            # e.g. sum(a - b) outside SELECT: keep a deterministic id (the official parser fails)
            return (agg, repr(self.val_unit(inner, scope)), distinct)
        raise SQLParseError(f"unsupported expression {e.sql()!r}")

    def val_unit(self, e, scope: _Scope) -> tuple:
        e = self._alias_target(_unparen(e), scope)
        op = _UNIT_CLASSES.get(type(e))
        if op is not None:
            return (op, self.col_unit(e.this, scope), self.col_unit(e.expression, scope))
        return (0, self.col_unit(e, scope), None)

    def select_item(self, e, scope: _Scope) -> tuple:
        if isinstance(e, exp.Alias):
            e = e.this
        e = _unparen(e)
        agg = _AGG_CLASSES.get(type(e))
        if agg is not None:
            inner, distinct = _agg_argument(e)
            if type(inner) in _UNIT_CLASSES:
                return (agg, self.val_unit(inner, scope))
            if isinstance(inner, exp.Star):
                return (agg, (0, (0, "__all__", distinct), None))
            return (agg, (0, (0, self.col_id(inner, scope) if isinstance(inner, exp.Column)
                                  else self._raise(inner), distinct), None))
        return (0, self.val_unit(e, scope))

    @staticmethod
    def _raise(e):
        raise SQLParseError(f"unsupported expression {e.sql()!r}")

    def value(self, e, scope: _Scope):
        e = _unparen(e)
        if isinstance(e, (exp.Subquery, exp.Select, exp.SetOperation)):
            return self.query(e, scope)
        if isinstance(e, exp.Literal):
            return f'"{e.this}"' if e.is_string else _num(e.this)
        if isinstance(e, exp.Neg) and isinstance(_unparen(e.this), exp.Literal) and not e.this.is_string:
            return -_num(_unparen(e.this).this)
        if isinstance(e, exp.Null):
            return "null"
        if isinstance(e, exp.Boolean):
            return float(bool(e.this))
        if isinstance(e, exp.Column):
            if not e.table and e.this.args.get("quoted") and self._lookup(e, scope) is None:
                return f'"{e.name}"'  # SQLite: a double-quoted token that names no column is a string
            return self.col_unit(e, scope)
        if type(e) in _AGG_CLASSES:
            return self.col_unit(e, scope)
        if type(e) in _UNIT_CLASSES:
            return ("expr",) + self.val_unit(e, scope)
        return e.sql(dialect="sqlite")

    def _is_value_like(self, e, scope) -> bool:
        e = _unparen(e)
        if isinstance(e, (exp.Literal, exp.Null, exp.Boolean)):
            return True
        if isinstance(e, exp.Neg) and isinstance(_unparen(e.this), exp.Literal):
            return True
        return (isinstance(e, exp.Column) and not e.table and bool(e.this.args.get("quoted"))
                and self._lookup(e, scope) is None)

    def condition(self, e, scope: _Scope, out: list) -> None:
        e = _unparen(e)
        if isinstance(e, exp.And):
            self.condition(e.this, scope, out)
            out.append("and")
            self.condition(e.expression, scope, out)
        elif isinstance(e, exp.Or):
            self.condition(e.this, scope, out)
            out.append("or")
            self.condition(e.expression, scope, out)
        else:
            out.append(self.cond_unit(e, scope))

    def cond_unit(self, e, scope: _Scope) -> tuple:
        not_op = False
        e = _unparen(e)
        while isinstance(e, exp.Not):
            not_op = not not_op
            e = _unparen(e.this)
        if isinstance(e, exp.Between):
            return (not_op, 1, self.val_unit(e.this, scope), self.value(e.args["low"], scope),
                    self.value(e.args["high"], scope))
        cmp = _CMP_CLASSES.get(type(e))
        if cmp is not None:
            left, right = e.this, e.expression
            if self._is_value_like(left, scope) and not self._is_value_like(right, scope):
                left, right, cmp = right, left, _FLIP[cmp]
            return (not_op, WHERE_OPS.index(cmp), self.val_unit(left, scope), self.value(right, scope), None)
        if isinstance(e, exp.In):
            q = e.args.get("query")
            if q is not None:
                val = self.query(q, scope)
            else:
                val = tuple(self.value(x, scope) for x in e.expressions)
                if len(val) == 1 and isinstance(val[0], dict):
                    val = val[0]
            return (not_op, 8, self.val_unit(e.this, scope), val, None)
        if isinstance(e, (exp.Like, exp.ILike)):
            return (not_op, 9, self.val_unit(e.this, scope), self.value(e.expression, scope), None)
        if isinstance(e, exp.Is):
            return (not_op, 10, self.val_unit(e.this, scope), self.value(e.expression, scope), None)
        if isinstance(e, exp.Exists):
            return (not_op, 11, (0, None, None), self.query(e.this, scope), None)
        raise SQLParseError(f"unsupported condition {e.sql()!r}")


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float(int(text, 0))


# --------------------------------------------------------------------------------------------
# parsing entry points (cached)
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=65536)
def _parse_cached(sql: str, db_id: str, fingerprint: str):
    ix = _BY_KEY[(db_id, fingerprint)]
    try:   # the shared sqlglot tree (read only), then Spider's structure of it
        return _Converter(ix).query(parse_tree(sql), None)
    except SQLParseError as e:
        return e
    except RecursionError:
        return SQLParseError("query too deeply nested")
    except Exception as e:  # an AST shape the converter does not expect: not parsable here
        return SQLParseError(f"unsupported query ({type(e).__name__}: {e})")


def _parse(sql: str, schema: Schema) -> dict:
    ix = _index(schema)
    res = _parse_cached(" ".join(str(sql).split()).rstrip(";").strip(), ix.db_id, ix.fingerprint)
    if isinstance(res, SQLParseError):
        raise res
    return res


def parse_components(sql: str, schema: Schema) -> dict:
    """Spider's component structure of `sql` (raises SQLParseError when it has none).

    The result is shared with the parse cache: treat it as read-only.
    """
    return _parse(sql, schema)


# --------------------------------------------------------------------------------------------
# normalization before comparing (evaluation.rebuild_sql_val / rebuild_sql_col)
# --------------------------------------------------------------------------------------------
def _normalize_limits(sql):
    if not isinstance(sql, dict):
        return sql
    out = dict(sql)
    if out["limit"] is not None:
        out["limit"] = 1
    out["from"] = {"table_units": [(t, _normalize_limits(u)) for t, u in sql["from"]["table_units"]],
                   "conds": [_norm_cond_limits(c) for c in sql["from"]["conds"]]}
    for k in ("where", "having"):
        out[k] = [_norm_cond_limits(c) for c in sql[k]]
    for k in SQL_OPS:
        out[k] = _normalize_limits(sql[k])
    return out


def _norm_cond_limits(c):
    if isinstance(c, str):
        return c
    return c[:3] + (_normalize_limits(c[3]), _normalize_limits(c[4]))


def _erase_cond_val(c):
    if isinstance(c, str):
        return c
    not_op, op_id, vu, v1, v2 = c
    v1 = _erase_values(v1) if isinstance(v1, dict) else None
    v2 = _erase_values(v2) if isinstance(v2, dict) else None
    return (not_op, op_id, vu, v1, v2)


def _erase_values(sql):
    """rebuild_sql_val: literal values (and column operands) of conditions -> None."""
    if sql is None:
        return None
    out = dict(sql)
    out["from"] = {"table_units": sql["from"]["table_units"],
                   "conds": [_erase_cond_val(c) for c in sql["from"]["conds"]]}
    out["where"] = [_erase_cond_val(c) for c in sql["where"]]
    out["having"] = [_erase_cond_val(c) for c in sql["having"]]
    for k in SQL_OPS:
        out[k] = _erase_values(sql[k])
    return out


def _valid_tables(sql) -> set[str]:
    return {u[2:-2] for t, u in sql["from"]["table_units"] if t == "table_unit"}


def _map_col(cu, valid, kmap, keep_distinct):
    if cu is None:
        return None
    agg, col, dist = cu
    if col in kmap and "." in col and col[2:col.index(".")] in valid:
        col = kmap[col]
    return (agg, col, dist if keep_distinct else None)


def _map_val(vu, valid, kmap, kd):
    if vu is None:
        return None
    return (vu[0], _map_col(vu[1], valid, kmap, kd), _map_col(vu[2], valid, kmap, kd))


def _map_cond(cond, valid, kmap, kd):
    return [c if isinstance(c, str) else (c[0], c[1], _map_val(c[2], valid, kmap, kd), c[3], c[4])
            for c in cond]


def _map_columns(sql, valid, kmap, keep_distinct):
    """rebuild_sql_col: foreign-key mapping and DISTINCT erasure (not inside condition subqueries)."""
    if sql is None:
        return None
    kd = keep_distinct
    out = dict(sql)
    out["select"] = (sql["select"][0] if kd else None,
                     [(a, _map_val(vu, valid, kmap, kd)) for a, vu in sql["select"][1]])
    out["from"] = {"table_units": sql["from"]["table_units"],
                   "conds": _map_cond(sql["from"]["conds"], valid, kmap, kd)}
    out["where"] = _map_cond(sql["where"], valid, kmap, kd)
    out["groupBy"] = [_map_col(c, valid, kmap, kd) for c in sql["groupBy"]]
    if sql["orderBy"]:
        out["orderBy"] = (sql["orderBy"][0], [_map_val(v, valid, kmap, kd) for v in sql["orderBy"][1]])
    out["having"] = _map_cond(sql["having"], valid, kmap, kd)
    for k in SQL_OPS:
        out[k] = _map_columns(sql[k], valid, kmap, keep_distinct)
    return out


def _rebuild(sql: dict, ix: _Index, compare_values: bool, compare_distinct: bool) -> dict:
    if not compare_values:
        sql = _erase_values(_normalize_limits(sql))
    return _map_columns(sql, _valid_tables(sql), ix.kmap, compare_distinct)


# --------------------------------------------------------------------------------------------
# comparison (evaluation.eval_partial_match / eval_exact_match)
# --------------------------------------------------------------------------------------------
def _multiset_count(pred: list, label: list) -> int:
    label = list(label)
    cnt = 0
    for u in pred:
        if u in label:
            cnt += 1
            label.remove(u)
    return cnt


def _ok(cnt, pred_total, label_total) -> bool:
    return pred_total == label_total and cnt == pred_total


def _keywords(sql) -> set[str]:
    res = set()
    if sql["where"]:
        res.add("where")
    if sql["groupBy"]:
        res.add("group")
    if sql["having"]:
        res.add("having")
    if sql["orderBy"]:
        res.add(sql["orderBy"][0])
        res.add("order")
    if sql["limit"] is not None:
        res.add("limit")
    for k in SQL_OPS:
        if sql[k] is not None:
            res.add(k)
    ao = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    if "or" in ao:
        res.add("or")
    units = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    if any(u[0] for u in units):
        res.add("not")
    if any(u[1] == 8 for u in units):
        res.add("in")
    if any(u[1] == 9 for u in units):
        res.add("like")
    return res


def _components_match(pred: dict, label: dict, flags: tuple[bool, bool]) -> bool:
    compare_values, compare_distinct = flags
    # select (with and without aggregates)
    ps, ls = pred["select"][1], label["select"][1]
    if len(ps) != len(ls) or _multiset_count(ps, ls) != len(ps):
        return False
    if compare_distinct and pred["select"][0] != label["select"][0]:
        return False
    # where
    pw, lw = pred["where"][::2], label["where"][::2]
    if len(pw) != len(lw) or _multiset_count(pw, lw) != len(pw):
        return False
    # group (no having): column names without their table
    pg = [c[1].split(".")[1] if "." in c[1] else c[1] for c in pred["groupBy"]]
    lg = [c[1].split(".")[1] if "." in c[1] else c[1] for c in label["groupBy"]]
    if len(pg) != len(lg) or _multiset_count(pg, lg) != len(pg):
        return False
    # group with having
    pt, lt = int(bool(pred["groupBy"])), int(bool(label["groupBy"]))
    cnt = int(pt == lt == 1 and [c[1] for c in pred["groupBy"]] == [c[1] for c in label["groupBy"]]
              and pred["having"] == label["having"])
    if not _ok(cnt, pt, lt):
        return False
    # order
    pt, lt = int(bool(pred["orderBy"])), int(bool(label["orderBy"]))
    cnt = int(bool(label["orderBy"]) and pred["orderBy"] == label["orderBy"]
              and ((pred["limit"] is None) == (label["limit"] is None)))
    if not _ok(cnt, pt, lt):
        return False
    # and/or
    if set(pred["where"][1::2]) != set(label["where"][1::2]):
        return False
    # intersect / union / except
    for k in SQL_OPS:
        p, l_ = pred[k], label[k]
        if (p is None) != (l_ is None):
            return False
        if p is not None and not _exact(p, l_, flags):
            return False
    # keywords
    if _keywords(pred) != _keywords(label):
        return False
    if compare_values and pred["limit"] != label["limit"]:
        return False
    return True


def _exact(pred: dict, label: dict, flags) -> bool:
    if not _components_match(pred, label, flags):
        return False
    lt = label["from"]["table_units"]
    if lt:
        pt = pred["from"]["table_units"]
        return len(pt) == len(lt) and _multiset_count(pt, lt) == len(lt)
    return True


def exact_match(gold: str, pred: str, schema: Schema, *, compare_values: bool = False,
                compare_distinct: bool = False) -> bool:
    """Spider exact set match of `pred` against `gold` on `schema`; never raises.

    Defaults follow the official evaluator (values and DISTINCT not compared). With
    ``compare_values`` literal values and LIMIT numbers must agree; with
    ``compare_distinct`` DISTINCT inside aggregates and ``SELECT DISTINCT`` must agree.
    """
    if not pred or not gold:
        return False
    try:
        g = _parse(gold, schema)
        p = _parse(pred, schema)
    except SQLParseError:
        return False
    ix = _index(schema)
    try:
        g2 = _rebuild(g, ix, compare_values, compare_distinct)
        p2 = _rebuild(p, ix, compare_values, compare_distinct)
        return bool(_exact(p2, g2, (compare_values, compare_distinct)))
    except (RecursionError, TypeError, ValueError, IndexError, KeyError):
        return False


# --------------------------------------------------------------------------------------------
# hardness (evaluation.Evaluator.eval_hardness)
# --------------------------------------------------------------------------------------------
def _nested(sql) -> list:
    out = []
    for c in sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]:
        if isinstance(c[3], dict):
            out.append(c[3])
        if isinstance(c[4], dict):
            out.append(c[4])
    for k in ("intersect", "except", "union"):
        if sql[k] is not None:
            out.append(sql[k])
    return out


def _count_agg(units) -> int:
    # Spider's has_agg is `unit[0] != 0`: for condition lists that is the NOT flag, and the
    # 'and'/'or' strings of a HAVING list count too. Kept as is: hardness must agree.
    return sum(1 for u in units if u[0] != 0)


def count_component1(sql) -> int:
    n = int(bool(sql["where"])) + int(bool(sql["groupBy"])) + int(bool(sql["orderBy"]))
    n += int(sql["limit"] is not None)
    if sql["from"]["table_units"]:
        n += len(sql["from"]["table_units"]) - 1
    ao = sql["from"]["conds"][1::2] + sql["where"][1::2] + sql["having"][1::2]
    n += sum(1 for t in ao if t == "or")
    units = sql["from"]["conds"][::2] + sql["where"][::2] + sql["having"][::2]
    n += sum(1 for u in units if u[1] == 9)
    return n


def count_component2(sql) -> int:
    return len(_nested(sql))


def count_others(sql) -> int:
    n = 0
    agg = _count_agg(sql["select"][1]) + _count_agg(sql["where"][::2]) + _count_agg(sql["groupBy"])
    if sql["orderBy"]:
        agg += _count_agg([u[1] for u in sql["orderBy"][1] if u[1]] + [u[2] for u in sql["orderBy"][1] if u[2]])
    agg += _count_agg(sql["having"])
    n += agg > 1
    n += len(sql["select"][1]) > 1
    n += len(sql["where"]) > 1
    n += len(sql["groupBy"]) > 1
    return n


def hardness_of(sql: dict) -> str:
    c1, c2, co = count_component1(sql), count_component2(sql), count_others(sql)
    if c1 <= 1 and co == 0 and c2 == 0:
        return "easy"
    if (co <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and co < 2 and c2 == 0):
        return "medium"
    if ((co > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and co <= 2 and c2 == 0)
            or (c1 <= 1 and co == 0 and c2 <= 1)):
        return "hard"
    return "extra"


def hardness(sql: str, schema: Schema) -> str:
    """Spider hardness (easy/medium/hard/extra); DataError when the query cannot be parsed."""
    try:
        return hardness_of(_parse(sql, schema))
    except SQLParseError as e:
        raise DataError(f"cannot compute hardness: {e}") from None


def cache_info():
    return _parse_cached.cache_info()
