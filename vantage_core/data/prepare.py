"""From a data source to what the trainer consumes: tokenized training sequences, a validation
split carved from the training data by database, and the tokenizer. One path for every source:

    parse_source -> load_source (one loader per format) -> carve_validation (the one split)
    -> schema_texts -> train_tokenizer (cached under cache_root()) -> encode_all -> eval_slice

`prepare_data` runs it in the process (a sweep prepares its data once and shares it with every
trial); `vantage-data preprocess` (preprocess.py) runs the same loaders, split, tokenizer and
encoder over several sources and writes a processed folder, which `load_processed` reads back.

Sources: ``synthetic`` (embedded generator), ``spider:PATH`` or a Spider-layout folder, and a
processed folder (``vantage-data preprocess``)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import Config
from ..errors import DataError
from .augment import AugmentStats, augment_examples
from .bird import load_bird
from .cache import cache_root
from .example import Example
from .gretel import load_gretel
from .mix import mix_examples, proportions_table, weights_from_config
from .readers import DatasetSplits, load_spider, parse_source
from .schema import Schema, sample_values, serialize_schema
from .synthetic import generate_synthetic
from .tokenizer import MemoTokenizer, SQLTokenizer, encode_example, init_tokenizer
from .wikisql import load_wikisql

log = logging.getLogger(__name__)

EVAL_SLICE_SEED = 1234


@dataclass
class Encoded:
    ids: list[int]
    sql_start: int   # index of the first SQL token (loss starts predicting here)


@dataclass
class PreparedData:
    source: str
    tokenizer: SQLTokenizer
    train: list[Encoded]
    train_examples: list[Example]
    valid: list[Example]          # validation split (unseen databases)
    valid_encoded: list[Encoded]
    eval_examples: list[Example]  # fixed slice of `valid` decoded at every evaluation
    eval_prompts: list[list[int]]
    schemas: dict[str, Schema]
    splits: DatasetSplits
    skipped: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "train_examples": len(self.train),
            "valid_examples": len(self.valid),
            "eval_examples": len(self.eval_examples),
            "train_dbs": sorted({e.db_id for e in self.train_examples}),
            "valid_dbs": sorted({e.db_id for e in self.valid}),
            "tokenizer": self.tokenizer.fingerprint(),
            "vocab_size": self.tokenizer.vocab_size,
        }


# ------------------------------------------------------------------------------------------
# the steps, shared with preprocess.py
# ------------------------------------------------------------------------------------------
def load_source(name: str, root: Path, *, strict: bool = False) -> DatasetSplits:
    """The one loader of each format (`name`: spider, synthetic, bird, wikisql, gretel, or the
    name a Spider-layout folder's examples carry)."""
    if name == "bird":
        return load_bird(root)
    if name == "wikisql":
        return load_wikisql(root)
    if name == "gretel":
        return load_gretel(root)
    return load_spider(root, source=name, strict=strict)


def resolve_source(source: str, cfg: Config) -> DatasetSplits:
    kind, p = parse_source(source)
    if kind == "synthetic":
        d = cfg.data
        out = cache_root() / (f"synthetic-s{d.seed}-n{d.synthetic_num_databases}-e{d.synthetic_examples_per_db}"
                              f"-v{d.synthetic_name_variation:g}")
        root = generate_synthetic(out, num_databases=d.synthetic_num_databases,
                                  examples_per_db=d.synthetic_examples_per_db, seed=d.seed,
                                  name_variation=d.synthetic_name_variation)
        return load_source("synthetic", root, strict=True)
    if kind == "spider":
        return load_source("spider", p, strict=True)
    if kind == "folder":
        return load_source(p.name, p, strict=True)
    if kind == "processed":
        return processed_splits(p)
    raise DataError(f"data source '{source}': expected 'synthetic', 'spider:PATH', a folder "
                    "in the Spider layout or a processed folder (vantage-data preprocess)")


def carve_validation(examples: list[Example], fraction: float, seed: int,
                     by: str = "database") -> tuple[list[Example], list[Example]]:
    """Seeded train/validation split of training examples (the validation ones get
    ``split="validation"``). ``by="database"`` holds out whole databases, so validation
    measures generalization to unseen schemas, and always leaves one for training (falls back
    to examples when there is a single database)."""
    rng = random.Random(seed)
    if by == "database":
        dbs = sorted({e.db_id for e in examples})
        if len(dbs) >= 2:
            rng.shuffle(dbs)
            val = set(dbs[:min(len(dbs) - 1, max(1, round(fraction * len(dbs))))])
            return _mark([e for e in examples if e.db_id not in val], [e for e in examples if e.db_id in val])
    elif by != "example":
        raise DataError(f"split_by={by!r}: choose database or example")
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    val = set(idx[:max(1, round(fraction * len(examples))) if len(examples) > 1 else 0])
    return _mark([e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val])


def _mark(train: list[Example], valid: list[Example]) -> tuple[list[Example], list[Example]]:
    for e in valid:
        e.split = "validation"
    return train, valid


def schema_texts(schemas: dict[str, Schema], db_path: Callable[[str], Path | str | None], db_ids, cfg: Config,
                 skipped: list[dict] | None = None) -> tuple[dict[str, str], dict[str, dict]]:
    """The prompt text of each database (with sample values read from its file when
    ``data.include_sample_values``) and the values read. An unreadable database file raises,
    or is recorded in `skipped` (schema only) when one is given."""
    values: dict[str, dict] = {}
    if cfg.data.include_sample_values:
        for db in sorted(db_ids):
            p = db_path(db)
            if p is None:
                continue
            try:
                values[db] = sample_values(p, schemas[db])
            except Exception:  # a corrupt database file
                if skipped is None:
                    raise
                skipped.append({"source": "", "file": str(p), "example": "", "reason": "database unreadable (schema only)"})
    return {db: serialize_schema(schemas[db], sample_values=values.get(db), style=cfg.data.schema_format)
            for db in db_ids}, values


def train_tokenizer(texts: list[str], vocab_size: int) -> SQLTokenizer:
    """A BPE tokenizer of `texts`, trained once per text set (cached under cache_root())."""
    h = hashlib.sha256()
    h.update(str(vocab_size).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    path = cache_root() / "tokenizers" / f"bpe-{vocab_size}-{h.hexdigest()[:16]}.json"
    if path.is_file():
        return SQLTokenizer.load(path)
    tok = SQLTokenizer.train(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(path)
    return tok


def encode_all(tok: SQLTokenizer, examples: list[Example], schema_text: dict[str, str], max_len: int,
               skipped: dict[str, int], sql: Callable[[Example], str]) -> tuple[list[Example], list[Encoded]]:
    """The examples that fit `max_len` and their token ids (the others counted as too_long)."""
    tok = tok if isinstance(tok, MemoTokenizer) else MemoTokenizer(tok)   # schemas repeat
    kept, encoded = [], []
    for e in examples:
        en = encode_example(tok, schema_text[e.db_id], e.question, sql(e), max_len, e.evidence)
        if en is None:
            skipped["too_long"] = skipped.get("too_long", 0) + 1
            continue
        kept.append(e)
        encoded.append(Encoded(*en))
    return kept, encoded


def eval_slice(valid: list[Example], valid_enc: list[Encoded], n: int) -> tuple[list[Example], list[list[int]]]:
    """A fixed, seeded slice of validation for the periodic decode (the same across trials)."""
    order = list(range(len(valid)))
    random.Random(EVAL_SLICE_SEED).shuffle(order)
    order = sorted(order[:n])
    return [valid[i] for i in order], [valid_enc[i].ids[: valid_enc[i].sql_start] for i in order]


def _check_vocab(tok: SQLTokenizer, cfg: Config, where: str) -> None:
    if tok.vocab_size > cfg.model.vocab_size:
        raise DataError(f"{where}tokenizer has {tok.vocab_size} tokens but model.vocab_size is "
                        f"{cfg.model.vocab_size}")


# ------------------------------------------------------------------------------------------
# in the process
# ------------------------------------------------------------------------------------------
def prepare_data(cfg: Config, *, source: str | None = None, tokenizer: SQLTokenizer | None = None,
                 final_split: str = "validation") -> PreparedData:
    """Load, split, train (or reuse) the tokenizer and encode.

    `final_split="dev"` evaluates on the source's dev set instead of the carved validation
    split (used only to score a promoted configuration).
    """
    source = source or cfg.data.source
    if tokenizer is None and cfg.model.init_from:
        tokenizer = init_tokenizer(cfg.model.init_from, cfg.model.vocab_size)
    kind, path = parse_source(source)
    if kind == "processed":   # processed folders carry their split, ids and tokenizer
        return load_processed(cfg, path, tokenizer=tokenizer, final_split=final_split)
    splits = resolve_source(source, cfg)
    if not splits.train:
        raise DataError(f"data source '{source}': no training examples")
    if len({e.db_id for e in splits.train}) < 2:
        raise DataError("need at least 2 training databases to carve a validation split by database")
    train_ex, valid = carve_validation(list(splits.train), cfg.data.validation_fraction, cfg.data.seed)
    if cfg.data.augmentation_prob > 0 or cfg.data.schema_perturbation_prob > 0:   # training examples only
        train_ex, splits.schemas = augment_examples(train_ex, splits.schemas, cfg.data, random.Random(cfg.data.seed))
    if final_split == "dev":
        if not splits.dev:
            raise DataError(f"data source '{source}': has no dev split")
        valid = list(splits.dev)
    schema_text, _ = schema_texts(splits.schemas, splits.db_path, {e.db_id for e in train_ex + valid}, cfg)
    if tokenizer is None:
        texts = [schema_text[e.db_id] + " " + e.question + " " + e.query for e in train_ex]
        texts += sorted({schema_text[e.db_id] for e in valid})  # schemas only: no validation answers
        tokenizer = train_tokenizer(texts, cfg.data.tokenizer_vocab_size or cfg.model.vocab_size)
    _check_vocab(tokenizer, cfg, "")
    L = cfg.training.max_seq_length
    skipped = {"too_long": 0}
    kept_train, train = encode_all(tokenizer, train_ex, schema_text, L, skipped, lambda e: " ".join(e.query.split()))
    kept_valid, valid_enc = encode_all(tokenizer, valid, schema_text, L, skipped, lambda e: " ".join(e.query.split()))
    if not train:
        raise DataError(f"data source '{source}': every example is longer than "
                        f"training.max_seq_length={L}")
    eval_ex, eval_prompts = eval_slice(kept_valid, valid_enc, cfg.data.max_eval_examples)
    return PreparedData(source, tokenizer, train, kept_train, kept_valid, valid_enc, eval_ex,
                        eval_prompts, splits.schemas, splits, skipped)


# ------------------------------------------------------------------------------------------
# a processed folder (vantage-data preprocess) -> PreparedData
# ------------------------------------------------------------------------------------------
def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _example(r: dict) -> Example:
    return Example(**{k: r[k] for k in ("id", "source", "db_id", "question", "query", "split", "evidence",
                                        "db_path", "extra") if k in r})


def _processed_meta(root: Path) -> tuple[DatasetSplits, dict[str, str]]:
    try:
        meta = json.loads((root / "schemas.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{root}/schemas.json: unreadable ({e.__class__.__name__}); re-run vantage-data "
                        "preprocess") from None
    splits = DatasetSplits("processed", root, schemas={db: Schema.from_dict(m["schema"]) for db, m in meta.items()},
                           db_paths={db: Path(m["db_path"]) for db, m in meta.items() if m.get("db_path")})
    splits.train = [_example(r) for r in _read_rows(root / "train.jsonl")]
    splits.dev = [_example(r) for r in _read_rows(root / "dev.jsonl")]
    splits.extras["validation"] = [_example(r) for r in _read_rows(root / "validation.jsonl")]
    return splits, {db: m["schema_text"] for db, m in meta.items()}


def processed_splits(path: str | Path) -> DatasetSplits:
    """A processed folder as DatasetSplits: train (already without validation), dev, schemas;
    the carved validation examples are in ``extras["validation"]``."""
    return _processed_meta(Path(path))[0]


def load_processed(cfg: Config, path: str | Path, *, tokenizer: SQLTokenizer | None = None,
                   final_split: str = "validation") -> PreparedData:
    """PreparedData from a processed folder. Training examples are augmented
    (``data.augmentation_prob`` / ``schema_perturbation_prob``) and mixed by the
    ``data.*_weight`` keys; validation and dev never are."""
    root = Path(path)
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    tok_file = SQLTokenizer.load(root / "tokenizer.json")
    tok = tokenizer or tok_file
    _check_vocab(tok, cfg, f"{root}: ")
    L = cfg.training.max_seq_length
    reencode = tok.fingerprint() != tok_file.fingerprint() or L != summary.get("max_seq_length")
    splits, schema_text = _processed_meta(root)
    schemas = splits.schemas
    skipped = {"too_long": 0}

    def encoded(rows: list[dict]) -> tuple[list[Example], list[Encoded]]:
        stored = [(_example(r), r) for r in rows]
        for e, r in stored:
            e.extra = dict(e.extra, query_normalized=r["query_normalized"])
        if reencode or any(r.get("input_ids") is None for r in rows):
            return encode_all(tok, [e for e, _ in stored], schema_text, L, skipped,
                              lambda e: e.extra["query_normalized"])
        return [e for e, _ in stored], [Encoded(r["input_ids"], r["sql_start"]) for r in rows]

    train_ex, train_enc = encoded(_read_rows(root / "train.jsonl"))
    if not train_ex:
        raise DataError(f"{root}: no training examples")
    valid_rows = _read_rows(root / ("dev.jsonl" if final_split == "dev" else "validation.jsonl"))
    if final_split == "dev" and not valid_rows:
        raise DataError(f"{root}: has no dev split")
    valid, valid_enc = encoded(valid_rows)

    d = cfg.data
    if d.augmentation_prob > 0 or d.schema_perturbation_prob > 0:   # training examples only
        base = list(train_ex)
        for e in base:  # augment the normalized SQL (what the model learns)
            e.query = e.extra["query_normalized"]
        stats = AugmentStats()
        aug, schemas = augment_examples(base, schemas, d, random.Random(d.seed), stats=stats)
        splits.schemas = schemas
        for e in aug[len(base):]:
            if e.db_id not in schema_text:
                schema_text[e.db_id] = serialize_schema(schemas[e.db_id], style=d.schema_format)
        new_ex, new_enc = encode_all(tok, aug[len(base):], schema_text, L, skipped, lambda e: e.query)
        train_ex += new_ex
        train_enc += new_enc
        skipped["augment_rejected"] = sum(stats.rejected.values())
        log.info("augmentation: +%d paraphrased/rewritten, +%d renamed", stats.augmented, stats.renamed)

    by_src: dict[str, list[int]] = {}
    for i, e in enumerate(train_ex):
        by_src.setdefault(e.source, []).append(i)
    w = weights_from_config(d, list(by_src))
    if w and len(by_src) > 1:   # mixing
        order = mix_examples(by_src, w, n=len(train_ex), seed=d.seed)
        table = proportions_table({s: len(v) for s, v in by_src.items()}, [train_ex[i].source for i in order], w)
        log.info("training mix:\n%s", table.to_string(index=False))
        train_ex = [train_ex[i] for i in order]
        train_enc = [train_enc[i] for i in order]

    eval_ex, eval_prompts = eval_slice(valid, valid_enc, d.max_eval_examples)
    return PreparedData(str(root), tok, train_enc, train_ex, valid, valid_enc, eval_ex, eval_prompts,
                        schemas, splits, skipped)
