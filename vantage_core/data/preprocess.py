"""Preprocess downloaded datasets into a processed folder the trainer reads.

    preprocess(cfg, "./data", "./processed_data", num_workers=2)

Input: ``data_dir`` holding ``spider/``, ``bird/``, ``wikisql/``, ``gretel/`` (and/or
``synthetic/``) in their official layouts, or one Spider-layout folder itself.

Steps:
1. SQL normalization with sqlglot (`sqlnorm.normalize_sql`; the original text is kept) and a
   compile check against the schema (SQLite EXPLAIN on the real or a schema-only database);
2. schema extraction and serialization (tables, columns, types, keys; sample values read from
   the database when ``data.include_sample_values`` and a file exists), fitted to a token
   budget of ``training.max_seq_length`` (sample values are dropped first, then the tail);
3. a byte-level BPE tokenizer with the special tokens, and token ids per example;
4. a seeded train/validation split carved from the training data (by database by default,
   so no database is on both sides); the dev set is kept whole for final evaluation;
5. a cache stamp: the output records a key over the input files and every setting that
   changes it; an unchanged re-run returns at once, a changed one rebuilds.

Steps 1 and 3 run on a process pool of ``num_workers``. Corrupt input (unreadable JSON, a
missing database, SQL that does not parse, a missing field) is skipped and counted with file
and example id in ``summary.json`` / ``skipped.jsonl`` and a printed table.

Output: ``train.jsonl``, ``validation.jsonl``, ``dev.jsonl`` (text fields + ``input_ids`` +
``sql_start``), ``tokenizer.json``, ``schemas.json``, ``skipped.jsonl``, ``summary.json``
and ``database/<db>/<db>.sqlite`` links to the real database files. `prepare.load_processed`
turns the folder into the trainer's `PreparedData` (augmentation and mixing are applied there).
Loading, the split, schema texts and the tokenizer are prepare.py's steps, the ones
`prepare_data` runs in a sweep.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from ..config import Config
from ..errors import DataError
from ..fileio import atomic_write
from ..sql.execution import run_sql, schema_db
from ..sql.parse import try_normalize
from .cache import cache_key, iter_input_files, read_stamp
from .example import Example
from .mix import mix_examples, proportions_table, weights_from_config
from .prepare import carve_validation, load_source, schema_texts, train_tokenizer
from .readers import DatasetSplits
from .schema import Schema, serialize_schema
from .tokenizer import MemoTokenizer, SQLTokenizer, build_prompt, encode_example, init_tokenizer

log = logging.getLogger(__name__)

VERSION = "1"
SOURCES = ("spider", "bird", "wikisql", "gretel", "synthetic")
OUTPUT_FILES = ("train.jsonl", "validation.jsonl", "dev.jsonl", "tokenizer.json", "schemas.json",
                "skipped.jsonl", "summary.json")
SCHEMA_BUDGET = 0.75  # share of max_seq_length a serialized schema may take


# ------------------------------------------------------------------------------------------
# sources
# ------------------------------------------------------------------------------------------
def discover_sources(data_dir: Path, only: Iterable[str] | None = None) -> dict[str, Path]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found")
    if (data_dir / "tables.json").is_file():
        found = {"spider": data_dir}
    else:
        found = {s: data_dir / s for s in SOURCES if (data_dir / s).is_dir()}
    if only:
        only = list(only)
        bad = [s for s in only if s not in SOURCES]
        if bad:
            raise DataError(f"unknown dataset(s) {', '.join(bad)} (choose from {', '.join(SOURCES)})")
        found = {s: p for s, p in found.items() if s in only}
    if not found:
        raise DataError(f"{data_dir}: no dataset folders ({', '.join(SOURCES)}) found; run "
                        "`vantage-data download` or `vantage-data import NAME PATH` first")
    return found


# ------------------------------------------------------------------------------------------
# process-pool work (module level so it pickles; state arrives through the initializer)
# ------------------------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _STATE.clear()
    _STATE.update(state)
    if "tokenizer_json" in state:
        _STATE["tok"] = SQLTokenizer(Tokenizer.from_str(state["tokenizer_json"]))


def _normalize_chunk(items: list[tuple[str, str | None, str]]) -> list[tuple[str | None, str | None]]:
    """[(sql, db_path, db_id)] -> [(normalized, reason)] with a compile check."""
    schemas: dict[str, Schema] = _STATE.get("schemas", {})
    out = []
    for sql, db_path, db_id in items:
        norm, reason = try_normalize(sql)
        if norm is not None and _STATE.get("check_compile", True):
            schema = schemas.get(db_id)
            target = db_path if db_path and Path(db_path).is_file() else (
                schema_db(schema) if schema is not None else None)
            if target is not None:  # SQLite EXPLAIN: compiles against the tables, runs nothing
                r = run_sql(target, norm, explain_only=True, timeout_s=2.0, max_rows=10**9)
                if not r.ok and not run_sql(target, sql, explain_only=True, timeout_s=2.0, max_rows=10**9).ok:
                    norm, reason = None, f"sql does not compile against its schema: {(r.error or '')[:120]}"
        out.append((norm, reason))
    return out


def _encode_chunk(items: list[tuple[str, str, str | None, str]]) -> list[tuple[list[int], int] | None]:
    """[(schema_text, question, sql, evidence)] -> [(ids, sql_start) | None]."""
    tok = _STATE.get("ctok")
    if tok is None:
        tok = _STATE["ctok"] = MemoTokenizer(_STATE["tok"])
    L = _STATE["max_len"]
    return [encode_example(tok, s, q, sql, L, ev) for s, q, sql, ev in items]


def _chunks(seq: list, n: int) -> list[list]:
    return [seq[i:i + n] for i in range(0, len(seq), n)]


def run_pool(fn: Callable, items: list, state: dict[str, Any], num_workers: int, chunk: int = 256,
             progress: str | None = None) -> list:
    """Map `fn` over chunks of `items` on `num_workers` processes (in-process for 1)."""
    if num_workers > 1:  # enough chunks to keep every worker busy
        chunk = max(8, min(chunk, -(-len(items) // (num_workers * 4))))
    chunks = _chunks(items, chunk)
    bar = None
    if progress and sys.stderr.isatty():
        bar = tqdm(total=len(items), desc=progress, unit="ex", leave=False)
    out: list = []
    if num_workers <= 1 or len(chunks) <= 1:
        saved = dict(_STATE)
        _init_worker(state)
        try:
            for c in chunks:
                out.extend(fn(c))
                if bar is not None:
                    bar.update(len(c))
        finally:
            _STATE.clear()
            _STATE.update(saved)
    else:
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        ctx = mp.get_context(method)
        prev = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"  # inherited by forked workers
        try:
            with ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(state,)) as pool:
                for res in pool.map(fn, chunks):
                    out.extend(res)
                    if bar is not None:
                        bar.update(len(res))
        finally:
            if prev is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = prev
    if bar is not None:
        bar.close()
    return out


# ------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------
@dataclass
class PreprocessResult:
    output_dir: Path
    cached: bool
    summary: dict[str, Any]
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)
    elapsed_s: float = 0.0


def cache_params(cfg: Config, sources: dict[str, Path], split_by: str, check_compile: bool) -> dict[str, Any]:
    d = cfg.data
    return {
        "version": VERSION, "sources": sorted(sources), "split_by": split_by, "check_compile": check_compile,
        "validation_fraction": d.validation_fraction, "seed": d.seed,
        "include_sample_values": d.include_sample_values,
        "vocab_size": d.tokenizer_vocab_size or cfg.model.vocab_size,
        "max_seq_length": cfg.training.max_seq_length,
    }


def _split_where(where: str) -> tuple[str, str]:
    if "#" in where:
        f, i = where.rsplit("#", 1)
        return f, i
    return where, ""


def preprocess(cfg: Config, data_dir: str | Path, output_dir: str | Path, *, num_workers: int | None = None,
               datasets: Iterable[str] | None = None, split_by: str = "database", force: bool = False,
               check_compile: bool = True, echo: Callable[[str], None] | None = None) -> PreprocessResult:
    t0 = time.perf_counter()
    echo = echo or (lambda s: None)
    data_dir, out = Path(data_dir), Path(output_dir)
    workers = max(1, int(num_workers or cfg.data.num_workers))
    sources = discover_sources(data_dir, datasets)
    params = cache_params(cfg, sources, split_by, check_compile)
    inputs = [f for root in sources.values() for f in iter_input_files(root)]
    key = cache_key(inputs, params, root=data_dir)
    if not force and read_stamp(out / "summary.json") == key and all((out / f).is_file() for f in OUTPUT_FILES):
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        skipped = pd.DataFrame(summary.get("skipped_by_reason", []))
        return PreprocessResult(out, True, summary, skipped, time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)  # an interrupted rebuild is never "cached"
    timings: dict[str, float] = {}

    # load ---------------------------------------------------------------------------------
    t = time.perf_counter()
    skipped: list[dict[str, str]] = []
    loaded: dict[str, DatasetSplits] = {}
    for name, root in sources.items():
        try:
            sp = load_source(name, root)
        except DataError as e:  # the whole source is unusable (no layout): count it, go on
            skipped.append({"source": name, "file": str(root), "example": "", "reason": f"source skipped: {e}"})
            continue
        loaded[name] = sp
        for where, reason in sp.skipped:
            f, i = _split_where(where)
            skipped.append({"source": name, "file": f, "example": i, "reason": reason})
    if not loaded:
        raise DataError(f"{data_dir}: no dataset could be loaded ({skipped[0]['reason'] if skipped else ''})")
    timings["load_s"] = time.perf_counter() - t
    schemas: dict[str, Schema] = {}
    db_paths: dict[str, str] = {}
    all_ex: list[Example] = []
    for name, sp in loaded.items():
        for db, s in sp.schemas.items():
            schemas.setdefault(db, s)
            p = sp.db_path(db)
            if p is not None:
                db_paths.setdefault(db, str(p))
        all_ex += sp.train + sp.dev

    # 1. normalize -------------------------------------------------------------------------
    t = time.perf_counter()
    norm = run_pool(_normalize_chunk, [(e.query, e.db_path, e.db_id) for e in all_ex],
                    {"schemas": schemas, "check_compile": check_compile}, workers, progress="normalize")
    kept: list[Example] = []
    normalized: dict[str, str] = {}
    for e, (n, reason) in zip(all_ex, norm):
        if n is None:
            skipped.append({"source": e.source, "file": _file_of_id(e.id), "example": e.id, "reason": reason or "?"})
            continue
        normalized[e.id] = n
        kept.append(e)
    timings["normalize_s"] = time.perf_counter() - t

    # 4. split -----------------------------------------------------------------------------
    train, valid, dev = [], [], []
    for name in loaded:
        tr = [e for e in kept if e.source == name and e.split == "train"]
        a, b = carve_validation(tr, cfg.data.validation_fraction, cfg.data.seed, split_by) if tr else ([], [])
        train += a
        valid += b
        dev += [e for e in kept if e.source == name and e.split == "dev"]

    # 2. schemas ---------------------------------------------------------------------------
    t = time.perf_counter()
    used = {e.db_id for e in train + valid + dev}
    full_text, values = schema_texts(schemas, db_paths.get, used, cfg, skipped)
    timings["schema_s"] = time.perf_counter() - t

    # 3. tokenizer + encode ----------------------------------------------------------------
    t = time.perf_counter()
    vocab = cfg.data.tokenizer_vocab_size or cfg.model.vocab_size
    texts = [full_text[e.db_id] + " " + e.question + " " + (e.evidence + " " if e.evidence else "")
             + normalized[e.id] for e in train]
    texts += sorted({full_text[e.db_id] for e in valid + dev})  # schemas only: no held-out answers
    if cfg.model.init_from:   # the token ids (and chat format) the weights were trained with
        tok = init_tokenizer(cfg.model.init_from, cfg.model.vocab_size)
    else:
        tok = train_tokenizer(texts, vocab)
    timings["tokenizer_s"] = time.perf_counter() - t
    L = cfg.training.max_seq_length
    budget = int(L * SCHEMA_BUDGET)
    schema_text, trimmed = {}, 0
    for db in sorted(used):
        s = full_text[db]
        if len(tok.encode(s)) > budget:
            trimmed += 1
            if db in values:
                s = serialize_schema(schemas[db], style=cfg.data.schema_format)
            ids = tok.encode(s)
            if len(ids) > budget:
                s = tok.decode(ids[:budget]).rsplit(",", 1)[0]
        schema_text[db] = s
    t = time.perf_counter()
    items = [(schema_text[e.db_id], e.question, normalized[e.id], e.evidence) for e in train + valid + dev]
    enc = run_pool(_encode_chunk, items, {"tokenizer_json": tok.tok.to_str(), "max_len": L}, workers,
                   chunk=512, progress="encode")
    timings["encode_s"] = time.perf_counter() - t
    rows: dict[str, list[dict]] = {"train": [], "validation": [], "dev": []}
    for e, en in zip(train + valid + dev, enc):
        if en is None:
            skipped.append({"source": e.source, "file": _file_of_id(e.id), "example": e.id,
                            "reason": f"too long for max_seq_length={L}"})
            continue
        ids, start = en
        d = e.to_dict()
        d.update(query_normalized=normalized[e.id],
                 prompt=build_prompt(schema_text[e.db_id], e.question, e.evidence),
                 input_ids=ids, sql_start=start)
        rows[e.split].append(d)

    # write --------------------------------------------------------------------------------
    t = time.perf_counter()
    for split, rs in rows.items():
        _write_jsonl(out / f"{split}.jsonl", rs)
    tok.save(out / "tokenizer.json")
    _write_json(out / "schemas.json", {db: {"schema": schemas[db].to_dict(), "db_path": db_paths.get(db),
                                            "schema_text": schema_text[db], "sample_values": db in values}
                                       for db in sorted(used)})
    _write_jsonl(out / "skipped.jsonl", skipped)
    _link_databases(out, {db: db_paths[db] for db in used if db in db_paths})
    timings["write_s"] = time.perf_counter() - t

    # summary ------------------------------------------------------------------------------
    sk = pd.DataFrame(skipped, columns=["source", "file", "example", "reason"])
    by_reason = (sk.assign(reason=sk["reason"].str.replace(r"\(.*", "", regex=True).str.strip())
                 .groupby(["source", "file", "reason"]).size().reset_index(name="count")
                 .sort_values("count", ascending=False)) if len(sk) else pd.DataFrame(
                     columns=["source", "file", "reason", "count"])
    accounting = _accounting(loaded, rows, skipped)
    counts = {split: len(rs) for split, rs in rows.items()}
    per_source = {s: {split: sum(1 for r in rs if r["source"] == s) for split, rs in rows.items()} for s in loaded}
    by_src = {s: [r["id"] for r in rows["train"] if r["source"] == s] for s in loaded}
    w = weights_from_config(cfg.data, [s for s, v in by_src.items() if v])
    mixed = mix_examples({s: [s] * len(v) for s, v in by_src.items()}, w, seed=cfg.data.seed)
    mix_table = proportions_table({s: len(v) for s, v in by_src.items()}, mixed, w)
    summary = {
        "cache_key": key, "version": VERSION, "created": time.time(), "data_dir": str(data_dir.resolve()),
        "params": params, "num_workers": workers, "counts": counts, "per_source": per_source,
        "accounting": accounting, "skipped_total": len(skipped),
        "skipped_by_reason": by_reason.to_dict("records"),
        "databases": {"used": len(used), "with_sample_values": sorted(values),
                      "with_file": sorted(db for db in used if db in db_paths),
                      "schema_only": len(used) - len(values), "schema_trimmed": trimmed},
        "validation_databases": sorted({e.db_id for e in valid}),
        "train_databases": len({e.db_id for e in train}),
        "tokenizer": {"vocab_size": tok.vocab_size, "fingerprint": tok.fingerprint()},
        "max_seq_length": L, "mix": mix_table.to_dict("records"), "timings": timings,
        "examples_total": len(all_ex),
    }
    summary["elapsed_s"] = time.perf_counter() - t0
    _write_json(out / "summary.json", summary)
    return PreprocessResult(out, False, summary, by_reason, summary["elapsed_s"])


def _file_of_id(ex_id: str) -> str:
    parts = ex_id.split("#")[0].split("/")
    return "/".join(parts[:-1]) if len(parts) > 2 else parts[0]


def _accounting(loaded: dict[str, DatasetSplits], rows: dict[str, list[dict]], skipped: list[dict]) -> list[dict]:
    """Per source file: records read, kept (by split) and skipped."""
    table: dict[tuple[str, str], dict[str, int]] = {}

    def slot(src, f):
        return table.setdefault((src, f), {"train": 0, "validation": 0, "dev": 0, "skipped": 0})

    for split, rs in rows.items():
        for r in rs:
            slot(r["source"], _file_of_id(r["id"]))[split] += 1
    for s in skipped:
        f = s["file"]
        if s["example"] and not str(s["example"]).isdigit():
            f = s["example"].rsplit("/", 1)[0]
        elif f.endswith((".json", ".jsonl", ".parquet")):
            f = f"{s['source']}/{Path(f).stem}"
        slot(s["source"], f)["skipped"] += 1
    out = []
    for (src, f), c in sorted(table.items()):
        out.append({"source": src, "file": f, **c, "total": sum(c.values())})
    return out


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str), what="processed data")


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows),
                 what="processed data")


def _link_databases(out: Path, paths: dict[str, str]) -> None:
    """``out/database/<db>/<db>.sqlite`` -> the real file (where the evaluator looks)."""
    root = out / "database"
    for db, p in paths.items():
        if Path(p).name != f"{db}.sqlite":
            continue  # shared files (WikiSQL) are reached through schemas.json db_path
        d = root / db
        d.mkdir(parents=True, exist_ok=True)
        link = d / f"{db}.sqlite"
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(Path(p).resolve())
        except OSError:
            pass


def print_summary(res: PreprocessResult, echo: Callable[[str], None] = print) -> None:
    s = res.summary
    state = "cached (inputs and settings unchanged)" if res.cached else "built"
    echo(f"{res.output_dir}: {state} in {res.elapsed_s:.2f}s")
    echo(f"examples: train {s['counts']['train']}, validation {s['counts']['validation']}, "
         f"dev {s['counts']['dev']}; skipped {s['skipped_total']}")
    echo(f"databases: {s['databases']['used']} used, {len(s['databases']['with_sample_values'])} with sample "
         f"values, {s['databases']['schema_only']} schema only, {s['databases']['schema_trimmed']} trimmed")
    acc = pd.DataFrame(s["accounting"])
    if len(acc):
        echo("\nper file:\n" + acc.to_string(index=False))
    sk = pd.DataFrame(s["skipped_by_reason"])
    if len(sk):
        echo("\nskipped (details in skipped.jsonl):\n" + sk.to_string(index=False, max_colwidth=70))
    mix = pd.DataFrame(s.get("mix", []))
    if len(mix):
        echo("\ntraining mix (data.*_weight):\n" + mix.to_string(index=False))
