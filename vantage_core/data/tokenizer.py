"""Byte-level BPE tokenizer (HF `tokenizers`) trained on the training text, with special
tokens for the prompt parts. Saved as tokenizer.json, loadable by `transformers`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import CheckpointError, DataError
from ..fileio import atomic_path, atomic_write
from ..sources import find_checkpoint, is_dense_source, is_hf_folder, tokenizer_parts

PAD, SCHEMA, QUESTION, SQL, END = "<|pad|>", "<|schema|>", "<|question|>", "<|sql|>", "<|end|>"
EVIDENCE = "<|evidence|>"
SPECIAL_TOKENS = [PAD, SCHEMA, QUESTION, SQL, END, EVIDENCE]


def _read(path: str | Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise DataError(f"{path}: cannot load tokenizer ({e})") from None


class SQLTokenizer:
    """Vantage's prompt format (``<|schema|> ... <|question|> ... <|sql|> SQL <|end|>``) or, with a
    `chat_template` (a pretrained source's tokenizer), the source's chat format: the schema and
    question as the user message, the SQL as the assistant's reply, ended by its `eos` token."""

    def __init__(self, tok: Tokenizer, chat_template: str | None = None, eos: str | None = None,
                 pad: str | None = None):
        self.tok = tok
        self.chat_template = chat_template
        if chat_template is not None:
            ids = {"eos": tok.token_to_id(eos) if eos else None, "pad": tok.token_to_id(pad) if pad else None}
            missing = [f"{k} token {v!r}" for k, v in (("eos", eos), ("pad", pad)) if ids[k] is None]
            if missing:
                raise DataError(f"tokenizer lacks its {', '.join(missing)}")
            self.eos_token, self.pad_token = eos, pad
            self.end_id, self.pad_id = ids["eos"], ids["pad"]
            self._render = _compile_template(chat_template)
            return
        ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise DataError(f"tokenizer lacks special tokens {missing}")
        self.eos_token, self.pad_token = END, PAD
        self.pad_id, self.schema_id, self.question_id = ids[PAD], ids[SCHEMA], ids[QUESTION]
        self.sql_id, self.end_id, self.evidence_id = ids[SQL], ids[END], ids[EVIDENCE]

    @property
    def is_chat(self) -> bool:
        return self.chat_template is not None

    @classmethod
    def from_pretrained(cls, spec) -> "SQLTokenizer":
        """The tokenizer and chat template of a dense pretrained source (GGUF, HF Llama, alias)."""
        tok, template, eos, pad = tokenizer_parts(spec)
        if template is None:
            raise DataError(f"{spec}: the source has no chat template; Vantage prompts a pretrained model "
                            f"through its chat format")
        return cls(tok, template, eos, pad)

    def chat_prompt(self, user: str) -> str:
        return self._render(messages=[{"role": "user", "content": user}], add_generation_prompt=True)

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
        """tokenizer.json, plus tokenizer_config.json (HF style: chat template, eos, pad) in chat
        mode, so checkpoints and exports carry the source's chat format."""
        path = Path(path)
        with atomic_path(path) as tmp:
            self.tok.save(str(tmp))
        if self.is_chat:
            atomic_write(path.parent / "tokenizer_config.json", json.dumps(self.hf_config(), indent=1),
                         what="tokenizer config")

    def hf_config(self, model_max_length: int | None = None) -> dict:
        c = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": self.eos_token,
             "pad_token": self.pad_token, "bos_token": None, "unk_token": None,
             "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}
        if self.is_chat:
            c["chat_template"] = self.chat_template
        if model_max_length:
            c["model_max_length"] = model_max_length
        return c

    @classmethod
    def load(cls, path: str | Path) -> "SQLTokenizer":
        """tokenizer.json (and, beside it, the tokenizer_config.json of a chat tokenizer)."""
        path = Path(path)
        side = path.parent / "tokenizer_config.json"
        if side.is_file():
            try:
                c = json.loads(side.read_text())
            except (OSError, ValueError) as e:
                raise DataError(f"{side}: unreadable ({e})") from None
            if c.get("chat_template") and not is_vantage_template(c["chat_template"]):
                return cls(_read(path), c["chat_template"], _tok_name(c.get("eos_token")),
                           _tok_name(c.get("pad_token")) or _tok_name(c.get("eos_token")))
        return cls(_read(path))

    @classmethod
    def load_for_model(cls, path: str | Path, vocab_size: int) -> "SQLTokenizer":
        """The tokenizer of an existing model (model.init_from). A foreign tokenizer gets
        Vantage's prompt tokens added, which must still fit the model's embedding rows."""
        if (Path(path).parent / "tokenizer_config.json").is_file():
            t = cls.load(path)
            if t.is_chat:
                return t
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

    def decode_sql(self, ids: list[int]) -> str:
        """The SQL of generated ids: in chat mode, a reply's first ```sql block (or its text up
        to the first blank line or ';'), as a chat model answers zero-shot."""
        text = self.decode(ids).strip()
        return extract_sql(text) if self.is_chat else text

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.tok.to_str().encode())
        if self.is_chat:
            h.update(f"\0{self.chat_template}\0{self.eos_token}\0{self.pad_token}".encode())
        return h.hexdigest()[:16]

    def encode_example(self, schema_text: str, question: str, sql: str | None, max_len: int,
                       evidence: str = "") -> tuple[list[int], int] | None:
        return encode_example(self, schema_text, question, sql, max_len, evidence)


class MemoTokenizer:
    """Delegates to an SQLTokenizer, remembering the ids of long texts (schemas repeat)."""

    def __init__(self, tok: SQLTokenizer):
        self._tok = tok
        self._memo: dict[str, list[int]] = {}

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def encode(self, text: str) -> list[int]:
        if len(text) < 200:
            return self._tok.encode(text)
        ids = self._memo.get(text)
        if ids is None:
            ids = self._memo[text] = self._tok.encode(text)
        return ids


def init_tokenizer(path: str | Path, vocab_size: int) -> SQLTokenizer:
    """The token ids the weights of `model.init_from` were trained with."""
    if is_dense_source(path):
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


def extract_sql(text: str) -> str:
    m = re.search(r"```(?:sql|sqlite)?\s*(.*?)(?:```|$)", text, flags=re.S | re.I)
    if m:
        text = m.group(1)
    text = text.strip().split("\n\n", 1)[0]
    if ";" in text:
        text = text.split(";", 1)[0]
    return " ".join(text.split())


def _tok_name(v):
    return v.get("content") if isinstance(v, dict) else v


def _compile_template(template: str):
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # only chat (pretrained) tokenizers
    except ModuleNotFoundError:
        raise DataError("chat templates need jinja2 (pip install jinja2)") from None
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        return env.from_string(template).render
    except Exception as e:  # noqa: BLE001 - jinja2 TemplateSyntaxError
        raise DataError(f"chat template does not compile ({e})") from None


def chat_user_message(schema_text: str, question: str, evidence: str = "") -> str:
    """The user turn of a chat-format prompt: the schema (one line per table), then the question."""
    ev = f"\nEvidence: {evidence}" if evidence else ""
    return f"Database schema:\n{schema_text}\nQuestion: {question}{ev}"


# Vantage's own prompt format as a Hugging Face chat template, written into an exported
# from-scratch model's tokenizer_config.json so `apply_chat_template` (mlx_lm.generate,
# transformers) builds the prompt the model was trained on. The user message is Vantage's chat
# user turn (`chat_user_message`: "Database schema:\n<schema>\nQuestion: <question>", optionally
# "\nEvidence: <evidence>"), or an already formatted "<|schema|> ... <|question|> ..." prompt; the
# generation prompt is " <|sql|> " and an assistant turn ends with <|end|>. The rendered prompt
# encodes to the same ids as `encode_example` (tests/test_export_chat_template.py). The marker
# comment tells `SQLTokenizer.load` that this is the plain Vantage format, not a chat tokenizer.
VANTAGE_TEMPLATE_MARK = "vantage-prompt-format"
VANTAGE_CHAT_TEMPLATE = (
    "{#- " + VANTAGE_TEMPLATE_MARK + ": <|schema|>SCHEMA <|question|> QUESTION[ <|evidence|> EVIDENCE] "
    "<|sql|> SQL<|end|> -#}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- set c = message['content'] -%}"
    "{%- if '<|question|>' in c -%}{{ c }}"
    "{%- else -%}"
    "{%- if c.startswith('Database schema:\\n') -%}{%- set c = c[17:] -%}{%- endif -%}"
    "{%- set parts = c.rsplit('\\nQuestion: ', 1) -%}"
    "{%- if parts | length == 2 -%}{%- set schema = parts[0] -%}{%- set question = parts[1] -%}"
    "{%- else -%}{%- set schema = '' -%}{%- set question = c -%}{%- endif -%}"
    "{%- set ev = question.split('\\nEvidence: ', 1) -%}"
    "{{ '<|schema|>' + schema + ' <|question|> ' + ev[0] }}"
    "{%- if ev | length == 2 -%}{{ ' <|evidence|> ' + ev[1] }}{%- endif -%}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' <|sql|> ' + message['content'] + '<|end|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ ' <|sql|> ' }}{%- endif -%}"
)


def is_vantage_template(template: str | None) -> bool:
    """Whether a tokenizer_config's chat template is Vantage's own prompt format (an exported
    from-scratch model), which loads back as the plain (non-chat) Vantage tokenizer."""
    return bool(template) and VANTAGE_TEMPLATE_MARK in template


def build_prompt(schema_text: str, question: str, evidence: str = "") -> str:
    ev = f" {EVIDENCE} {evidence}" if evidence else ""
    return f"{SCHEMA} {schema_text} {QUESTION} {question}{ev} {SQL} "


def encode_example(tok: SQLTokenizer, schema_text: str, question: str, sql: str | None,
                   max_len: int, evidence: str = "") -> tuple[list[int], int] | None:
    """Token ids of prompt (+ sql + END) and the index where the SQL starts.

    When too long, the schema is trimmed from the end first; returns None if even the
    question and SQL alone do not fit.
    """
    if tok.is_chat:
        return _encode_chat(tok, schema_text, question, sql, max_len, evidence)
    q = tok.encode(f" {QUESTION} {question}" + (f" {EVIDENCE} {evidence}" if evidence else "") + f" {SQL} ")
    s = tok.encode(schema_text)
    target = tok.encode(sql) + [tok.end_id] if sql is not None else []
    budget = max_len - len(q) - len(target) - 1
    if budget < 8:
        return None
    ids = [tok.schema_id] + s[:budget] + q
    return ids + target, len(ids)


def _encode_chat(tok: SQLTokenizer, schema_text: str, question: str, sql: str | None, max_len: int,
                 evidence: str = ""):
    # Trim schema lines from the end until prompt + SQL + eos fit.
    target = tok.encode(sql) + [tok.end_id] if sql is not None else []
    lines = schema_text.split("\n")
    while True:
        ids = tok.encode(tok.chat_prompt(chat_user_message("\n".join(lines), question, evidence)))
        if len(ids) + len(target) <= max_len:
            return ids + target, len(ids)
        if len(lines) <= 1:
            return None
        lines = lines[:-1]
