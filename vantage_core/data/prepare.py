"""From a data source string to what the trainer consumes: tokenized training sequences,
a validation split carved from training data by database, and the tokenizer.

Sources: ``synthetic`` (embedded generator), ``spider:PATH`` (Spider layout)."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..errors import DataError
from .example import Example
from .schema import Schema, sample_values, serialize_schema
from .spider import DatasetSplits, load_spider
from .tokenizer import SQLTokenizer, encode_example

log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("VANTAGE_CACHE", Path.home() / ".cache" / "vantage"))


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


def resolve_source(source: str, cfg: Config) -> DatasetSplits:
    if source == "synthetic":
        from .synthetic import generate_synthetic
        d = cfg.data
        out = cache_root() / (f"synthetic-s{d.seed}-n{d.synthetic_num_databases}-e{d.synthetic_examples_per_db}"
                              f"-v{d.synthetic_name_variation:g}")
        root = generate_synthetic(out, num_databases=d.synthetic_num_databases,
                                  examples_per_db=d.synthetic_examples_per_db, seed=d.seed,
                                  name_variation=d.synthetic_name_variation)
        return load_spider(root, source="synthetic")
    if source.startswith("spider:"):
        return load_spider(Path(source.split(":", 1)[1]).expanduser(), source="spider")
    p = Path(source).expanduser()
    if p.is_dir() and (p / "tables.json").is_file():
        return load_spider(p, source=p.name)
    # --- vantage-data (data issue): a processed folder from `vantage-data preprocess` ---
    if (p / "summary.json").is_file() and (p / "train.jsonl").is_file():
        from .preprocess import processed_splits
        return processed_splits(p)
    # --- end vantage-data ---
    raise DataError(f"data source '{source}': expected 'synthetic', 'spider:PATH', a folder "
                    "in the Spider layout or a processed folder (vantage-data preprocess)")


def split_by_database(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out whole databases so validation measures generalization to unseen schemas."""
    dbs = sorted({e.db_id for e in examples})
    if len(dbs) < 2:
        raise DataError("need at least 2 training databases to carve a validation split by database")
    rng = random.Random(seed)
    rng.shuffle(dbs)
    n_val = max(1, round(fraction * len(dbs)))
    val = set(dbs[:n_val])
    train = [e for e in examples if e.db_id not in val]
    valid = [e for e in examples if e.db_id in val]
    for e in valid:
        e.split = "validation"
    return train, valid


def _schema_texts(splits: DatasetSplits, cfg: Config, db_ids: set[str]) -> dict[str, str]:
    out = {}
    for db in db_ids:
        schema = splits.schemas[db]
        vals = None
        if cfg.data.include_sample_values:
            p = splits.db_path(db)
            if p is not None:
                vals = sample_values(p, schema)
        out[db] = serialize_schema(schema, sample_values=vals, style=cfg.data.schema_format)
    return out


def _tokenizer_for(texts: list[str], vocab_size: int, cache: Path) -> SQLTokenizer:
    h = hashlib.sha256()
    h.update(str(vocab_size).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    path = cache / "tokenizers" / f"bpe-{vocab_size}-{h.hexdigest()[:16]}.json"
    if path.is_file():
        return SQLTokenizer.load(path)
    tok = SQLTokenizer.train(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(path)
    return tok


def init_tokenizer(path: str | Path, vocab_size: int) -> SQLTokenizer:
    """The token ids the weights of `model.init_from` were trained with."""
    from ..errors import CheckpointError
    from ..export import is_hf_folder
    from ..model import pretrained
    from ..train.checkpoint import find_checkpoint

    if pretrained.is_dense_source(path):
        try:
            return SQLTokenizer.from_pretrained(path)
        except CheckpointError as e:
            raise DataError(f"model.init_from: {e}") from None
    p = Path(path).expanduser()
    try:
        ck = p if is_hf_folder(p) else find_checkpoint(p)   # (a crash between renames: .old)
    except CheckpointError as e:
        raise DataError(f"model.init_from: {e}") from None
    f = ck / "tokenizer.json"
    if not f.is_file():
        raise DataError(f"model.init_from: {ck} has no tokenizer.json, so the token ids of its "
                        f"weights are unknown")
    return SQLTokenizer.load_for_model(f, vocab_size)


def prepare_data(cfg: Config, *, source: str | None = None, tokenizer: SQLTokenizer | None = None,
                 final_split: str = "validation") -> PreparedData:
    """Load, split, train (or reuse) the tokenizer and encode.

    `final_split="dev"` evaluates on the source's dev set instead of the carved validation
    split (used only to score a promoted configuration).
    """
    source = source or cfg.data.source
    if tokenizer is None and cfg.model.init_from:
        tokenizer = init_tokenizer(cfg.model.init_from, cfg.model.vocab_size)
    # --- vantage-data (data issue): processed folders carry their split, ids and tokenizer ---
    _p = Path(source).expanduser()
    if source != "synthetic" and (_p / "summary.json").is_file() and (_p / "train.jsonl").is_file():
        from .preprocess import load_processed
        return load_processed(cfg, _p, tokenizer=tokenizer, final_split=final_split)
    # --- end vantage-data ---
    splits = resolve_source(source, cfg)
    if not splits.train:
        raise DataError(f"data source '{source}': no training examples")
    train_ex, valid = split_by_database(list(splits.train), cfg.data.validation_fraction, cfg.data.seed)
    # --- vantage-data (data issue): augment training examples only (off by default) ---
    if cfg.data.augmentation_prob > 0 or cfg.data.schema_perturbation_prob > 0:
        from .augment import augment_examples
        train_ex, splits.schemas = augment_examples(train_ex, splits.schemas, cfg.data, random.Random(cfg.data.seed))
    # --- end vantage-data ---
    if final_split == "dev":
        if not splits.dev:
            raise DataError(f"data source '{source}': has no dev split")
        valid = list(splits.dev)
    schema_text = _schema_texts(splits, cfg, {e.db_id for e in train_ex + valid})
    vocab = cfg.data.tokenizer_vocab_size or cfg.model.vocab_size
    if tokenizer is None:
        texts = [schema_text[e.db_id] + " " + e.question + " " + e.query for e in train_ex]
        texts += list({schema_text[e.db_id] for e in valid})  # schemas only: no validation answers
        tokenizer = _tokenizer_for(texts, vocab, cache_root())
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise DataError(f"tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
                        f"{cfg.model.vocab_size}")
    L = cfg.training.max_seq_length
    skipped = {"too_long": 0}

    def encode_all(examples):
        encoded, kept = [], []
        for e in examples:
            enc = encode_example(tokenizer, schema_text[e.db_id], e.question, _norm_sql(e.query), L, e.evidence)
            if enc is None:
                skipped["too_long"] += 1
                continue
            encoded.append(Encoded(*enc))
            kept.append(e)
        return encoded, kept

    train, kept_train = encode_all(train_ex)
    valid_enc, kept_valid = encode_all(valid)
    if not train:
        raise DataError(f"data source '{source}': every example is longer than "
                        f"training.max_seq_length={L}")
    # A fixed, seeded slice of validation for the periodic decode (same across trials).
    order = list(range(len(kept_valid)))
    random.Random(1234).shuffle(order)
    order = sorted(order[: cfg.data.max_eval_examples])
    eval_ex = [kept_valid[i] for i in order]
    eval_prompts = [valid_enc[i].ids[: valid_enc[i].sql_start] for i in order]
    return PreparedData(source, tokenizer, train, kept_train, kept_valid, valid_enc, eval_ex,
                        eval_prompts, splits.schemas, splits, skipped)


def _norm_sql(sql: str) -> str:
    return " ".join(sql.split())
