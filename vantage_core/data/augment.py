"""Training-data augmentation (``data.augmentation_prob``, ``data.schema_perturbation_prob``).

Three strategies, each producing a *new* Example next to the original (the original is kept):

- question paraphrasing from templates (`paraphrase_question`);
- equivalent SQL rewrites on the sqlglot AST (`REWRITES`): commuted AND operands, ``>=`` <->
  ``NOT <`` (and ``<=`` <-> ``NOT >``), mirrored comparisons (``a > b`` -> ``b < a``), renamed
  table aliases, and ``x IN (SELECT key FROM t ...)`` -> ``JOIN t`` where it cannot change
  the row count (the key is t's single-column primary key, or the outer query is DISTINCT
  without aggregates). Where a database file exists every rewrite is proven equivalent on it
  by running both with `run_sql`; elsewhere only these AST rules (tested) are used and the
  result must compile against the schema;
- consistent schema renaming (`make_renaming`, `rename_schema`, `rename_sql`,
  `rename_question`, `rename_database`): tables and columns get synonyms or plausible new
  names, and schema, SQL and question mentions move together. The renamed copy carries the
  db_id ``<db>__r<k>`` and its Schema is registered; with `db_dir` the real database is copied
  and renamed too (``ALTER TABLE ... RENAME``) and the renamed SQL must return the original's
  rows on it.

  Two styles (``data.schema_rename_style``): ``synonyms`` (``singer`` -> ``vocalist``,
  ``tbl_singer``; the old name often survives inside the new one) and ``novel``: unrelated
  snake_case identifiers from an embedded word pool (``harbor``, ``blue_ledger``,
  ``cedar_count``; key columns keep an ``_id`` suffix) that never contain the old name nor
  reuse any word of the database's own names, so a model can only get them right by copying
  them from the schema in the prompt. ``data.schema_rename_table_fraction`` /
  ``schema_rename_column_fraction`` set the share of names renamed in a variant,
  ``data.schema_perturbation_copies`` how many renamed copies (each on a different variant,
  ``data.schema_rename_variants`` variants per database) one selected example gets.

Entry point for the data path: ``augment_examples(examples, schemas, cfg.data, rng)``.
"""

from __future__ import annotations

import copy
import hashlib
import re
import shutil
import sqlite3
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from random import Random
from typing import Callable

from sqlglot import exp

from ..config import DataConfig
from ..fileio import atomic_path
from ..sql.execution import has_order_by, results_match, run_sql, schema_db, valid_sql
from ..sql.parse import SQLParseError, parse_sql, read_sql, to_sql
from .example import Example
from .schema import Column, ForeignKey, Schema, Table, pluralize

_D = DataConfig()  # the defaults of the data.* keys read here
RENAME_STYLES = typing.get_args(typing.get_type_hints(DataConfig)["schema_rename_style"])

# ------------------------------------------------------------------------------------------
# question paraphrasing
# ------------------------------------------------------------------------------------------
_LEADS = ["Show", "List", "Find", "Give me", "Return", "Tell me"]
_TEMPLATES: list[tuple[re.Pattern, list[str]]] = [
    (re.compile(r"^What (?:is|are) (?:the )?(.+?)\s*\?$", re.I),
     ["List the {0}.", "Show the {0}.", "Give me the {0}.", "Find the {0}.", "Tell me the {0}."]),
    (re.compile(r"^(?:Show|List|Find|Give me|Return|Tell me|Display)(?: me)? (?:all )?(?:the )?(.+?)\s*[.?]?$", re.I),
     ["What are the {0}?", "Show me the {0}.", "I want the {0}.", "Could you list the {0}?"]),
    (re.compile(r"^How many (.+?) (?:do|does|did) (.+?)\s*\?$", re.I),
     ["Count the {0} {1}.", "Find the number of {0} {1}.", "What is the number of {0} {1}?"]),
    (re.compile(r"^How many (.+?) (are|is|were|was|have|has|can|will) (.+?)\s*\?$", re.I),
     ["Count the {0} that {1} {2}.", "Find the number of {0} that {1} {2}.",
      "What is the number of {0} that {1} {2}?"]),
    (re.compile(r"^How many (.+?)\s*\?$", re.I),
     ["Count the number of {0}.", "Find the number of {0}.", "What is the number of {0}?",
      "Tell me how many {0}."]),
    (re.compile(r"^(?:Count|Find|Give|Return) the (?:total )?number of (.+?)\s*[.?]?$", re.I),
     ["How many {0} are there?", "What is the number of {0}?", "Give the count of {0}."]),
    (re.compile(r"^Which (.+?)\s*\?$", re.I), ["What {0}?", "Tell me which {0}.", "Find which {0}."]),
    (re.compile(r"^Who (.+?)\s*\?$", re.I), ["Find who {0}.", "Tell me who {0}."]),
]
_GENERIC = ["Could you tell me: {q}", "I would like to know: {q}", "Question: {q}", "{q} Please answer."]


def paraphrase_question(question: str, rng: Random) -> str | None:
    """A template paraphrase different from `question` (None only for an empty question)."""
    q = " ".join(question.split())
    if not q:
        return None
    cands = []
    for pat, outs in _TEMPLATES:
        m = pat.match(q)
        if m:  # the first (most specific) matching template only
            cands = [o.format(*m.groups()) for o in outs]
            break
    cands = [c for c in cands if c.lower() != q.lower()]
    if not cands:
        cands = [g.format(q=q) for g in _GENERIC]
    return rng.choice(cands)


# ------------------------------------------------------------------------------------------
# equivalent SQL rewrites (AST rules)
# ------------------------------------------------------------------------------------------
def _from(select: exp.Expression):
    return select.args.get("from_") or select.args.get("from")


def rw_commute_and(tree: exp.Expression, rng: Random, schema: Schema | None) -> exp.Expression | None:
    """``a AND b`` -> ``b AND a`` (one AND in a WHERE/HAVING/ON, chosen at random)."""
    ands = [a for a in tree.find_all(exp.And)]
    if not ands:
        return None
    a = rng.choice(ands)
    left, right = a.this, a.expression
    a.set("this", right.copy())
    a.set("expression", left.copy())
    return tree


_NEGATE = {exp.GTE: exp.LT, exp.LTE: exp.GT, exp.LT: exp.GTE, exp.GT: exp.LTE}


def rw_negated_comparison(tree: exp.Expression, rng: Random, schema: Schema | None) -> exp.Expression | None:
    """``a >= b`` -> ``NOT (a < b)``, ``a <= b`` -> ``NOT (a > b)`` and back.

    Equivalent in SQL's three-valued logic: with a NULL operand both sides are NULL."""
    cands: list[tuple[exp.Expression, str]] = []
    for n in tree.find_all(exp.GTE, exp.LTE):
        cands.append((n, "neg"))
    for n in tree.find_all(exp.Not):
        inner = n.this.this if isinstance(n.this, exp.Paren) else n.this
        if type(inner) in (exp.LT, exp.GT):
            cands.append((n, "pos"))
    if not cands:
        return None
    node, kind = rng.choice(cands)
    if kind == "neg":
        cmp = _NEGATE[type(node)](this=node.this.copy(), expression=node.expression.copy())
        node.replace(exp.Not(this=exp.Paren(this=cmp)))
    else:
        inner = node.this.this if isinstance(node.this, exp.Paren) else node.this
        node.replace(_NEGATE[type(inner)](this=inner.this.copy(), expression=inner.expression.copy()))
    return tree


_MIRROR = {exp.GT: exp.LT, exp.LT: exp.GT, exp.GTE: exp.LTE, exp.LTE: exp.GTE, exp.EQ: exp.EQ, exp.NEQ: exp.NEQ}


def rw_mirror_comparison(tree: exp.Expression, rng: Random, schema: Schema | None) -> exp.Expression | None:
    """``a > b`` -> ``b < a`` (operands swapped, operator mirrored)."""
    cands = [n for n in tree.find_all(*_MIRROR) if not isinstance(n.this, exp.Literal)]
    if not cands:
        return None
    n = rng.choice(cands)
    n.replace(_MIRROR[type(n)](this=n.expression.copy(), expression=n.this.copy()))
    return tree


def _table_aliases(tree: exp.Expression) -> dict[str, exp.TableAlias]:
    out = {}
    for t in tree.find_all(exp.Table):
        a = t.args.get("alias")
        if isinstance(a, exp.TableAlias) and a.this is not None:
            out.setdefault(a.name.lower(), a)
    return out


def rw_rename_aliases(tree: exp.Expression, rng: Random, schema: Schema | None) -> exp.Expression | None:
    """Table aliases (``T1``, ``T2``, ...) renamed consistently to fresh names."""
    aliases = _table_aliases(tree)
    if not aliases:
        return None
    used = {t.name.lower() for t in tree.find_all(exp.Table)} | set(aliases)
    used |= {c.name.lower() for c in tree.find_all(exp.Column)}
    style = rng.choice([lambda i: f"a{i}", lambda i: f"t_{i}", lambda i: "abcdefghij"[i - 1] * 1,
                        lambda i: f"x{i}"])
    mapping, i = {}, 1
    for old in sorted(aliases):
        while style(i).lower() in used or style(i).lower() in mapping.values():
            i += 1
            if i > 9:
                return None
        mapping[old] = style(i)
        i += 1
    for t in tree.find_all(exp.Table):
        a = t.args.get("alias")
        if isinstance(a, exp.TableAlias) and a.name.lower() in mapping:
            a.set("this", exp.to_identifier(mapping[a.name.lower()]))
    for c in tree.find_all(exp.Column):
        q = c.args.get("table")
        if q is not None and q.name.lower() in mapping:
            c.set("table", exp.to_identifier(mapping[q.name.lower()]))
    return tree


def _flatten_and(e: exp.Expression) -> list[exp.Expression]:
    if isinstance(e, exp.And):
        return _flatten_and(e.this) + _flatten_and(e.expression)
    if isinstance(e, exp.Paren) and isinstance(e.this, exp.And):
        return _flatten_and(e.this)
    return [e]


def _pk(schema: Schema | None, table: str) -> list[str]:
    if schema is None:
        return []
    t = schema.table(table)
    return [c.name.lower() for c in t.columns if c.primary_key] if t else []


def rw_in_to_join(tree: exp.Expression, rng: Random, schema: Schema | None) -> exp.Expression | None:
    """``SELECT .. FROM t WHERE x IN (SELECT k FROM u [WHERE w])`` -> ``.. FROM t JOIN u AS j
    ON x = j.k [WHERE w]``, only where the join cannot repeat rows: k is u's single-column
    primary key, or the outer SELECT is DISTINCT with no aggregate and no GROUP BY."""
    if not isinstance(tree, exp.Select) or tree.args.get("joins"):
        return None
    frm = _from(tree)
    where = tree.args.get("where")
    if frm is None or where is None or not isinstance(frm.this, exp.Table):
        return None
    outer = frm.this
    outer_ref = outer.alias_or_name
    conj = _flatten_and(where.this)
    ins = [c for c in conj if isinstance(c, exp.In) and isinstance(c.args.get("query"), exp.Subquery)]
    if not ins:
        return None
    node = ins[0]
    sub = node.args["query"].this
    if not isinstance(sub, exp.Select) or sub.args.get("joins") or len(sub.expressions) != 1:
        return None
    if any(sub.args.get(k) for k in ("group", "having", "limit", "order", "offset", "with")):
        return None
    sfrm = _from(sub)
    if sfrm is None or not isinstance(sfrm.this, exp.Table) or not isinstance(sub.expressions[0], exp.Column):
        return None
    inner = sfrm.this
    key = sub.expressions[0].name.lower()
    unique = _pk(schema, inner.name) == [key]
    distinct_ok = (tree.args.get("distinct") is not None and not tree.args.get("group")
                   and not any(isinstance(e, exp.AggFunc) for s in tree.expressions for e in s.find_all(exp.AggFunc)))
    if not (unique or distinct_ok):
        return None
    inner_refs = {inner.name.lower(), inner.alias_or_name.lower()}
    # the subquery must only reference its own table (no correlation), and no nested queries
    for c in sub.find_all(exp.Column):
        q = c.args.get("table")
        if q is not None and q.name.lower() not in inner_refs:
            return None
    if any(True for _ in sub.find_all(exp.Subquery)):
        return None
    used = {t.alias_or_name.lower() for t in tree.find_all(exp.Table)} | {t.name.lower() for t in tree.find_all(exp.Table)}
    j = next(n for n in ("J1", "J2", "J3", "sub_j") if n.lower() not in used)
    sub_cols = set(id(c) for c in sub.find_all(exp.Column))
    # qualify the outer query's bare columns with the outer table (the join may add names)
    for c in list(tree.find_all(exp.Column)):
        if id(c) in sub_cols or c.args.get("table") is not None or isinstance(c.this, exp.Star):
            continue
        if c.find_ancestor(exp.Select) is not tree:  # another subquery's own scope
            continue
        c.set("table", exp.to_identifier(outer_ref))
    sub_where = sub.args.get("where")
    for c in (sub_where.find_all(exp.Column) if sub_where is not None else []):
        c.set("table", exp.to_identifier(j))
    lhs = node.this.copy()
    on = exp.EQ(this=lhs, expression=exp.column(sub.expressions[0].name, table=j))
    rest = [c.copy() for c in conj if c is not node]
    if sub_where is not None:
        rest.append(exp.Paren(this=sub_where.this.copy()))
    tree.set("where", exp.Where(this=exp.and_(*rest)) if rest else None)
    join = exp.Join(this=exp.Table(this=inner.this.copy(), alias=exp.TableAlias(this=exp.to_identifier(j))),
                    on=on)
    tree.set("joins", [join])
    return tree


REWRITES: dict[str, Callable[[exp.Expression, Random, Schema | None], exp.Expression | None]] = {
    "commute_and": rw_commute_and,
    "negated_comparison": rw_negated_comparison,
    "mirror_comparison": rw_mirror_comparison,
    "rename_aliases": rw_rename_aliases,
    "in_to_join": rw_in_to_join,
}


def rewrite_sql(sql: str, rule: str, rng: Random, schema: Schema | None = None) -> str | None:
    """Apply one rewrite rule; None when it does not apply (or the SQL does not parse)."""
    try:
        tree = parse_sql(sql)
    except SQLParseError:
        return None
    before = to_sql(tree)
    out = REWRITES[rule](tree, rng, schema)
    if out is None:
        return None
    text = to_sql(out)
    return text if text != before else None


# ------------------------------------------------------------------------------------------
# equivalence / validity checks
# ------------------------------------------------------------------------------------------
def same_results(sql_a: str, db_a: str | Path, sql_b: str, db_b: str | Path | None = None) -> bool:
    """Both run on their databases and return the same rows (as lists when `sql_a` orders)."""
    a = run_sql(db_a, sql_a, timeout_s=5.0)
    if not a.ok:
        return False
    b = run_sql(db_b or db_a, sql_b, timeout_s=5.0)
    return b.ok and len(a.columns) == len(b.columns) and results_match(a.rows, b.rows, has_order_by(sql_a))


def _compiles(sql: str, schema: Schema) -> bool:
    return valid_sql(sql, schema)[0]


def _renamed_compiles(sql: str, schema: Schema) -> bool:
    """`_compiles` for `rename_sql` output (generated by sqlglot from a parsed query, so only
    SQLite's compile step, EXPLAIN on the schema-only database, is left to check)."""
    try:
        db = schema_db(schema)
    except (OSError, sqlite3.Error):   # as valid_sql: an unbuildable schema rejects the copy
        return False
    return run_sql(db, sql, explain_only=True, timeout_s=2.0, max_rows=10**9).ok


# ------------------------------------------------------------------------------------------
# schema renaming
# ------------------------------------------------------------------------------------------
SYNONYMS = {
    "name": ["title", "full_name", "label"], "age": ["years", "age_years"], "city": ["town", "city_name"],
    "country": ["nation", "country_name"], "price": ["cost", "amount"], "year": ["yr", "year_num"],
    "id": ["identifier", "key_id"], "date": ["day", "date_value"], "salary": ["pay", "wage"],
    "student": ["pupil", "learner"], "teacher": ["instructor", "tutor"], "employee": ["staff", "worker"],
    "singer": ["vocalist", "performer"], "song": ["track", "tune"], "customer": ["client", "buyer"],
    "product": ["item", "goods"], "order": ["purchase", "booking"], "orders": ["purchases", "bookings"],
    "address": ["location", "addr"], "phone": ["telephone", "phone_no"], "email": ["mail", "email_addr"],
    "type": ["kind", "category"], "number": ["num", "count_value"], "description": ["details", "desc_text"],
    "location": ["place", "site"], "company": ["firm", "business"], "flight": ["trip", "air_trip"],
    "airport": ["airfield", "air_port"], "airline": ["carrier", "air_carrier"], "aircraft": ["airplane", "plane"],
    "department": ["division", "dept"], "store": ["shop", "outlet"], "movie": ["film", "picture"],
    "country_code": ["nation_code"], "capacity": ["size_limit", "max_capacity"], "height": ["tallness", "stature"],
    "weight": ["mass", "heaviness"], "gender": ["sex"], "sex": ["gender"], "rank": ["position", "ranking"],
    "population": ["inhabitants", "pop"], "stadium": ["arena", "venue"], "concert": ["show", "gig"],
    "pilot": ["aviator", "flyer"], "distance": ["length_km", "span"], "destination": ["arrival_city", "dest"],
    "origin": ["departure_city", "source_city"], "budget": ["funds", "spending"], "head": ["chief", "leader"],
}
_STYLES_TABLE = ["{n}_info", "{n}_record", "tbl_{n}", "{n}_data", "{n}_list"]
_STYLES_COL = ["{n}_val", "{n}_field", "the_{n}", "{n}_attr", "col_{n}"]
_RESERVED = {"select", "from", "where", "group", "order", "by", "table", "index", "join", "on", "as",
             "and", "or", "not", "in", "limit", "having", "union", "values", "key", "primary", "desc", "asc",
             "count", "sum", "max", "min", "avg", "distinct", "between", "like", "is", "null", "case"}

# Words for the "novel" style: plausible identifier words unrelated to any schema domain.
# Checked by tests: none is an SQL keyword or function name, each parses as a plain identifier.
_NOVEL_NOUNS = """
acorn almond amber anchor anvil apron arbor arrow aspen atlas autumn badger badge banner barley
barrel basket bayou beacon beetle biscuit bison blossom bolt boulder bramble breeze bridge brook
bucket buckle cabin cactus canal candle canvas canyon cargo carrot castle cavern cedar cello chapel
cherry chisel cinder citadel cliff clover cobalt comet compass condor copper coral cottage cradle
crane crater creek cricket crown crystal cypress dagger dingo dolphin domino dragon drum dune eagle
easel ember emblem engine estate fable falcon feather fern ferret ferry fiddle fjord flint forest
fossil fountain galaxy garden garland garnet gazelle geyser glacier goblet gondola granite gravel
grove hammock hamlet harbor harvest hazel hearth helmet heron hickory hive hopper horizon iguana
island ivory jacket jaguar jasmine jetty jewel journal jungle juniper kayak kettle kiln kingdom
koala ladder lagoon lantern lattice ledger lemon lily lizard llama locket loom lotus lynx magnet
mallet mango mantle maple marble marlin marsh meadow medal mesa meteor mill mirror mosaic moss
mountain mule nectar needle nest nomad nutmeg oasis ocean onyx opal orchard osprey otter oyster
paddle pagoda palace panda panther parcel parrot pasture pavilion peach pebble pelican pennant
pepper pewter piano pier pilgrim pillar pine pinnacle planet plaza plume pocket pond poplar portal
prairie prism puffin pumpkin quarry quartz quill quokka rabbit radish raft rampart raven reed reef
ribbon ridge river robin rocket rudder sable saddle saffron salmon sapphire satchel scarab scroll
sequoia shell shore sierra skiff slate sparrow spade spindle spire spruce squid stable statue
steeple stone storm stream summit sundial swallow tablet talon tapir temple thimble thistle thorn
thunder ticket tiger timber topaz torch toucan tower trail trellis trophy trout trumpet tuba tulip
tundra tunnel turtle valley velvet vessel village vine viola voucher wagon walnut walrus warden
weasel wharf whistle willow wizard wren yak yarn zebra zephyr zinnia
""".split()
_NOVEL_ADJECTIVES = """
ancient azure blue bold brave bright brisk calm cheerful clever coastal cosmic crimson crisp curly
dapper distant dusty eager early fancy fierce fluffy frosty fuzzy gentle giant glossy golden grand
green happy hardy hazy hidden humble icy jade jolly keen lively lofty loyal lucky lunar magic
mellow merry misty modest mossy narrow neat nimble noble odd pale plain polar proud quaint quiet
rapid red royal rosy rugged rustic rusty salty sandy scarlet sharp shiny shy silent sleek smooth
snowy soft solar sour spicy stony stormy sturdy sunlit sunny sweet swift tall tender tidy tiny
urban vast vivid warm weary wild windy wise wooden woolly young zesty
""".split()
# Second words that make a column-like identifier (harbor_count, blue_ledger_code).
_NOVEL_COLUMN_TAILS = ["count", "code", "amount", "level", "score", "size", "status", "kind", "label",
                       "note", "flag", "mark", "tag", "stamp", "qty", "num", "ref", "rate", "weight", "span"]
# SQLite keywords and built-in function names: never used as a novel name or a word of one.
_SQL_WORDS = set("""
abort action add after all alter always analyze and as asc attach autoincrement before begin between
by cascade case cast check collate column commit conflict constraint create cross current
current_date current_time current_timestamp database default deferrable deferred delete desc detach
distinct do drop each else end escape except exclude exclusive exists explain fail filter first
following for foreign from full generated glob group groups having if ignore immediate in index
indexed initially inner insert instead intersect into is isnull join key last left like limit match
materialized natural no not nothing notnull null nulls of offset on or order others outer over
partition plan pragma preceding primary query raise range recursive references regexp reindex
release rename replace restrict returning right rollback row rows savepoint select set table temp
temporary then ties to transaction trigger unbounded union unique update using vacuum values view
virtual when where window with without
abs avg changes char coalesce count date datetime format glob group_concat hex ifnull iif instr
julianday length likelihood likely lower ltrim max min nullif printf quote random randomblob round
rtrim sign soundex sqlite_version strftime string_agg substr substring sum time total trim typeof
unicode unixepoch unlikely upper zeroblob
year month day hour minute second value values top number text integer real blob numeric boolean
""".split())


def _name_tokens(name: str) -> set[str]:
    """Lower-case words of an identifier (snake_case and camelCase split): ``StuID`` -> {stu, id}."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return {w for w in re.split(r"[\W_]+", spaced.lower()) if w}


def _is_key_column(name: str) -> bool:
    """``singer_id``, ``StuID``, ``CustomerId`` (but not ``id`` itself)."""
    if name.lower() == "id":
        return False
    return name.lower().endswith("_id") or re.search(r"[a-z0-9](?:Id|ID)$", name) is not None


def _novel_name(old: str, kind: str, rng: Random, taken: set[str], forbidden: set[str]) -> str | None:
    """A new identifier from the word pool for `old` (a table or a column).

    Never contains `old` (case-insensitive), never uses a word of `forbidden` (the words of
    every original name of the database) nor an SQL word, unique against `taken` (lower
    case). Key columns (``singer_id``) get ``<novel>_id``. None when 60 draws all collide."""
    old_l = old.lower()
    key = kind == "column" and _is_key_column(old)
    for attempt in range(60):
        r = rng.random() if attempt < 20 else 0.4 + 0.6 * rng.random()  # later: two-word shapes only
        if r < 0.4:
            words = [rng.choice(_NOVEL_NOUNS)]
        elif r < 0.65:
            words = [rng.choice(_NOVEL_ADJECTIVES), rng.choice(_NOVEL_NOUNS)]
        elif r < 0.85 or kind == "table" or key:
            words = [rng.choice(_NOVEL_NOUNS), rng.choice(_NOVEL_NOUNS)]
        else:
            words = [rng.choice(_NOVEL_NOUNS), rng.choice(_NOVEL_COLUMN_TAILS)]
        if len(set(words)) < len(words) or any(w in forbidden for w in words):
            continue
        if key:
            words.append("id")
        name = "_".join(words)
        if name in taken or name in _SQL_WORDS or name in _RESERVED or old_l in name:
            continue
        return name
    return None


@dataclass
class Renaming:
    tables: dict[str, str] = field(default_factory=dict)    # lower(old) -> new
    columns: dict[str, str] = field(default_factory=dict)   # lower(old) -> new (db-wide)
    # rename_question's compiled mention pattern, built once per renaming
    _question_re: tuple | None = field(default=None, repr=False, compare=False)

    def table(self, name: str) -> str:
        return self.tables.get(name.lower(), name)

    def column(self, name: str) -> str:
        return self.columns.get(name.lower(), name)


def _new_name(old: str, styles: list[str], rng: Random, taken: set[str]) -> str | None:
    words = old.split("_")
    cands = []
    if old.lower() in SYNONYMS:
        cands += SYNONYMS[old.lower()]
    swapped = [rng.choice(SYNONYMS[w.lower()]) if w.lower() in SYNONYMS else w for w in words]
    if swapped != words:
        cands.append("_".join(swapped))
    rng.shuffle(cands)
    cands += [s.format(n=old) for s in rng.sample(styles, len(styles))]
    for c in cands:
        c = re.sub(r"\W", "_", c)
        if c.lower() not in taken and c.lower() not in _RESERVED and c.lower() != old.lower():
            return c
    return None


def make_renaming(schema: Schema, rng: Random, *, p_table: float = 0.6, p_column: float = 0.5,
                  style: str = "synonyms") -> Renaming:
    """Pick new names for a random subset of tables and (db-wide) column names; at least one
    name changes. `p_table`/`p_column`: the chance each name is renamed (1.0: all of them);
    `style`: ``synonyms`` (`_new_name`) or ``novel`` (`_novel_name`)."""
    if style not in RENAME_STYLES:
        raise ValueError(f"rename style {style!r} is not one of {', '.join(RENAME_STYLES)}")
    ren = Renaming()
    tnames = {t.name.lower() for t in schema.tables}
    cnames = {c.name.lower() for t in schema.tables for c in t.columns}
    taken = tnames | cnames
    forbidden: set[str] = set()
    if style == "novel":
        for n in {t.name for t in schema.tables} | {c.name for t in schema.tables for c in t.columns}:
            forbidden |= _name_tokens(n)
    for _ in range(3):
        for t in schema.tables:
            if t.name.lower() not in ren.tables and rng.random() < p_table:
                if style == "novel":
                    new = _novel_name(t.name, "table", rng, taken, forbidden)
                else:
                    new = _new_name(t.name, _STYLES_TABLE, rng, taken)
                if new:
                    ren.tables[t.name.lower()] = new
                    taken.add(new.lower())
        for c in sorted(cnames):
            if c not in ren.columns and rng.random() < p_column:
                orig = next(col.name for t in schema.tables for col in t.columns if col.name.lower() == c)
                if style == "novel":
                    new = _novel_name(orig, "column", rng, taken, forbidden)
                else:
                    new = _new_name(orig, _STYLES_COL, rng, taken)
                if new:
                    ren.columns[c] = new
                    taken.add(new.lower())
        if ren.tables or ren.columns:
            break
    return ren


def rename_schema(schema: Schema, ren: Renaming, db_id: str) -> Schema:
    return Schema(
        db_id,
        [Table(ren.table(t.name), [Column(ren.column(c.name), c.type, c.primary_key) for c in t.columns])
         for t in schema.tables],
        [ForeignKey(ren.table(f.table), ren.column(f.column), ren.table(f.ref_table),
                    ren.column(f.ref_column) if f.ref_column else f.ref_column) for f in schema.foreign_keys],
    )


def rename_sql(sql: str, ren: Renaming, schema: Schema) -> str | None:
    """`sql` with the renamed tables and columns (aliases untouched); None when a name is
    ambiguous (a column alias that is also a renamed column) or the SQL does not parse."""
    try:
        tree = parse_sql(sql)
    except SQLParseError:
        return None
    aliases = set(_table_aliases(tree))
    col_aliases = {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    cols = {c.name.lower() for t in schema.tables for c in t.columns}
    if col_aliases & set(ren.columns):
        return None
    if aliases & set(ren.tables):  # an alias named like a renamed table
        return None
    for t in tree.find_all(exp.Table):
        if t.name.lower() in ren.tables:
            t.set("this", exp.to_identifier(ren.tables[t.name.lower()]))
    for c in tree.find_all(exp.Column):
        if isinstance(c.this, exp.Star):
            continue
        q = c.args.get("table")
        if q is not None and q.name.lower() in ren.tables and q.name.lower() not in aliases:
            c.set("table", exp.to_identifier(ren.tables[q.name.lower()]))
        name = c.name.lower()
        if name in ren.columns and name in cols:
            c.set("this", exp.to_identifier(ren.columns[name]))
    return to_sql(tree)


def _mention_forms(name: str) -> list[tuple[str, bool]]:
    """How a question may mention identifier `name`: (lower-case form, underscored?).
    ``singer_id`` -> ``singer_id``, ``singer id``; ``HighSchooler`` -> ``highschooler``,
    ``high schooler``."""
    low = name.lower()
    forms = [(low, "_" in low)]
    spaced = " ".join(low.replace("_", " ").split())
    camel = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    camel = " ".join(camel.replace("_", " ").lower().split())
    for f in (spaced, camel):
        if f and all(f != g for g, _ in forms):
            forms.append((f, False))
    return forms


def _question_pattern(ren: Renaming, schema: Schema):
    """(regex, {lower-case mention: replacement}) for `rename_question`, cached on `ren` (a
    renaming belongs to the one schema it was made for)."""
    if ren._question_re is not None:
        return ren._question_re
    originals = {t.name.lower(): t.name for t in schema.tables}
    for t in schema.tables:
        for c in t.columns:
            originals.setdefault(c.name.lower(), c.name)
    exact: dict[str, str] = {}
    derived: dict[str, str] = {}
    for old, new in list(ren.tables.items()) + list(ren.columns.items()):
        if len(old) < 3:
            continue
        for form, underscored in _mention_forms(originals.get(old, old)):
            n = new if underscored else new.replace("_", " ")
            exact.setdefault(form, n)  # tables first: a table's mention wins over a column's
            variants = [(form + "s", pluralize(n)), (form + "es", pluralize(n))]
            if re.search(r"[^aeiou]y$", form):
                variants.append((form[:-1] + "ies", pluralize(n)))
            # a plural name mentioned in the singular ("orders": "the order's id")
            if re.search(r"[^aeiou]ies$", form):
                variants.append((form[:-3] + "y", n))
            elif re.search(r"[^su]s$", form) and len(form) > 3:
                variants.append((form[:-1], n))
            for k, v in variants:
                derived.setdefault(k, v)
    repl = dict(derived)
    repl.update(exact)  # a name's own spelling wins over another's plural/singular
    pat = None
    if repl:
        keys = sorted(repl, key=len, reverse=True)
        pat = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b", re.I)
    ren._question_re = (pat, repl)
    return ren._question_re


def _match_case(src: str, new: str) -> str:
    """`new` capitalized like the mention it replaces (``Singers`` -> ``Harbors``); identifier
    spelling otherwise (an all-caps mention keeps the new name's own spelling)."""
    if src[:1].isupper() and not (len(src) > 1 and src.isupper()) and new[:1].islower():
        return new[:1].upper() + new[1:]
    return new


def _sql_values(sql: str | None, schema: Schema) -> list[str]:
    """The string values of `sql` (quoted literals, ``%`` of LIKE patterns stripped, and
    double-quoted words SQLite reads as strings)."""
    if not sql or not sql.strip():
        return []
    try:
        tree = read_sql(sql)  # the shared parse: read only
    except SQLParseError:
        return []
    cols = {c.name.lower() for t in schema.tables for c in t.columns}
    vals = [lit.this.strip("%").strip() for lit in tree.find_all(exp.Literal) if lit.is_string]
    vals += [c.name.strip() for c in tree.find_all(exp.Column)
             if c.this.args.get("quoted") and c.args.get("table") is None and c.name.lower() not in cols]
    return [v for v in vals if len(v) >= 2]


_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|(?<!\w)'[^']*'(?!\w)")


def rename_question(question: str, ren: Renaming, schema: Schema, sql: str | None = None) -> str:
    """Mentions of renamed tables/columns replaced by the new names, matched case-insensitively
    as written in the schema (``singer_id``), with underscores or camelCase read as spaces
    (``singer id``, ``high schooler``), and as plurals (-s, -es, -y -> -ies). Spaced mentions get
    the new name with spaces, underscored ones with underscores; a capitalized mention stays
    capitalized. Names shorter than 3 characters are left alone, and so are quoted spans of
    the question and the string values of `sql` where the question repeats them
    (``award "Tony Award"``: the value stays, the column mention is renamed)."""
    pat, repl = _question_pattern(ren, schema)
    if pat is None:
        return question
    keep = [m.span() for m in _QUOTED.finditer(question)]
    low = question.lower()
    for v in _sql_values(sql, schema):
        for m in re.finditer(r"(?<!\w)" + re.escape(v.lower()) + r"(?!\w)", low):
            keep.append(m.span())

    def sub(m: re.Match) -> str:
        a, b = m.span()
        if any(a < kb and ka < b for ka, kb in keep):
            return m.group(0)
        return _match_case(m.group(0), repl[m.group(0).lower()])

    return pat.sub(sub, question)


def rename_database(src: str | Path, dst: str | Path, ren: Renaming, schema: Schema) -> Path:
    """Copy a SQLite database and apply the renaming with ALTER TABLE (atomic)."""
    src, dst = Path(src), Path(dst)
    if dst.is_file():
        return dst
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        con = sqlite3.connect(tmp)
        try:
            con.execute("PRAGMA legacy_alter_table = OFF")
            actual = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for t in actual:
                for col in [r[1] for r in con.execute(f'PRAGMA table_info("{t}")')]:
                    if col.lower() in ren.columns:
                        con.execute(f'ALTER TABLE "{t}" RENAME COLUMN "{col}" TO "{ren.columns[col.lower()]}"')
            for t in actual:
                if t.lower() in ren.tables:
                    con.execute(f'ALTER TABLE "{t}" RENAME TO "{ren.tables[t.lower()]}"')
            con.commit()
        finally:
            con.close()
    return dst


# ------------------------------------------------------------------------------------------
# the data-path entry point
# ------------------------------------------------------------------------------------------
@dataclass
class AugmentStats:
    considered: int = 0
    augmented: int = 0
    renamed: int = 0
    rename_tried: int = 0   # renamed copies attempted (renamed + the "rename: ..." rejections)
    dropped_originals: int = 0   # originals replaced by their renamed copies (keep_original false)
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, why: str) -> None:
        self.rejected[why] = self.rejected.get(why, 0) + 1


def _variant_key(db_id: str, k: int) -> str:
    return f"{db_id}__r{k}"


def _renaming_digest(ren: Renaming) -> str:
    """Short digest of a renaming: a renamed database file made under other settings (style,
    fractions, seed) is never reused for this one."""
    text = repr((sorted(ren.tables.items()), sorted(ren.columns.items())))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class RenameSettings:
    """The ``data.schema_*`` renaming keys (defaults: DataConfig's)."""
    copies: int = _D.schema_perturbation_copies
    variants: int = _D.schema_rename_variants
    style: str = _D.schema_rename_style
    p_table: float = _D.schema_rename_table_fraction
    p_column: float = _D.schema_rename_column_fraction

    @classmethod
    def from_config(cls, data_cfg) -> "RenameSettings":
        def get(key):
            return getattr(data_cfg, key, getattr(_D, key))
        copies = max(1, int(get("schema_perturbation_copies")))
        style = str(get("schema_rename_style"))
        if style not in RENAME_STYLES:
            raise ValueError(f"schema_rename_style {style!r} is not one of {', '.join(RENAME_STYLES)}")
        return cls(copies, max(copies, int(get("schema_rename_variants"))), style,
                   float(get("schema_rename_table_fraction")), float(get("schema_rename_column_fraction")))


def augment_examples(examples: list[Example], schemas: dict[str, Schema], data_cfg, rng: Random, *,
                     db_dir: str | Path | None = None, verify: bool = True,
                     stats: AugmentStats | None = None) -> tuple[list[Example], dict[str, Schema]]:
    """The originals plus new augmented examples, and `schemas` plus the renamed variants.

    For each example, with probability ``data_cfg.augmentation_prob`` a paraphrased question
    or an equivalent SQL rewrite is added, and with ``data_cfg.schema_perturbation_prob``
    ``data_cfg.schema_perturbation_copies`` copies on renamed schemas, each on a different
    variant (db_id ``<db>__r<k>``, k < ``schema_rename_variants``). With `db_dir`, renamed
    copies of real databases are written there and the new examples point at them.
    """
    p_aug = float(getattr(data_cfg, "augmentation_prob", _D.augmentation_prob))
    p_ren = float(getattr(data_cfg, "schema_perturbation_prob", _D.schema_perturbation_prob))
    seed = int(getattr(data_cfg, "seed", _D.seed))
    rs = RenameSettings.from_config(data_cfg)
    stats = stats if stats is not None else AugmentStats()
    schemas = dict(schemas)
    out = list(examples)
    if p_aug <= 0 and p_ren <= 0:
        return out, schemas
    renamings: dict[str, Renaming] = {}
    keep_original = bool(getattr(data_cfg, "schema_perturbation_keep_original", _D.schema_perturbation_keep_original))
    for i, ex in enumerate(examples):
        stats.considered += 1
        if p_aug > 0 and rng.random() < p_aug:
            new = _augment_one(ex, schemas.get(ex.db_id), rng, verify, stats)
            if new is not None:
                out.append(new)
                stats.augmented += 1
        if p_ren > 0 and rng.random() < p_ren:
            # one copy: the historical draw (same stream as before these keys existed)
            ks = [rng.randrange(rs.variants)] if rs.copies == 1 else rng.sample(range(rs.variants), rs.copies)
            made = 0
            for k in ks:
                stats.rename_tried += 1
                new = _rename_one(ex, schemas, renamings, k, rs, seed, db_dir, verify, stats)
                if new is not None:
                    out.append(new)
                    stats.renamed += 1
                    made += 1
            if made and not keep_original:
                out[i] = None          # replaced by its renamed copies (never lost without one)
                stats.dropped_originals += 1
    return [e for e in out if e is not None], schemas


def _augment_one(ex: Example, schema: Schema | None, rng: Random, verify: bool,
                 stats: AugmentStats) -> Example | None:
    ops = ["paraphrase"] + list(REWRITES)
    rng.shuffle(ops)
    # paraphrasing always applies: try the SQL rewrites first half of the time
    if rng.random() < 0.5:
        ops.remove("paraphrase")
        ops.append("paraphrase")
    db = ex.db_path if ex.db_path and Path(ex.db_path).is_file() else None
    for op in ops:
        if op == "paraphrase":
            q = paraphrase_question(ex.question, rng)
            if q and q != ex.question:
                return _derived(ex, "para", question=q, ops=[op])
            continue
        sql = rewrite_sql(ex.query, op, rng, schema)
        if sql is None:
            continue
        if verify:
            if db is not None:
                if not same_results(ex.query, db, sql):
                    stats.reject(f"{op}: different rows")
                    continue
            elif schema is not None and not _compiles(sql, schema):
                stats.reject(f"{op}: does not compile")
                continue
        return _derived(ex, "sql", query=sql, ops=[op])
    stats.reject("no applicable augmentation")
    return None


def variant_renaming(schema: Schema, db_id: str, k: int, seed: int, rs: RenameSettings | None = None) -> Renaming:
    """The renaming of variant `k` of database `db_id` (deterministic from `seed`)."""
    rs = rs or RenameSettings()
    return make_renaming(schema, Random(f"{seed}:{db_id}:{k}"), p_table=rs.p_table, p_column=rs.p_column,
                         style=rs.style)


def _rename_one(ex: Example, schemas: dict[str, Schema], renamings: dict[str, Renaming], k: int,
                rs: RenameSettings, seed: int, db_dir, verify: bool, stats: AugmentStats) -> Example | None:
    schema = schemas.get(ex.db_id)
    if schema is None or "__r" in ex.db_id:
        stats.reject("rename: no schema")
        return None
    vid = _variant_key(ex.db_id, k)
    if vid not in renamings:
        renamings[vid] = variant_renaming(schema, ex.db_id, k, seed, rs)
        schemas[vid] = rename_schema(schema, renamings[vid], vid)
    ren = renamings[vid]
    sql = rename_sql(ex.query, ren, schema)
    if sql is None:
        stats.reject("rename: ambiguous names")
        return None
    new_db_path = None
    if ex.db_path and Path(ex.db_path).is_file() and db_dir is not None:
        try:
            new_db_path = str(rename_database(ex.db_path, Path(db_dir) / f"{vid}-{_renaming_digest(ren)}.sqlite",
                                              ren, schema))
        except sqlite3.Error:
            stats.reject("rename: database rename failed")
            new_db_path = None
    if verify:
        if new_db_path is not None:
            if not same_results(ex.query, ex.db_path, sql, new_db_path):
                stats.reject("rename: different rows")
                return None
        elif not _renamed_compiles(sql, schemas[vid]):
            stats.reject("rename: does not compile")
            return None
    q = rename_question(ex.question, ren, schema, ex.query)
    return _derived(ex, f"r{k}", question=q, query=sql, db_id=vid, db_path=new_db_path, ops=["rename_schema"])


def _derived(ex: Example, tag: str, *, ops: list[str], **changes) -> Example:
    extra = copy.deepcopy(ex.extra)
    extra["augmented"] = ops
    extra["orig_id"] = ex.id
    changes.setdefault("db_path", ex.db_path)
    return replace(ex, id=f"{ex.id}#{tag}", extra=extra, **changes)
