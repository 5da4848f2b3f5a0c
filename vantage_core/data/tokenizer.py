"""Byte-level BPE tokenizer (HF `tokenizers`) trained on the training text, with special
tokens for the prompt parts. Saved as tokenizer.json, loadable by `transformers`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import DataError

PAD, SCHEMA, QUESTION, SQL, END = "<|pad|>", "<|schema|>", "<|question|>", "<|sql|>", "<|end|>"
EVIDENCE = "<|evidence|>"
SPECIAL_TOKENS = [PAD, SCHEMA, QUESTION, SQL, END, EVIDENCE]


def _read(path: str | Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise DataError(f"{path}: cannot load tokenizer ({e})") from None


class SQLTokenizer:
    def __init__(self, tok: Tokenizer):
        self.tok = tok
        ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise DataError(f"tokenizer lacks special tokens {missing}")
        self.pad_id, self.schema_id, self.question_id = ids[PAD], ids[SCHEMA], ids[QUESTION]
        self.sql_id, self.end_id, self.evidence_id = ids[SQL], ids[END], ids[EVIDENCE]

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "SQLTokenizer":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(".tmp")
        self.tok.save(str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "SQLTokenizer":
        return cls(_read(path))

    @classmethod
    def load_for_model(cls, path: str | Path, vocab_size: int) -> "SQLTokenizer":
        """The tokenizer of an existing model (model.init_from). A foreign tokenizer gets
        Vantage's prompt tokens added, which must still fit the model's embedding rows."""
        tok = _read(path)
        missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
        if missing:
            tok.add_special_tokens(missing)
            top = max(tok.token_to_id(t) for t in SPECIAL_TOKENS)
            if top >= vocab_size:
                raise DataError(f"{path}: adding Vantage's prompt tokens {missing} needs token id {top}, "
                                f"beyond the model's vocab_size {vocab_size}")
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def fingerprint(self) -> str:
        import hashlib
        return hashlib.sha256(self.tok.to_str().encode()).hexdigest()[:16]


def build_prompt(schema_text: str, question: str, evidence: str = "") -> str:
    ev = f" {EVIDENCE} {evidence}" if evidence else ""
    return f"{SCHEMA} {schema_text} {QUESTION} {question}{ev} {SQL} "


def encode_example(tok: SQLTokenizer, schema_text: str, question: str, sql: str | None,
                   max_len: int, evidence: str = "") -> tuple[list[int], int] | None:
    """Token ids of prompt (+ sql + END) and the index where the SQL starts.

    When too long, the schema is trimmed from the end first; returns None if even the
    question and SQL alone do not fit.
    """
    q = tok.encode(f" {QUESTION} {question}" + (f" {EVIDENCE} {evidence}" if evidence else "") + f" {SQL} ")
    s = tok.encode(schema_text)
    target = tok.encode(sql) + [tok.end_id] if sql is not None else []
    budget = max_len - len(q) - len(target) - 1
    if budget < 8:
        return None
    ids = [tok.schema_id] + s[:budget] + q
    return ids + target, len(ids)
